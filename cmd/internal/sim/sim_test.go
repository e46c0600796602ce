package sim

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
)

func demoRules() processor.Rules {
	r := processor.DefaultRules()
	r.BreachAfter, r.SignalTimeout = 2*time.Minute, 5*time.Minute
	return r
}

func params(n int) Params {
	return Params{Seed: 7, Patients: n, Start: time.Date(2026, 4, 2, 8, 0, 0, 0, time.UTC), Duration: 20 * time.Minute,
		Interval: 30 * time.Second, Rules: demoRules()}
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, b := Generate(params(300)), Generate(params(300))
	if len(a.Pings) != len(b.Pings) || len(a.Truth) != len(b.Truth) || !bytes.Equal(a.Zones, b.Zones) {
		t.Fatal("two scenarios from one seed differ in size")
	}
	for i := range a.Pings {
		if !bytes.Equal(a.Pings[i].Value, b.Pings[i].Value) {
			t.Fatalf("ping %d differs:\n%s\n%s", i, a.Pings[i].Value, b.Pings[i].Value)
		}
	}
}

func TestScoreIsOneForThePerfectListAndCatchesAFalseBreach(t *testing.T) {
	s := Generate(params(500))
	var perfect []Event
	for _, tr := range s.Truth {
		perfect = append(perfect, Event{PatientID: tr.PatientID, Type: tr.Type, At: time.UnixMilli(tr.At).UTC().Format(time.RFC3339)})
	}
	card := Score(s.Truth, perfect)
	for _, k := range card.Kinds {
		if k.Precision != 1 || k.Recall != 1 {
			t.Errorf("%s: precision %v recall %v on the truth itself", k.Type, k.Precision, k.Recall)
		}
	}
	planted := append(perfect, Event{PatientID: "p-999999", Type: "breach_started", At: "2026-04-02T08:10:00Z"})
	if k := Score(s.Truth, planted).Kind("breach_started"); k.FalsePos != 1 || k.Precision >= 1 {
		t.Errorf("a planted false breach gave %+v", k)
	}
}

// TestEngineMeetsTheBar replays a scenario through the engine: breaches are
// found with precision >= 0.999 and recall >= 0.99, despite GPS noise,
// multipath, short trips, clinic visits and late deliveries.
func TestEngineMeetsTheBar(t *testing.T) {
	p := params(3000)
	s := Generate(p)
	zones, err := geo.ParseZones(s.Zones)
	if err != nil {
		t.Fatal(err)
	}
	book := processor.NewOrderBook()
	for _, l := range s.Orders {
		o, err := processor.DecodeOrder(nil, []byte(l), 0, zones)
		if err != nil {
			t.Fatal(err)
		}
		book.Put(o)
	}
	eng := processor.NewEngine(p.Rules, book)
	passes := processor.NewPassBook()
	keys, err := processor.ParseVerifyKeys([]byte(s.PublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	pdec := processor.PassDecoder{MaxDuration: 12 * time.Hour, Keys: keys}
	for _, l := range s.Passes {
		if pass, err := pdec.Decode(nil, []byte(l)); err == nil {
			passes.Put(pass)
		}
	}
	eng.UsePasses(passes)
	dec := processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50}
	var ev []processor.Event
	var pg processor.Ping
	for _, m := range s.Pings {
		if dec.Decode(m.Value, 0, &pg) != nil {
			continue
		}
		ev, _, _ = eng.Process(&pg, zones, ev)
	}
	ev = eng.Sweep(ev)
	var events []Event
	for i := range ev {
		var e Event
		if err := json.Unmarshal(ev[i].AppendJSON(nil, &p.Rules), &e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	card := Score(s.Truth, events)
	var b strings.Builder
	card.Print(&b)
	t.Logf("%d patients %v, %d pings:\n%s", p.Patients, s.Counts, len(s.Pings), b.String())
	if k := card.Kind("breach_started"); k.Precision < 0.999 || k.Recall < 0.99 {
		t.Errorf("breaches: precision %.4f, recall %.4f; want >= 0.999 and >= 0.99", k.Precision, k.Recall)
	}
	for _, r := range card.Passes {
		if r.Of == 0 || float64(r.Right) < 0.99*float64(r.Of) {
			t.Errorf("%s: %d of %d", r.What, r.Right, r.Of)
		}
	}
}
