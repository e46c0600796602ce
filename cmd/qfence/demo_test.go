package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
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
		"what learning from answers is worth", "asked once:", "event mislocation_learned", "stored uncertain with flag known_mislocation; no warning"} {
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
