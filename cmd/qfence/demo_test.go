package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoShort runs `qfence demo --short` end to end: a private
// ClickHouse, the embedded broker, the simulator and the daemon. Its
// summary must hold the scorecard, and the scorecard must meet the bar.
func TestDemoShort(t *testing.T) {
	var out bytes.Buffer
	if err := demo(t.Context(), demoOptions{short: true}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"scorecard against the simulator's truth", "breach_started", "stored pings by verdict", "demo done",
		"a police scanner checks a pass through the API", `"status":"`, "a trip that outlasted its QR pass",
		"notifications on notifications:", "what the app's answers are worth", "a false alarm a check-in resolved before escalation",
		"notification warning", "notification checkin_request", "reason checkin", "a real breach that escalated", "event checkin_missed",
		"what the verification service's signatures are worth", "a forged check-in that did not count", "event checkin_rejected",
		"what learning from answers is worth", "asked once:", "event mislocation_learned", "stored uncertain with flag known_mislocation; no warning",
		"the review queue, worked through the API by a simulated reviewer", "what people decided, per district"} {
		if !strings.Contains(s, want) {
			t.Errorf("the summary lacks %q:\n%s", want, s)
		}
	}
	// Every stored ping once under FINAL: the accepted and late pings the
	// metrics counted are exactly the distinct rows.
	var final, sent int
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "pings stored once each under FINAL") {
			fmt.Sscanf(line, "ClickHouse: %d pings stored once each under FINAL, of %d", &final, &sent)
		}
	}
	if final == 0 || final != sent {
		t.Errorf("ClickHouse holds %d pings under FINAL, %d distinct valid pings were sent", final, sent)
	}
	// The reviewer's decisions are what the outcomes table counts.
	var confirmed, dismissed, left, contested, tabled int
	inTable := false
	for _, line := range strings.Split(s, "\n") {
		inTable = inTable && strings.TrimSpace(line) != "" || strings.HasPrefix(line, "what people decided")
		if i := strings.Index(line, "sees the truth: "); i >= 0 {
			fmt.Sscanf(line[i:], "sees the truth: %d escalations confirmed, %d dismissed as false_location, %d left waiting; the app contested %d",
				&confirmed, &dismissed, &left, &contested)
		}
		if f := strings.Fields(line); inTable && len(f) >= 4 && f[1] == "breach_escalated" {
			n := 0
			fmt.Sscanf(f[3], "%d", &n)
			tabled += n
		}
	}
	if confirmed+dismissed == 0 || tabled != confirmed {
		t.Errorf("the reviewer confirmed %d and dismissed %d (left %d); the outcomes table counts %d confirmed escalations", confirmed, dismissed, left, tabled)
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "(must be 0)") && !strings.HasSuffix(line, " 0") {
			t.Errorf("a row that must be 0 is not: %s", strings.TrimSpace(line))
		}
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "breach_started" && (f[1] != "1.0000" || f[2] != "1.0000") {
			t.Errorf("breach precision/recall %s/%s, want 1.0000/1.0000 on the short demo", f[1], f[2])
		}
		// The passes' and trust rows: "trips excused by a pass   N of M", all right.
		if len(f) >= 3 && f[len(f)-2] == "of" {
			var right, of int
			if _, err := fmt.Sscanf(f[len(f)-3]+" "+f[len(f)-1], "%d %d", &right, &of); err == nil && (of == 0 || right != of) {
				t.Errorf("scorecard row: %s", strings.TrimSpace(line))
			}
		}
	}
}

// TestDemoKeep: `qfence demo --keep` keeps everything running after the
// summary and prints the review queue's URL, which answers the reviewer
// token; cancelling (Ctrl-C) stops and removes everything.
func TestDemoKeep(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- demo(ctx, demoOptions{short: true, keep: true}, &out) }()
	var url string
	if err := waitUntil(t.Context(), 3*time.Minute, func() bool {
		m := regexp.MustCompile(`review queue: (http://\S+/v1/review)`).FindStringSubmatch(out.String())
		if m != nil {
			url = m[1]
		}
		return m != nil
	}); err != nil {
		t.Fatalf("no URL printed:\n%s", out.String())
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer demo-reviewer-token-0000")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Review queue") {
		t.Errorf("the kept queue answered %d: %.200s", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not stop within 30 s of Ctrl-C")
	}
	if !strings.Contains(out.String(), "demo done") {
		t.Errorf("the demo did not say it cleaned up:\n%s", out.String())
	}
}
