package processor_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/geo/synth"
	"github.com/qfence/qfence/processor"
)

// Compare runs with:
//   go test -run '^$' -bench . -count 6 ./processor/ | tee new.txt; benchstat old.txt new.txt
// `make bench` runs them all; BENCHMARKS.md keeps the table.

// pingBench is n patients with homes around Moscow and one ping message per
// patient whose ts (the last 13 digits before '}') is patched in place, so
// every round of messages is new, in-order data for every patient.
type pingBench struct {
	book  *processor.OrderBook
	zones *geo.Zones
	msgs  [][]byte
	base  int64
}

var benchEnvs = map[string]*pingBench{}

// newPingBench builds (once per shape) n orders and messages placed `away`
// metres from home with accuracy acc.
func newPingBench(n, zones int, away, acc float64) *pingBench {
	key := fmt.Sprint(n, zones, away, acc)
	if e := benchEnvs[key]; e != nil {
		return e
	}
	r := rand.New(rand.NewPCG(uint64(n), uint64(zones)))
	e := &pingBench{book: processor.NewOrderBook(), base: t0}
	e.zones = geo.NewZones(synth.Zones(r, synth.Moscow, 100, zones-100))
	e.msgs = make([][]byte, n)
	for i := range n {
		id := fmt.Sprintf("p-%07d", i)
		home := synth.Point(r, synth.Moscow)
		e.book.Put(&processor.Order{PatientID: id, Home: home, RadiusM: 50, StartsAt: t0 - 86400_000, EndsAt: math.MaxInt64, District: "district-001"})
		p := synth.Offset(home, away, 0)
		e.msgs[i] = fmt.Appendf(nil, `{"patient_id":%q,"lat":%.6f,"lon":%.6f,"accuracy_m":%g,"ts":%d}`, id, p[1], p[0], acc, t0)
	}
	benchEnvs[key] = e
	return e
}

// passesFor is a pass for each of the n patients of newPingBench, valid
// for the whole benchmark and any distance.
func passesFor(n int) *processor.PassBook {
	pb := processor.NewPassBook()
	for i := range n {
		pb.Put(&processor.Pass{ID: fmt.Sprintf("X-%07d", i), PatientID: fmt.Sprintf("p-%07d", i), Purpose: processor.Medical,
			ValidFrom: t0 - 3600_000, ValidTo: t0 + 1000*86400_000})
	}
	return pb
}

// BenchmarkHeapPerPass measures what a held pass costs: the heap the book
// grows by per pass, at 100k passes. The topic's other passes (people under
// no order) are not held at all.
func BenchmarkHeapPerPass(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		pb := passesFor(100_000)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/100_000, "B/pass")
		runtime.KeepAlive(pb)
	}
}

// next patches message i of the stream with its ts: every patient pings
// every 30 s, in patient order within a round.
func (e *pingBench) next(i int) []byte {
	n := len(e.msgs)
	m := e.msgs[i%n]
	ts := e.base + int64(i/n)*30_000 + int64(i%n)*30_000/int64(n)
	for k := len(m) - 2; k >= len(m)-14; k-- {
		m[k] = byte('0' + ts%10)
		ts /= 10
	}
	return m
}

type jsonPing struct {
	PatientID string  `json:"patient_id"`
	TS        any     `json:"ts"`
	Lat       float64 `json:"lat"`
	Lon       float64 `json:"lon"`
	Accuracy  float64 `json:"accuracy_m"`
	Mock      bool    `json:"mock"`
	DeviceID  string  `json:"device_id"`
	Source    string  `json:"source"`
}

// BenchmarkDecodeDecide is the per-ping hot path: decode the message and
// decide it, for a ping that produces no event. ratio-vs-json is the whole
// step's time over encoding/json.Unmarshal of the same message into a struct,
// measured in the same run (the target is < 1).
func BenchmarkDecodeDecide(b *testing.B) {
	for _, c := range []struct {
		name      string
		n         int
		away, acc float64
		passes    bool // a pass for every patient, valid throughout
	}{
		{"patients=100k/zones=5k/at-home", 100_000, 5, 10, false},
		{"patients=100k/zones=5k/uncertain", 100_000, 120, 60, false}, // not at home: queries the zones
		{"patients=1M/zones=5k/at-home", 1_000_000, 5, 10, false},
		// A ping at home must not pay for passes; one 1 km out is excused by
		// its patient's pass (after the zones are queried, as uncertain).
		{"patients=100k/zones=5k/passes=100k/at-home", 100_000, 5, 10, true},
		{"patients=100k/zones=5k/passes=100k/covered", 100_000, 1000, 10, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newPingBench(c.n, 5000, c.away, c.acc)
			jsonNs := jsonBaseline(e)
			eng := processor.NewEngine(processor.DefaultRules(), e.book)
			if c.passes {
				eng.UsePasses(passesFor(c.n))
			}
			dec := processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50}
			var (
				p      processor.Ping
				events []processor.Event
				i      int
			)
			for ; i < c.n; i++ { // first round: creates every patient's state
				_ = dec.Decode(e.next(i), 0, &p)
				events, _, _ = eng.Process(&p, e.zones, events[:0])
			}
			b.SetBytes(int64(len(e.msgs[0])))
			b.ReportAllocs()
			start := i
			for b.Loop() {
				if err := dec.Decode(e.next(i), 0, &p); err != nil {
					b.Fatal(err)
				}
				var out processor.Outcome
				events, out, _ = eng.Process(&p, e.zones, events[:0])
				if out != processor.Accepted || len(events) != 0 {
					b.Fatalf("ping %d: outcome %s with %d events, want accepted with none", i, out, len(events))
				}
				i++
			}
			perOp := float64(b.Elapsed().Nanoseconds()) / float64(i-start)
			b.ReportMetric(perOp/jsonNs, "ratio-vs-json")
		})
	}
}

// jsonBaseline measures encoding/json.Unmarshal of the same messages, in
// ns per message: the median of five timed runs of 200k messages.
// (testing.Benchmark cannot nest inside a benchmark.)
func jsonBaseline(e *pingBench) float64 {
	var p jsonPing
	runs := make([]float64, 5)
	for r := range runs {
		start := time.Now()
		for i := range 200_000 {
			if err := json.Unmarshal(e.msgs[i%len(e.msgs)], &p); err != nil {
				panic(err)
			}
		}
		runs[r] = float64(time.Since(start).Nanoseconds()) / 200_000
	}
	slices.Sort(runs)
	return runs[len(runs)/2]
}

// BenchmarkDecode compares the ping decoder alone with encoding/json.
func BenchmarkDecode(b *testing.B) {
	msg := []byte(`{"patient_id":"p-0001234","ts":"2026-04-02T10:21:00.123+03:00","lat":55.760123,"lon":37.629045,"accuracy_m":8.5,"device_id":"a1b2c3","source":"gps"}`)
	b.Run("decoder=qfence", func(b *testing.B) {
		dec := processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50}
		var p processor.Ping
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if err := dec.Decode(msg, 0, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoder=encoding-json", func(b *testing.B) {
		var p jsonPing
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if err := json.Unmarshal(msg, &p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHeapPerPatient reports the heap that n patients cost: the order
// (decoded from JSON, as from Kafka), its place in the order book, and the
// patient's state after one ping. Run it with -benchtime 1x.
func BenchmarkHeapPerPatient(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		for _, device := range []bool{false, true} {
			name := "patients=" + strconv.Itoa(n/1000) + "k"
			if device {
				name += "/device_id=36B"
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					b.ReportMetric(heapPerPatientOf(b, n, device), "bytes/patient")
				}
			})
		}
	}
}

func heapPerPatient(tb testing.TB, n int) float64 { return heapPerPatientOf(tb, n, false) }

// heapPerPatientOf is heapPerPatient with, when device, a 36-byte
// device_id (a UUID) enrolled on every order and sent with every ping.
func heapPerPatientOf(tb testing.TB, n int, device bool) float64 {
	r := rand.New(rand.NewPCG(3, uint64(n)))
	lines := make([][]byte, n)
	for i := range lines {
		h := synth.Point(r, synth.Moscow)
		lines[i] = fmt.Appendf(nil, `{"patient_id":"p-%07d","home":{"lat":%.6f,"lon":%.6f},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"district-%03d"}`,
			i, h[1], h[0], r.IntN(125))
		if device {
			lines[i] = fmt.Appendf(lines[i][:len(lines[i])-1], `,"device_id":"%08x-0000-4000-8000-%012x"}`, i, i)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	book := processor.NewOrderBook()
	eng := processor.NewEngine(processor.DefaultRules(), book)
	for _, l := range lines {
		o, err := processor.DecodeOrder(nil, l, 0, nil)
		if err != nil {
			tb.Fatal(err)
		}
		book.Put(o)
		p := processor.Ping{PatientID: []byte(o.PatientID), TS: t0, Lat: o.Home[1], Lon: o.Home[0], Accuracy: 10, DeviceID: []byte(o.DeviceID())}
		_, _, _ = eng.Process(&p, nil, nil)
		if device && len(o.DeviceID()) != 36 {
			tb.Fatalf("order enrols %q", o.DeviceID())
		}
	}
	eng.TakeDirty(nil)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if eng.Patients() != n || book.Len() != n {
		tb.Fatalf("built %d states and %d orders, want %d", eng.Patients(), book.Len(), n)
	}
	runtime.KeepAlive(book)
	runtime.KeepAlive(eng)
	runtime.KeepAlive(lines) // input, not patients: it must not be freed in between
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestHeapPerPatientBudget holds the memory budget of issue 2: a patient
// (order, book entry and state) costs at most 300 bytes of heap.
func TestHeapPerPatientBudget(t *testing.T) {
	if got := heapPerPatient(t, 100_000); got > 300 {
		t.Errorf("a patient costs %.0f bytes of heap, the budget is 300", got)
	} else {
		t.Logf("%.0f bytes per patient", got)
	}
}

// TestHeapPerPatientWithDeviceBudget: a 36-byte device_id on every order
// (and every ping) keeps a patient within 340 bytes of heap.
func TestHeapPerPatientWithDeviceBudget(t *testing.T) {
	if got := heapPerPatientOf(t, 100_000, true); got > 340 {
		t.Errorf("a patient with a device_id costs %.0f bytes of heap, the budget is 340", got)
	} else {
		t.Logf("%.0f bytes per patient with a 36-byte device_id", got)
	}
}

// BenchmarkDecodeOrder is the orders reader's cost per order: at start it
// reads every order of the topic before it is ready.
func BenchmarkDecodeOrder(b *testing.B) {
	value := []byte(`{"patient_id":"p-000123","home":{"lat":55.7558,"lon":37.6173},"radius_m":50,` +
		`"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"CAO"}`)
	key := []byte("p-000123")
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := processor.DecodeOrder(key, value, 4096, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSweep is a partition's sweep over its patients, as the
// watermark crosses a sweep point (every 3 minutes of event time): with
// nothing due, and with random check-ins on (3 a day each, no quiet
// hours), whose schedule every patient's sweep checks and whose requests
// and expiries it emits.
//
//	go test -run '^$' -bench Sweep -count 5 ./processor/
func BenchmarkSweep(b *testing.B) {
	for _, random := range []int{0, 3} {
		b.Run(fmt.Sprintf("patients=100k/random=%d", random), func(b *testing.B) {
			const n = 100_000
			r := processor.DefaultRules()
			r.SignalTimeout = 7 * 24 * time.Hour // nobody pings again: no signal losses
			r.Checkins.RandomPerDay, r.Checkins.QuietStart, r.Checkins.QuietEnd = random, 0, 0
			book := processor.NewOrderBook()
			eng := processor.NewEngine(r, book)
			rng := rand.New(rand.NewPCG(5, 5))
			var ev []processor.Event
			pings := make([]processor.Ping, n)
			for i := range pings {
				h := synth.Point(rng, synth.Moscow)
				id := fmt.Sprintf("p-%07d", i)
				book.Put(&processor.Order{PatientID: id, Home: h, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
				pings[i] = processor.Ping{PatientID: []byte(id), Lat: h[1], Lon: h[0], Accuracy: 10}
			}
			wm, events := t0, 0
			ping := func() { // every patient pings once (so no signal is lost within 7 days)
				for i := range pings {
					pings[i].TS = wm + int64(i)
					ev, _, _ = eng.Process(&pings[i], nil, ev[:0])
				}
				wm += n
				eng.TakeDirty(nil)
			}
			ping()
			b.ReportAllocs()
			sweeps := 0
			for b.Loop() {
				if sweeps++; sweeps%1000 == 0 { // 50 hours of event time
					b.StopTimer()
					ping()
					b.StartTimer()
				}
				wm += 180_000
				ev = eng.Advance(wm, ev[:0]) // moves the watermark (the sweep cadence follows signal_timeout)
				ev = eng.Sweep(ev)
				events += len(ev)
				eng.TakeDirty(nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/patient")
			b.ReportMetric(float64(events)/float64(b.N), "events/sweep")
		})
	}
}

// BenchmarkVerifyAttestation is the cost of judging one attested check-in
// (contract 2.3): parsing the JWS, the signature, every claim.
// benchstat: go test -run '^$' -bench VerifyAttestation -count 6 ./processor/ | benchstat -
func BenchmarkVerifyAttestation(b *testing.B) {
	for _, k := range []struct {
		alg string
		key any
		kid string
	}{{"EdDSA", attestKey, "k1"}, {"ES256", attestKeyEC, "k2"}} {
		b.Run("alg="+k.alg, func(b *testing.B) {
			p, st := attested()
			p.Attestation = sign(b, st, k.key, k.kid)
			att := processor.NewAttestation(attestKeys(b), "qfence", processor.IntegrityDevice)
			b.ReportAllocs()
			for b.Loop() {
				if got := att.Verify(&p); got != processor.CheckinCounted {
					b.Fatal(got)
				}
			}
		})
	}
}

// BenchmarkEventJSON is the cost of one breach_ended event with five
// pings of evidence on the violations topic (its id included), the event
// every trip ends with.
func BenchmarkEventJSON(b *testing.B) {
	ev := processor.Event{Type: processor.BreachEnded, PatientID: "p-0000042", At: t0 + 600_000, StartedAt: t0, EndedAt: t0 + 600_000,
		DurationS: 600, Home: [2]float64{37.6173, 55.7558}, RadiusM: 50, District: "district-001", MaxDistance: 912.5,
		Confidence: &processor.Confidence{OutsidePings: 5, MinMarginM: 801.2, DwellS: 480}}
	for i := range 5 {
		ev.Evidence = append(ev.Evidence, processor.Evidence{TS: t0 + int64(i)*120_000, Lat: 55.7638 + float64(i)*1e-4, Lon: 37.6273,
			Accuracy: 12, Distance: 900 + float32(i), State: processor.Outside})
	}
	ev.Location = ev.Evidence[4]
	rules := processor.DefaultRules()
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		buf = ev.AppendJSON(buf[:0], &rules)
	}
	b.ReportMetric(float64(len(buf)), "bytes/event")
}

// BenchmarkCheckinPing is a check-in ping end to end in the engine:
// decoded from its JSON, its attestation verified (EdDSA), answering, and
// judged at home, as the partition loop does it. A patient sends a few a
// day; the cost is the attestation's.
func BenchmarkCheckinPing(b *testing.B) {
	book := processor.NewOrderBook()
	o, err := processor.DecodeOrder(nil, []byte(`{"patient_id":"p-1","home":{"lat":55.7558,"lon":37.6173},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`), 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	book.Put(o)
	rules := processor.DefaultRules()
	rules.Checkins.Attest = processor.NewAttestation(attestKeys(b), "qfence", processor.IntegrityDevice)
	eng := processor.NewEngine(rules, book)
	msgs := make([][]byte, b.N)
	for i := range msgs {
		p := processor.Ping{PatientID: []byte("p-1"), TS: t0 + int64(i)*1000, Lat: 55.7558, Lon: 37.6173, Accuracy: 5, Source: []byte("gps"),
			Checkin: processor.Checkin{Present: true, Verified: true, Method: []byte("selfie")}}
		jws := sign(b, processor.StatementOf(&p, "qfence", processor.IntegrityDevice), attestKey, "k1")
		msgs[i] = fmt.Appendf(nil, `{"patient_id":"p-1","ts":%d,"lat":55.7558,"lon":37.6173,"accuracy_m":5,"source":"gps","checkin":{"verified":true,"method":"selfie","attestation":%q}}`,
			p.TS, jws)
	}
	dec := processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50}
	var (
		p      processor.Ping
		events []processor.Event
	)
	b.SetBytes(int64(len(msgs[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := dec.Decode(msgs[i], 0, &p); err != nil {
			b.Fatal(err)
		}
		var t processor.Track
		events, _, t = eng.Process(&p, nil, events[:0])
		if !t.Checkin.Counted {
			b.Fatalf("check-in %d did not count", i)
		}
	}
}

// BenchmarkKnownMislocationPing is the cost of a network fix that falls in
// a known mislocation (contract 2.4): each of 100k patients whose Wi-Fi put
// it 700 m from home (outside any allowed zone: 92 % of them) has learned
// a circle there (two Wi-Fi fixes answered by a GNSS check-in at home),
// and each ping is a Wi-Fi fix inside it: uncertain, flagged, extending the
// circle, no event. Compare its ns/op with DecodeDecide's at-home case of
// the same run.
func BenchmarkKnownMislocationPing(b *testing.B) {
	const n = 100_000
	e := newPingBench(n, 5000, 700, 20)
	eng := processor.NewEngine(processor.DefaultRules(), e.book)
	dec := processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50}
	var (
		p      processor.Ping
		events []processor.Event
		msgs   [][]byte
	)
	for i := range n { // a run of two Wi-Fi fixes, then the answer at home
		for _, ts := range []int64{t0, t0 + 60_000} {
			_ = dec.Decode(e.next(i), 0, &p)
			p.TS, p.Source = ts+int64(i), []byte("wifi")
			events, _, _ = eng.Process(&p, e.zones, events[:0])
		}
		o := e.book.Get(p.PatientID)
		p = processor.Ping{PatientID: []byte(o.PatientID), TS: t0 + 120_000 + int64(i), Lat: o.Home[1], Lon: o.Home[0], Accuracy: 8,
			Source: []byte("gps"), Checkin: processor.Checkin{Present: true, Verified: true}}
		events, _, _ = eng.Process(&p, e.zones, events[:0])
		if len(events) > 0 && events[0].Type == processor.MislocationLearned {
			msgs = append(msgs, bytes.Replace(e.msgs[i], []byte(`,"lat"`), []byte(`,"source":"wifi","lat"`), 1))
		}
	}
	if len(msgs) < n*9/10 || eng.KnownMislocations() != len(msgs) {
		b.Fatalf("%d circles learned, %d held, of %d patients", len(msgs), eng.KnownMislocations(), n)
	}
	w := &pingBench{msgs: msgs, base: t0 + 300_000} // after the answers, before any signal is lost
	b.SetBytes(int64(len(msgs[0])))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := dec.Decode(w.next(i), 0, &p); err != nil {
			b.Fatal(err)
		}
		var tr processor.Track
		var out processor.Outcome
		events, out, tr = eng.Process(&p, e.zones, events[:0])
		if out != processor.Accepted || len(events) != 0 || tr.Flag != processor.FlagKnownMislocation {
			b.Fatalf("ping %d: %s, %d events, flag %q; want accepted, none, known_mislocation", i, out, len(events), tr.Flag)
		}
		i++
	}
}

// BenchmarkHeapPerOrder reports the heap one order costs in the order
// book, decoded from JSON as from Kafka (what every instance holds of the
// whole orders table). Run it with -benchtime 1x.
//
//	go test -run '^$' -bench HeapPerOrder -benchtime 1x ./processor/
func BenchmarkHeapPerOrder(b *testing.B) {
	const n = 1_000_000
	r := rand.New(rand.NewPCG(5, n))
	lines := make([][]byte, n)
	for i := range lines {
		h := synth.Point(r, synth.Moscow)
		lines[i] = fmt.Appendf(nil, `{"patient_id":"p-%07d","home":{"lat":%.6f,"lon":%.6f},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"district-%03d"}`,
			i, h[1], h[0], r.IntN(125))
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		book := processor.NewOrderBook()
		for _, l := range lines {
			o, err := processor.DecodeOrder(nil, l, 0, nil)
			if err != nil {
				b.Fatal(err)
			}
			book.Put(o)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/order")
		runtime.KeepAlive(book)
	}
}
