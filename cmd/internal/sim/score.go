package sim

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// Event is the part of an event the scorer reads.
type Event struct {
	PatientID string `json:"patient_id"`
	Type      string `json:"type"`
	At        string `json:"at"`
	StartedAt string `json:"started_at"`
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
}

// PassRow is one row of the passes scorecard: Right of Of went as they must.
type PassRow struct {
	What      string
	Right, Of int
}

// Score matches events to the truth by patient and type: an event counts
// once per truth entry; any other is a false positive.
func Score(truth []Truth, events []Event) Card {
	type key struct{ id, typ string }
	want := map[key][]Truth{}
	for _, t := range truth {
		want[key{t.PatientID, t.Type}] = append(want[key{t.PatientID, t.Type}], t)
	}
	var card Card
	for _, typ := range []string{"breach_started", "signal_lost", "implausible_location"} {
		k := Kind{Type: typ}
		matched := map[key]int{}
		var delays []time.Duration
		for _, e := range events {
			if e.Type != typ {
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
	return card
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
			fmt.Fprintf(w, "  %-55s %6d of %d\n", r.What, r.Right, r.Of)
		}
	}
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
