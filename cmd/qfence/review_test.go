package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/kafka"
)

// testReviewInABrowser is a reviewer's work, done as a reviewer does it in
// headless Chromium: open the queue, follow the first event's dossier
// link, record "dismissed / false_location" with a comment through the
// form. The event leaves the queue, the dossier's table shows the row,
// ClickHouse has it, api_audit has every request, /v1/outcomes counts it;
// a second decision (JSON) supersedes the first and both stay; a page on
// another origin submitting the form records nothing. With -update the
// queue's and the dossier's screenshots are written to testdata/.
func testReviewInABrowser(t *testing.T, cfg *config.Config, caFile string) {
	ch, err := clickhouse.Connect(t.Context(), cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	db := cfg.ClickHouse.Database
	count := func(q string, args ...any) uint64 {
		var n uint64
		if err := ch.QueryRow(t.Context(), q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	if err := waitUntil(t.Context(), 60*time.Second, func() bool {
		return count("SELECT count() FROM "+db+".events FINAL WHERE type = 'breach_escalated'") >= 2
	}); err != nil {
		t.Fatal("fewer than two escalations in ClickHouse to review")
	}
	const reviewer = "reviewer-token-0123456789"
	base := "https://" + cfg.API.Listen
	client := apiClient(t, caFile)
	queueJSON := func() (out struct {
		Waiting int
		Events  []struct {
			EventID string `json:"event_id"`
		}
	}) {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/review", nil)
		req.Header.Set("Authorization", "Bearer "+reviewer)
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("the queue as JSON: %d %v", resp.StatusCode, err)
		}
		return out
	}
	before := queueJSON()
	if before.Waiting < 2 || len(before.Events) < 2 {
		t.Fatalf("the queue holds %d events", before.Waiting)
	}
	first := before.Events[0].EventID

	ctx, problemsSoFar := headless(t)
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": "Bearer " + reviewer}}); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(base+"/v1/review"))
	if err != nil || resp.Status != 200 {
		t.Fatalf("the queue: %v", err)
	}
	var queueShot []byte
	if *update {
		if queueShot, err = chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
			t.Fatal(err)
		}
	}
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('table#queue tr[data-event] a.dossier').getAttribute('href')`))
	if err != nil || !strings.Contains(href, first) {
		t.Fatalf("the first row links to %q, want the dossier of %s (%v)", href, first, err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`table#queue tr[data-event] a.dossier`))); err != nil {
		t.Fatalf("following the dossier link: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`form#decide`)),
		chromedp.SetValue(chromedp.CSS(`form#decide select[name=decision]`), "dismissed"),
		chromedp.SetValue(chromedp.CSS(`form#decide select[name=reason]`), "false_location"),
		chromedp.SendKeys(chromedp.CSS(`form#decide input[name=comment]`), "GPS fix at home; the Wi-Fi fixes are 900 m off")); err != nil {
		t.Fatalf("filling the form: %v", err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`form#decide button`))); err != nil {
		t.Fatalf("submitting the form: %v", err)
	}
	rows, err1 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('table#dispositions tr').length - 1`))
	current, err2 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#current`)))
	charts, err3 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('svg#chart g.pt').length`))
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if rows != 1 || !strings.Contains(current, "dismissed (false_location)") || charts == 0 {
		t.Errorf("after the form: %d dispositions shown, current %q, %d points on the chart", rows, current, charts)
	}
	if *update {
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			_ = os.MkdirAll("../../testdata/review", 0o755)
			_ = os.WriteFile("../../testdata/review/queue.png", queueShot, 0o644)
			_ = os.WriteFile("../../testdata/review/dossier-decided.png", shot, 0o644)
		}
	}
	if p := problemsSoFar(); len(p) > 0 {
		t.Errorf("the pages had problems: %v", p)
	}
	// The event left the queue; the decision is in ClickHouse, as the form said.
	after := queueJSON()
	for _, e := range after.Events {
		if e.EventID == first {
			t.Errorf("the decided event %s is still in the queue", first)
		}
	}
	if after.Waiting != before.Waiting-1 {
		t.Errorf("%d wait after one decision, %d before", after.Waiting, before.Waiting)
	}
	if n := count("SELECT count() FROM "+db+".dispositions FINAL WHERE event_id = ? AND decision = 'dismissed' AND reason = 'false_location' "+
		"AND decided_by = 'judge-2' AND channel = 'review' AND comment LIKE 'GPS fix at home%'", first); n != 1 {
		t.Errorf("%d rows of the form's disposition in ClickHouse", n)
	}
	outcome := func() (confirmed, falseLocation int) {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/outcomes", nil)
		req.Header.Set("Authorization", "Bearer "+reviewer)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Outcomes []clickhouse.Outcome
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Outcomes {
			if o.Type == "breach_escalated" {
				confirmed += o.Confirmed
				falseLocation += o.Dismissed["false_location"]
			}
		}
		return
	}
	if c, f := outcome(); c != 0 || f != 1 {
		t.Errorf("outcomes: %d confirmed, %d dismissed as false_location; want 0 and 1", c, f)
	}
	// A second decision supersedes the first; both stay.
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/events/"+first+"/dispositions", strings.NewReader(`{"decision":"confirmed","reason":"confirmed_absence","comment":"seen by an officer"}`))
	req.Header.Set("Authorization", "Bearer "+reviewer)
	req.Header.Set("Content-Type", "application/json")
	r2, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	var reply struct {
		Disposition struct {
			Decision  string
			DecidedBy string `json:"decided_by"`
		}
		Supersedes *struct{ Decision, Reason string }
	}
	if err := json.Unmarshal(body, &reply); err != nil || r2.StatusCode != 201 || reply.Supersedes == nil || reply.Supersedes.Reason != "false_location" {
		t.Fatalf("the second decision: %d %s", r2.StatusCode, body)
	}
	if c, f := outcome(); c != 1 || f != 0 {
		t.Errorf("outcomes after the second decision: %d confirmed, %d false_location; want 1 and 0", c, f)
	}
	if n := count("SELECT count() FROM "+db+".dispositions FINAL WHERE event_id = ?", first); n != 2 {
		t.Errorf("%d dispositions of the event, want both", n)
	}
	// An analyst's table in the terminal says the same.
	t.Setenv("QFENCE_CLICKHOUSE_ADDR", cfg.ClickHouse.Addr)
	t.Setenv("QFENCE_CLICKHOUSE_DATABASE", db)
	table, err := runQfence(t, "outcomes", "--since", "2000-01-01T00:00:00Z")
	if err != nil || !regexp.MustCompile(`breach_escalated +\d+ +1 +0 +0 +\d+ +0%`).MatchString(table) {
		t.Errorf("qfence outcomes: %v\n%s", err, table)
	}
	// A page on another origin submits the form: refused, nothing recorded.
	second := before.Events[1].EventID
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<!DOCTYPE html><form id="f" method="post" action="%s/v1/events/%s/dispositions"><input name="decision" value="confirmed">`+
			`<input name="reason" value="other"><input name="csrf" value="guessed"></form><script>document.getElementById('f').submit()</script>`, base, second)
	}))
	defer evil.Close()
	refusedBefore := count("SELECT count() FROM " + db + ".api_audit WHERE method = 'POST' AND status = 403")
	if err := chromedp.Do(ctx, chromedp.Navigate(evil.URL)); err != nil {
		t.Fatalf("the other origin's page: %v", err)
	}
	if err := waitUntil(t.Context(), 30*time.Second, func() bool {
		return count("SELECT count() FROM "+db+".api_audit WHERE method = 'POST' AND status = 403") > refusedBefore
	}); err != nil {
		t.Error("the other origin's post is not in api_audit as refused")
	}
	if n := count("SELECT count() FROM "+db+".dispositions WHERE event_id = ?", second); n != 0 {
		t.Errorf("the other origin's form recorded %d dispositions", n)
	}
	// Every request is audited: the queue, the dossier, both posts.
	if err := waitUntil(t.Context(), 30*time.Second, func() bool {
		return count("SELECT count() FROM "+db+".api_audit WHERE token_name = 'judge-2' AND path = '/v1/review'") >= 3 &&
			count("SELECT count() FROM "+db+".api_audit WHERE token_name = 'judge-2' AND method = 'POST' AND path = ? AND status IN (201, 303)",
				"/v1/events/"+first+"/dispositions") == 2 &&
			count("SELECT count() FROM "+db+".api_audit WHERE token_name = 'judge-2' AND path = '/v1/outcomes'") >= 2
	}); err != nil {
		t.Error("the review requests are not all in api_audit")
	}
}

// testDispositionsTopic produces dispositions as an enforcement system and
// a patient's app would: valid ones are stored once, one for an event
// qfence does not know too, and each bad reason lands in dispositions-dlq
// with its header.
func testDispositionsTopic(t *testing.T, k *kafka.Client, cfg *config.Config) {
	ev := "00000000000000000000000000000001"
	valid := func(id, decision, reason, channel string) kafkago.Message {
		return kafkago.Message{Key: []byte(ev), Value: fmt.Appendf(nil, `{"disposition_id":"%s","event_id":"%s","decision":"%s","reason":"%s","decided_by":"enforcement:7","decided_at":"2026-04-02T11:02:00Z","channel":"%s"}`,
			id, ev, decision, reason, channel)}
	}
	bad := map[string][]byte{
		"too_large":      bytes.Repeat([]byte(" "), cfg.Limits.MaxMessageBytes+1),
		"malformed_json": []byte(`{"disposition_id":`),
		"missing_field":  []byte(`{"event_id":"` + ev + `"}`),
		"bad_event_id":   []byte(`{"disposition_id":"X","event_id":"nothex","decision":"confirmed","reason":"other","decided_by":"x","decided_at":"2026-04-02T11:02:00Z"}`),
		"bad_decision":   []byte(`{"disposition_id":"X","event_id":"` + ev + `","decision":"fined","reason":"other","decided_by":"x","decided_at":"2026-04-02T11:02:00Z"}`),
		"bad_reason":     []byte(`{"disposition_id":"X","event_id":"` + ev + `","decision":"confirmed","reason":"vibes","decided_by":"x","decided_at":"2026-04-02T11:02:00Z"}`),
		"bad_timestamp":  []byte(`{"disposition_id":"X","event_id":"` + ev + `","decision":"confirmed","reason":"other","decided_by":"x","decided_at":"later"}`),
	}
	msgs := []kafkago.Message{valid("E-1", "confirmed", "confirmed_absence", "enforcement"), valid("A-1", "contested", "medical", "patient"),
		valid("E-1", "confirmed", "confirmed_absence", "enforcement")} // the first again: stored once
	for _, v := range bad {
		msgs = append(msgs, kafkago.Message{Key: []byte(ev), Value: v})
	}
	if err := k.Publish(t.Context(), cfg.Kafka.Topics.Dispositions, msgs, 0, nil); err != nil {
		t.Fatal(err)
	}
	ch, err := clickhouse.Connect(t.Context(), cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	stored := func() (n uint64) {
		_ = ch.QueryRow(t.Context(), "SELECT count() FROM "+cfg.ClickHouse.Database+".dispositions FINAL WHERE event_id = ?", ev).Scan(&n)
		return n
	}
	if err := waitUntil(t.Context(), 60*time.Second, func() bool { return stored() >= 2 }); err != nil {
		t.Fatalf("%d of the topic's dispositions stored", stored())
	}
	if n := stored(); n != 2 {
		t.Errorf("%d dispositions stored under FINAL, want 2", n)
	}
	got := map[string]bool{}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: cfg.Kafka.BrokerList(), Topic: cfg.Kafka.Topics.DispositionsDLQ, Partition: 0, MaxWait: 500 * time.Millisecond})
	defer r.Close()
	if err := waitUntil(t.Context(), 60*time.Second, func() bool {
		rctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		m, err := r.ReadMessage(rctx)
		if err == nil {
			got[header(m, "qfence-reason")] = header(m, "qfence-topic") == cfg.Kafka.Topics.Dispositions
		}
		return len(got) == len(bad)
	}); err != nil {
		t.Errorf("dead letters by reason: %v, want every one of %d", got, len(bad))
	}
	for reason, fromTopic := range got {
		if _, ok := bad[reason]; !ok || !fromTopic {
			t.Errorf("a dead letter with reason %q (from the dispositions topic: %v)", reason, fromTopic)
		}
	}
}

func header(m kafkago.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
