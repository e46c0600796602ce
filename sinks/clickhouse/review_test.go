package clickhouse_test

import (
	"context"
	"fmt"
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

// BenchmarkReviewQueue reads and renders the review queue with 10,000
// escalations waiting in ClickHouse (each with a check-in asked and
// missed): the first page of 200 and every one of them (the goal: 300 ms).
//
//	go test -run '^$' -bench ReviewQueue -benchtime 20x ./sinks/clickhouse/
func BenchmarkReviewQueue(b *testing.B) {
	ctx := context.Background()
	cfg := chtest.DB(b, chtest.Addr)
	cfg.RetentionDays = 3650
	sink := chtest.OpenSink(b, cfg, "")
	const waiting = 10_000
	var events []processor.Event
	for i := range waiting {
		start := dataStart.Add(time.Duration(i) * time.Second).UnixMilli()
		patient := fmt.Sprintf("p-%06d", i)
		mk := func(typ processor.EventType, at int64) processor.Event {
			e := processor.Event{Type: typ, PatientID: patient, At: at, StartedAt: start, District: fmt.Sprintf("district-%03d", i%40),
				Location: processor.Evidence{Distance: 900}, MaxDistance: 950}
			return e
		}
		esc := mk(processor.BreachEscalated, start+20*60_000)
		esc.Confidence = &processor.Confidence{OutsidePings: 12, NetworkPings: int32(i % 13), MinMarginM: 300, DwellS: 1200}
		ask := mk(processor.CheckinRequested, start+5*60_000)
		ask.RequestID = ask.ID()
		missed := mk(processor.CheckinMissed, start+10*60_000)
		missed.RequestID = ask.ID()
		events = append(events, esc, ask, missed)
	}
	chtest.Write(b, sink, nil, events)
	r, err := qch.NewReader(ctx, cfg, false)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for _, limit := range []int{200, waiting} {
		b.Run(fmt.Sprintf("shown=%d", limit), func(b *testing.B) {
			var size int
			for b.Loop() {
				q, err := r.Queue(ctx, dossier.QueueFilter{Limit: limit})
				if err != nil {
					b.Fatal(err)
				}
				if q.Total != waiting || len(q.Items) != limit || q.Items[0].Checkin != "missed" {
					b.Fatalf("queue of %d, %d shown, first %+v", q.Total, len(q.Items), q.Items[0])
				}
				q.Form = &dossier.Form{CSRF: "x", Return: "/v1/review"}
				page, err := dossier.RenderQueue(q)
				if err != nil {
					b.Fatal(err)
				}
				size = len(page)
			}
			b.ReportMetric(float64(size)/1024, "page-KiB")
		})
	}
}
