package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/processor"
)

// Disposition says what a reviewer who could see the truth would decide about
// an escalation: a mislocated phone's breach is dismissed as a false
// location, a real trip confirmed.
func (s *Scenario) Disposition(e Event) (decision, reason string) {
	if s.falseLocation(e) {
		return "dismissed", "false_location"
	}
	return "confirmed", "confirmed_absence"
}

// falseLocation reports whether e happened while the patient's phone saw
// only its mislocated access point.
func (s *Scenario) falseLocation(e Event) bool {
	b := s.Behaviour(e.PatientID)
	if b != WifiDrift && b != WifiWalk {
		return false
	}
	started, err := time.Parse(time.RFC3339Nano, e.StartedAt)
	if err != nil {
		return false
	}
	for _, ep := range s.Episodes(e.PatientID) {
		if started.UnixMilli() >= ep[0]-60_000 && started.UnixMilli() < ep[1] {
			return true
		}
	}
	return false
}

// Reviewed is what the simulated reviewer did.
type Reviewed struct {
	Confirmed, Dismissed, Left int
}

// Review works the review queue through the API as a reviewer would:
// every escalation waiting (GET /v1/review, as JSON) is decided by the
// truth (POST …/dispositions), but every leaveEvery-th, which is left
// waiting. events are the events qfence produced (the reviewer reads the
// dossier; the simulator reads the truth by event).
func (s *Scenario) Review(ctx context.Context, client *http.Client, base, token string, events []Event, leaveEvery int) (Reviewed, error) {
	var done Reviewed
	byID := map[string]Event{}
	for _, e := range events {
		byID[e.EventID] = e
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/review?limit=10000", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return done, fmt.Errorf("the review queue: %w", err)
	}
	var queue struct {
		Events []struct {
			EventID string `json:"event_id"`
		} `json:"events"`
	}
	err = json.NewDecoder(resp.Body).Decode(&queue)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return done, fmt.Errorf("the review queue: %d %v", resp.StatusCode, err)
	}
	for i, w := range queue.Events {
		e, ok := byID[w.EventID]
		if !ok || leaveEvery > 0 && i%leaveEvery == leaveEvery-1 {
			done.Left++
			continue
		}
		decision, reason := s.Disposition(e)
		body, _ := json.Marshal(map[string]string{"decision": decision, "reason": reason, "comment": "simulated reviewer, from the dossier"})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/events/"+w.EventID+"/dispositions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return done, fmt.Errorf("a disposition: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return done, fmt.Errorf("a disposition: %s", resp.Status)
		}
		if decision == "confirmed" {
			done.Confirmed++
		} else {
			done.Dismissed++
		}
	}
	return done, nil
}

// Contests are the dispositions the patients' app produces for up to n
// false breaches (a mislocated phone's breach_started): contested, as a
// false location, through the dispositions topic.
func (s *Scenario) Contests(events []Event, n int) []kafka.Message {
	var out []kafka.Message
	for _, e := range events {
		if len(out) == n {
			break
		}
		if e.Type != "breach_started" || !s.falseLocation(e) {
			continue
		}
		at, _ := time.Parse(time.RFC3339Nano, e.At)
		d := processor.Disposition{DispositionID: "app-" + e.EventID[:16], EventID: e.EventID, Decision: "contested", Reason: "false_location",
			Comment: "I was at home: my phone's Wi-Fi location is wrong", DecidedBy: "patient-app", DecidedAt: at.UnixMilli() + 5*60_000, Channel: "patient"}
		out = append(out, kafka.Message{Key: []byte(d.EventID), Value: d.AppendJSON(nil)})
	}
	return out
}
