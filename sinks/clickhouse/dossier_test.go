package clickhouse_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/config"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/dossier"
	"github.com/qfence/qfence/processor/pipeline"
	qch "github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
)

// breachOf500 stores a breach whose window holds 500 pings of its patient
// (a ping every 12 s for 100 minutes) and returns the event.
func breachOf500(t testing.TB, cfg config.ClickHouse) processor.Event {
	t.Helper()
	book := processor.NewOrderBook()
	home := orb.Point{37.62, 55.75}
	book.Put(&processor.Order{PatientID: "p-dossier", Home: home, RadiusM: 50, StartsAt: dataStart.Add(-24 * time.Hour).UnixMilli(), EndsAt: math.MaxInt64})
	eng := processor.NewEngine(processor.DefaultRules(), book)
	var tracks []processor.Track
	var events []processor.Event
	for i := range 500 {
		east := 5.0
		if i >= 150 && i < 350 {
			east = 800 + float64(i%7)*10
		}
		lon := home[0] + east/(111320*math.Cos(home[1]*math.Pi/180))
		p := processor.Ping{PatientID: []byte("p-dossier"), TS: dataStart.Add(time.Duration(i) * 12 * time.Second).UnixMilli(), Lat: home[1], Lon: lon, Accuracy: 10}
		if i == 200 { // out, answering the breach's check-in request: a failed face match
			p.Checkin = processor.Checkin{Present: true, Method: []byte("selfie")}
		}
		var out processor.Outcome
		var tr processor.Track
		events, out, tr = eng.Process(&p, nil, events)
		if out == processor.Accepted {
			tracks = append(tracks, tr)
		}
	}
	sink := chtest.OpenSink(t, cfg, "")
	sink.Rules = processor.DefaultRules()
	notifier, err := processor.NewNotifier("", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var notes []processor.Notification
	for i := range events {
		notes = notifier.For(&events[i], notes)
	}
	chtest.WriteOutput(t, sink, &pipeline.Output{Rows: tracks, Events: events, Notifications: notes})
	for _, e := range events {
		if e.Type == processor.BreachEnded { // its window holds all 500 pings
			return e
		}
	}
	t.Fatal("no breach")
	return processor.Event{}
}

// A dossier read from ClickHouse holds the event, its rule values, the
// window's pings with the evidence marked, and renders.
func TestReaderReadsADossier(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	cfg.RetentionDays = 3650
	e := breachOf500(t, cfg)
	r, err := qch.NewReader(context.Background(), cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := r.Case(context.Background(), e.IDString())
	if err != nil {
		t.Fatal(err)
	}
	if c.Type != "breach_ended" || c.At != e.At || c.StartedAt != e.StartedAt || c.RadiusM != 50 || c.Rules.MarginM != 25 || c.Rules.BreachMinPings != 2 {
		t.Errorf("case %+v", c)
	}
	if len(c.Pings) != 500 || len(c.Evidence) != len(e.Evidence) {
		t.Errorf("%d pings, %d evidence marks (want %d)", len(c.Pings), len(c.Evidence), len(e.Evidence))
	}
	if len(c.Checkins) != 1 || c.Checkins[0].Trigger != "breach_started" || c.Checkins[0].Outcome != "failed (face match)" ||
		c.Checkins[0].AnsweredAt != dataStart.Add(200*12*time.Second).UnixMilli() || len(c.Notifications) != 2 {
		t.Errorf("check-ins %+v, notifications %+v", c.Checkins, c.Notifications)
	}
	page, err := dossier.Render(c, nil)
	if err != nil || !strings.Contains(string(page), e.IDString()) || !strings.Contains(string(page), "failed (face match)") ||
		!strings.Contains(string(page), "You appear to have left home") {
		t.Errorf("render: %v", err)
	}
	if _, err := r.Case(context.Background(), "0123456789abcdef0123456789abcdef"); err != qch.ErrNoEvent {
		t.Errorf("an unknown event: %v, want ErrNoEvent", err)
	}
}

// BenchmarkDossier reads and renders the dossier of a breach with 500 pings
// in its window, from ClickHouse (the goal: at most 200 ms).
//
//	go test -run '^$' -bench Dossier ./sinks/clickhouse/
func BenchmarkDossier(b *testing.B) {
	cfg := chtest.DB(b, chtest.Addr)
	cfg.RetentionDays = 3650
	e := breachOf500(b, cfg)
	r, err := qch.NewReader(context.Background(), cfg, false)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var size int
	for b.Loop() {
		c, err := r.Case(context.Background(), e.IDString())
		if err != nil {
			b.Fatal(err)
		}
		page, err := dossier.Render(c, nil)
		if err != nil {
			b.Fatal(err)
		}
		size = len(page)
	}
	b.ReportMetric(float64(size)/1024, "page-KiB")
}

// A breach by GNSS at a place this phone's Wi-Fi was proved wrong about:
// its dossier reads the learned circle from ClickHouse and the network
// fixes it made uncertain, flagged.
func TestADossierShowsTheKnownMislocationsInForce(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	cfg.RetentionDays = 3650
	book := processor.NewOrderBook()
	home := orb.Point{37.62, 55.75}
	book.Put(&processor.Order{PatientID: "p-misloc", Home: home, RadiusM: 50, StartsAt: dataStart.Add(-24 * time.Hour).UnixMilli(), EndsAt: math.MaxInt64})
	rules := processor.DefaultRules()
	rules.SignalTimeout = 48 * time.Hour
	eng := processor.NewEngine(rules, book)
	var tracks []processor.Track
	var events []processor.Event
	at := func(min float64, east float64, source string, checkin bool) {
		lon := home[0] + east/(111320*math.Cos(home[1]*math.Pi/180))
		p := processor.Ping{PatientID: []byte("p-misloc"), TS: dataStart.Add(time.Duration(min * float64(time.Minute))).UnixMilli(),
			Lat: home[1], Lon: lon, Accuracy: 20, Source: []byte(source)}
		if checkin {
			p.Accuracy, p.Checkin = 8, processor.Checkin{Present: true, Verified: true, Method: []byte("selfie")}
		}
		var out processor.Outcome
		var tr processor.Track
		events, out, tr = eng.Process(&p, nil, events)
		if out == processor.Accepted {
			tracks = append(tracks, tr)
		}
	}
	for _, m := range []float64{0, 3, 6} { // day one: the access point, then the answer
		at(m, 700, "wifi", false)
	}
	at(8, 3, "gps", true)
	for _, m := range []float64{1440, 1443} { // day two: the access point again, then a real walk there
		at(m, 700, "wifi", false)
	}
	for _, m := range []float64{1446, 1449, 1452} {
		at(m, 700, "gps", false)
	}
	var breach *processor.Event
	for i := range events {
		if events[i].Type == processor.BreachStarted && events[i].At > dataStart.Add(time.Hour).UnixMilli() {
			breach = &events[i]
		}
	}
	if breach == nil || eng.KnownMislocations() != 1 {
		t.Fatalf("the scenario gave %d known mislocations and no second-day breach: %v", eng.KnownMislocations(), events)
	}
	sink := chtest.OpenSink(t, cfg, "")
	sink.Rules = rules
	chtest.WriteOutput(t, sink, &pipeline.Output{Rows: tracks, Events: events})
	r, err := qch.NewReader(context.Background(), cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := r.Case(context.Background(), breach.IDString())
	if err != nil {
		t.Fatal(err)
	}
	flagged := 0
	for _, p := range c.Pings {
		if p.Flag == "known_mislocation" && p.State == "uncertain" && p.Source == "network" {
			flagged++
		}
	}
	if len(c.Mislocations) != 1 || c.Mislocations[0].RadiusM != 100 || flagged != 2 ||
		c.Mislocations[0].ValidTo != dataStart.Add(8*time.Minute+336*time.Hour).UnixMilli() {
		t.Errorf("mislocations %+v, %d flagged pings; want the one circle of 100 m and 2 flagged", c.Mislocations, flagged)
	}
	page, err := dossier.Render(c, nil)
	if err != nil || !strings.Contains(string(page), "A learned circle made pings of this window uncertain.") {
		t.Errorf("render: %v", err)
	}
}
