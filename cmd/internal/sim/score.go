package sim

import (
	"fmt"

	"io"
	"slices"
	"time"

	"github.com/qfence/qfence/processor"
)

// Event is the part of an event the scorer reads.
type Event struct {
	EventID   string `json:"event_id"`
	PatientID string `json:"patient_id"`
	Type      string `json:"type"`
	At        string `json:"at"`
	StartedAt string `json:"started_at"`
	Reason    string `json:"reason"`
	RequestID string `json:"request_id"`
	Pass      *struct {
		PassID  string `json:"pass_id"`
		ValidTo string `json:"valid_to"`
	} `json:"pass"`
}

// Kind is one scored event type.
type Kind struct {
	Type                string
	TruePos, FalsePos   int
	Missed              int
	Precision, Recall   float64
	DelayP50, DelayP95  time.Duration
	FalseOnHomePatients int
}

// Card is the scorecard.
type Card struct {
	Kinds []Kind
	// Passes are the pass trips' rows: how many of each went as they must.
	Passes []PassRow
	// Checkins are the check-in rows: counts of what the requests came to.
	Checkins []Count
	// Trust are the rows of whose word counts: forgers and second phones.
	Trust []PassRow
	// TrustCounts are the counted rows beside them.
	TrustCounts []Count
}

// Count is one counted row of the scorecard.
type Count struct {
	What string
	N    int
}

// Count returns the row named what (0 when absent).
func (c Card) Count(what string) int {
	for _, r := range slices.Concat(c.Checkins, c.TrustCounts) {
		if r.What == what {
			return r.N
		}
	}
	return 0
}

// PassRow is one row of the passes scorecard: Right of Of went as they must.
type PassRow struct {
	What      string
	Right, Of int
}

// Score matches events to the truth by patient and type: an event counts
// once per truth entry; any other is a false positive (an escalation of a
// breach that ended too near its escalation instant to say is neither).
// checkins, when not nil, are the rules the random requests must follow.
func Score(truth []Truth, events []Event, checkins *processor.Checkins) Card {
	type key struct{ id, typ string }
	want := map[key][]Truth{}
	for _, t := range truth {
		want[key{t.PatientID, t.Type}] = append(want[key{t.PatientID, t.Type}], t)
	}
	var card Card
	// A phone on mislocated Wi-Fi is indistinguishable from a walk: its
	// breaches are counted in rows of their own, not against precision.
	onWifi := drifting(truth)
	for _, typ := range []string{"breach_started", "breach_escalated", "signal_lost", "implausible_location"} {
		k := Kind{Type: typ}
		matched := map[key]int{}
		var delays []time.Duration
		for _, e := range events {
			if e.Type != typ || (typ == "breach_escalated" && len(want[key{e.PatientID, "escalation_unsure"}]) > 0) ||
				((typ == "breach_started" || typ == "breach_escalated") && onWifi(e)) {
				continue
			}
			kk := key{e.PatientID, typ}
			if matched[kk] < len(want[kk]) {
				tr := want[kk][matched[kk]]
				matched[kk]++
				k.TruePos++
				if at, err := time.Parse(time.RFC3339, e.At); err == nil {
					delays = append(delays, at.Sub(time.UnixMilli(tr.At)))
				}
			} else {
				k.FalsePos++
			}
		}
		for kk, ts := range want {
			if kk.typ == typ {
				k.Missed += len(ts) - matched[kk]
			}
		}
		k.Precision = ratio(k.TruePos, k.TruePos+k.FalsePos)
		k.Recall = ratio(k.TruePos, k.TruePos+k.Missed)
		slices.Sort(delays)
		if len(delays) > 0 {
			k.DelayP50, k.DelayP95 = delays[len(delays)/2], delays[len(delays)*95/100]
		}
		card.Kinds = append(card.Kinds, k)
	}
	card.Passes = scorePasses(truth, events)
	card.Checkins = scoreCheckins(truth, events, checkins)
	card.Trust, card.TrustCounts = scoreTrust(truth, events)
	walks, counts := scoreMislocations(truth, events)
	card.Checkins = append(card.Checkins, counts...)
	if walks.Of > 0 {
		card.Passes = append(card.Passes, walks)
	}
	return card
}

// drifting returns whether an event is about a mislocated phone's episode:
// a breach event whose run began while the phone saw only its mislocated
// access point (an interval of slack either side).
func drifting(truth []Truth) func(Event) bool {
	episodes := map[string][]Truth{}
	for _, t := range truth {
		if t.Type == "wifi_drift" {
			episodes[t.PatientID] = append(episodes[t.PatientID], t)
		}
	}
	return func(e Event) bool {
		eps := episodes[e.PatientID]
		if len(eps) == 0 {
			return false
		}
		at, err := time.Parse(time.RFC3339, e.StartedAt)
		if err != nil {
			return false
		}
		ms := at.UnixMilli()
		for _, ep := range eps {
			if ms >= ep.At-60_000 && ms <= ep.Until+60_000 {
				return true
			}
		}
		return false
	}
}

// The rows of learning from answers (contract 2.4).
const (
	RowWifiEpisodes = "mislocated Wi-Fi: episodes"
	RowWifiPlaces   = "mislocated Wi-Fi: places (one a phone)"
	RowWifiFirst    = "warnings in a place's first episode"
	RowWifiLater    = "warnings in its later episodes (learning silences them)"
	RowLearned      = "mislocations learned (mislocation_learned)"
	RowWalksCaught  = "walks to a learned place caught (breach_started)"
)

// scoreMislocations counts the warnings (breach_started) of mislocated
// phones by episode: the first of a place warns, the later ones should
// not; and the walks to a learned place that were caught all the same.
func scoreMislocations(truth []Truth, events []Event) (PassRow, []Count) {
	episodes := map[string][]Truth{}
	walks := map[string]int64{}
	for _, t := range truth {
		switch t.Type {
		case "wifi_drift":
			episodes[t.PatientID] = append(episodes[t.PatientID], t)
		case "walk_to_learned":
			walks[t.PatientID] = t.At
		}
	}
	n := map[string]int{RowWifiPlaces: len(episodes)}
	for _, eps := range episodes {
		n[RowWifiEpisodes] += len(eps)
	}
	onWifi := drifting(truth)
	caught := map[string]bool{}
	for _, e := range events {
		switch {
		case e.Type == "mislocation_learned" && len(episodes[e.PatientID]) > 0:
			n[RowLearned]++
		case e.Type != "breach_started":
		case onWifi(e):
			at, _ := time.Parse(time.RFC3339, e.StartedAt)
			if first := episodes[e.PatientID][0]; at.UnixMilli() <= first.Until+60_000 {
				n[RowWifiFirst]++
			} else {
				n[RowWifiLater]++
			}
		case walks[e.PatientID] != 0: // confirmed during the walk (its run may begin with a noisy fix just before)
			if at, err := time.Parse(time.RFC3339, e.At); err == nil && at.UnixMilli() >= walks[e.PatientID] {
				caught[e.PatientID] = true
			}
		}
	}
	var rows []Count
	for _, what := range []string{RowWifiEpisodes, RowWifiPlaces, RowWifiFirst, RowWifiLater, RowLearned} {
		rows = append(rows, Count{what, n[what]})
	}
	return PassRow{What: RowWalksCaught, Right: len(caught), Of: len(walks)}, rows
}

// The rows of whose word counts.
const (
	RowForgersEscalated = "forgers' breaches escalated (their forged check-ins did not count)"
	RowSecondPhone      = "trips behind a second phone at home caught (breach_started)"
	RowSecondMismatch   = "second phones seen (device_mismatch)"
	RowForgedEnded      = "breaches a forged check-in ended (must be 0)"
	RowValidRejected    = "check-ins of honest phones rejected (must be 0)"
	RowOnePhoneMismatch = "device_mismatch on one-phone patients (must be 0)"
)

// RowForged is the row of forged check-ins rejected with reason.
func RowForged(reason string) string { return "forged check-ins rejected: " + reason }

func scoreTrust(truth []Truth, events []Event) ([]PassRow, []Count) {
	forger, second, due := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, t := range truth {
		switch t.Type {
		case string(Forger):
			forger[t.PatientID] = true
		case string(SecondPhone):
			second[t.PatientID] = true
		case "breach_escalated":
			due[t.PatientID] = true
		}
	}
	rows := []PassRow{{What: RowForgersEscalated}, {What: RowSecondPhone}, {What: RowSecondMismatch}}
	for id := range forger {
		if due[id] {
			rows[0].Of++
		}
	}
	rows[1].Of, rows[2].Of = len(second), len(second)
	n := map[string]int{}
	escalated, caught, seen := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, e := range events {
		switch e.Type {
		case "breach_escalated":
			if forger[e.PatientID] && due[e.PatientID] && !escalated[e.PatientID] {
				escalated[e.PatientID] = true
				rows[0].Right++
			}
		case "breach_started":
			if second[e.PatientID] && !caught[e.PatientID] {
				caught[e.PatientID] = true
				rows[1].Right++
			}
		case "breach_ended":
			if forger[e.PatientID] && e.Reason == "checkin" {
				n[RowForgedEnded]++
			}
		case "checkin_rejected":
			if forger[e.PatientID] {
				n[RowForged(e.Reason)]++
			} else {
				n[RowValidRejected]++
			}
		case "device_mismatch":
			switch {
			case !second[e.PatientID]:
				n[RowOnePhoneMismatch]++
			case !seen[e.PatientID]:
				seen[e.PatientID] = true
				rows[2].Right++
			}
		}
	}
	var counts []Count
	for _, r := range processor.CheckinReasons {
		counts = append(counts, Count{RowForged(r.String()), n[RowForged(r.String())]})
	}
	for _, what := range []string{RowForgedEnded, RowValidRejected, RowOnePhoneMismatch} {
		counts = append(counts, Count{what, n[what]})
	}
	return rows, counts
}

// The check-in rows of the scorecard.
const (
	RowWifiBreaches     = "mislocated Wi-Fi: false breaches (no accuracy test can tell)"
	RowWifiEscalated    = "of which escalated"
	RowWifiResolved     = "of which ended by a verified check-in before escalation"
	RowRequests         = "check-in requests"
	RowRandomRequests   = "random requests"
	RowRandomQuiet      = "random requests in quiet hours (must be 0)"
	RowMissed           = "check-ins missed"
	RowFailed           = "check-ins failed (face match)"
	RowEscalationsFalse = "escalations without a real breach (Wi-Fi included)"
)

func scoreCheckins(truth []Truth, events []Event, c *processor.Checkins) []Count {
	real := map[string]bool{}
	for _, t := range truth {
		if t.Type == "breach_started" {
			real[t.PatientID] = true
		}
	}
	wifi := drifting(truth)
	escalated := map[string]map[string]bool{} // patient → started_at of the escalated breaches
	for _, e := range events {
		if e.Type == "breach_escalated" {
			if escalated[e.PatientID] == nil {
				escalated[e.PatientID] = map[string]bool{}
			}
			escalated[e.PatientID][e.StartedAt] = true
		}
	}
	n := map[string]int{}
	for _, e := range events {
		switch e.Type {
		case "breach_started":
			if wifi(e) {
				n[RowWifiBreaches]++
				if escalated[e.PatientID][e.StartedAt] {
					n[RowWifiEscalated]++
				}
			}
		case "breach_ended":
			if wifi(e) && e.Reason == "checkin" && !escalated[e.PatientID][e.StartedAt] {
				n[RowWifiResolved]++
			}
		case "breach_escalated":
			if !real[e.PatientID] || wifi(e) {
				n[RowEscalationsFalse]++
			}
		case "checkin_requested":
			n[RowRequests]++
			if e.Reason == "random" {
				n[RowRandomRequests]++
				if at, err := time.Parse(time.RFC3339, e.At); err == nil && c != nil && c.InQuietHours(at.UnixMilli()) {
					n[RowRandomQuiet]++
				}
			}
		case "checkin_missed":
			n[RowMissed]++
		case "checkin_failed":
			n[RowFailed]++
		}
	}
	var rows []Count
	for _, what := range []string{RowWifiBreaches, RowWifiEscalated, RowWifiResolved, RowEscalationsFalse, RowRequests, RowRandomRequests,
		RowRandomQuiet, RowMissed, RowFailed} {
		rows = append(rows, Count{what, n[what]})
	}
	return rows
}

// scorePasses checks the pass trips: an excused trip gives no breach, an
// overrun (or a trip too far, or past a revocation) a breach naming its
// pass, a forged pass a breach naming none.
func scorePasses(truth []Truth, events []Event) []PassRow {
	breaches := map[string][]Event{}
	for _, e := range events {
		if e.Type == "breach_started" {
			breaches[e.PatientID] = append(breaches[e.PatientID], e)
		}
	}
	rows := []PassRow{{What: "trips excused by a pass"}, {What: "overruns and trips too far, breaches under their pass"}, {What: "forged passes refused"}}
	for _, t := range truth {
		bs := breaches[t.PatientID]
		switch t.Type {
		case "pass_excused":
			rows[0].Of++
			if len(bs) == 0 {
				rows[0].Right++
			}
		case "pass_breach":
			rows[1].Of++
			if len(bs) == 1 && bs[0].Pass != nil && bs[0].Pass.PassID == t.PassID {
				rows[1].Right++
			}
		case "pass_forged":
			rows[2].Of++
			if len(bs) == 1 && bs[0].Pass == nil {
				rows[2].Right++
			}
		}
	}
	return rows
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 1
	}
	return float64(a) / float64(b)
}

// Print writes the scorecard as a table.
func (c Card) Print(w io.Writer) {
	fmt.Fprintf(w, "  %-22s %9s %9s %7s %7s %10s %10s\n", "event", "precision", "recall", "false", "missed", "delay p50", "delay p95")
	for _, k := range c.Kinds {
		fmt.Fprintf(w, "  %-22s %9.4f %9.4f %7d %7d %10s %10s\n", k.Type, k.Precision, k.Recall, k.FalsePos, k.Missed,
			k.DelayP50.Round(time.Second), k.DelayP95.Round(time.Second))
	}
	for _, r := range c.Passes {
		if r.Of > 0 {
			fmt.Fprintf(w, "  %-60s %6d of %d\n", r.What, r.Right, r.Of)
		}
	}
	for _, r := range c.Checkins {
		fmt.Fprintf(w, "  %-60s %6d\n", r.What, r.N)
	}
	for _, r := range c.Trust {
		if r.Of > 0 {
			fmt.Fprintf(w, "  %-60s %6d of %d\n", r.What, r.Right, r.Of)
		}
	}
	for _, r := range c.TrustCounts {
		fmt.Fprintf(w, "  %-60s %6d\n", r.What, r.N)
	}
}

// Row returns the Right-of-Of row named what (zero when absent).
func (c Card) Row(what string) PassRow {
	for _, r := range slices.Concat(c.Passes, c.Trust) {
		if r.What == what {
			return r
		}
	}
	return PassRow{}
}

// Kind returns the scores of one event type.
func (c Card) Kind(typ string) Kind {
	for _, k := range c.Kinds {
		if k.Type == typ {
			return k
		}
	}
	return Kind{}
}
