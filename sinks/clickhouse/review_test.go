package clickhouse_test

import (
	"context"
	"testing"
	"time"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/dossier"
	qch "github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
)

// The review queue lists a waiting escalation with its check-in's end; a
// disposition takes it off the queue, a later one supersedes it in the
// outcomes, both stay, one stored twice counts once under FINAL, and one
// for an event qfence does not know is stored all the same.
func TestDispositionsQueueAndOutcomes(t *testing.T) {
	ctx := context.Background()
	cfg := chtest.DB(t, chtest.Addr)
	cfg.RetentionDays = 3650
	breachOf500(t, cfg)
	sink := chtest.OpenSink(t, cfg, "")
	r, err := qch.NewReader(ctx, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	q, err := r.Queue(ctx, dossier.QueueFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Items) != 1 || q.Total != 1 || len(q.Counts) != 1 || q.Items[0].Type != "breach_escalated" {
		t.Fatalf("queue %+v", q)
	}
	it := q.Items[0]
	if it.Checkin != "failed" || it.OutsidePings < 2 || it.NetworkPings != 0 || it.DistanceM < 700 {
		t.Errorf("waiting item %+v", it)
	}
	if known, err := r.EventKnown(ctx, it.EventID); err != nil || !known {
		t.Errorf("the escalation is not known: %v", err)
	}
	at := time.Date(2026, 4, 2, 11, 0, 0, 0, time.UTC).UnixMilli()
	first := processor.Disposition{DispositionID: "D-1", EventID: it.EventID, Decision: "confirmed", Reason: "confirmed_absence", DecidedBy: "judge-2", DecidedAt: at, Channel: "review"}
	second := processor.Disposition{DispositionID: "D-2", EventID: it.EventID, Decision: "dismissed", Reason: "false_location", Comment: "Wi-Fi",
		DecidedBy: "judge-3", DecidedAt: at + 1, Channel: "review"}
	stranger := processor.Disposition{DispositionID: "D-3", EventID: "0123456789abcdef0123456789abcdef", Decision: "contested", Reason: "medical",
		DecidedBy: "app", DecidedAt: at, Channel: "patient"}
	for _, batch := range [][]processor.Disposition{{first}, {second, stranger}, {second}} {
		if err := sink.StoreDispositions(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	conn := chtest.Conn(t, cfg.Addr)
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".dispositions FINAL"); n != 3 {
		t.Errorf("%d dispositions under FINAL, want 3", n)
	}
	q, err = r.Queue(ctx, dossier.QueueFilter{})
	if err != nil || len(q.Items) != 0 || q.Total != 0 {
		t.Errorf("the decided escalation still waits: %+v, %v", q, err)
	}
	ds, err := r.Dispositions(ctx, it.EventID)
	if err != nil || len(ds) != 2 || ds[0].ID != "D-1" || ds[1].ID != "D-2" || ds[1].Comment != "Wi-Fi" || ds[1].DecidedAt != at+1 {
		t.Errorf("dispositions %+v, %v", ds, err)
	}
	out, err := r.Outcomes(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var esc *qch.Outcome
	for i := range out {
		if out[i].Type == "breach_escalated" {
			esc = &out[i]
		}
	}
	if esc == nil || esc.Events != 1 || esc.Dismissed["false_location"] != 1 || esc.Confirmed != 0 || esc.Waiting != 0 || esc.DismissalRate != 1 {
		t.Errorf("outcomes %+v", out)
	}
}
