package processor_test

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/qfence/qfence/processor"
)

// seed returns the seed of a randomised test: QFENCE_SEED when set, else a
// fresh one. It is always printed, so a failure can be replayed.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := rand.Uint64()
	if env := os.Getenv("QFENCE_SEED"); env != "" {
		v, err := strconv.ParseUint(env, 10, 64)
		if err != nil {
			t.Fatalf("QFENCE_SEED=%q: %v", env, err)
		}
		s = v
	}
	t.Logf("seed %d (rerun with QFENCE_SEED=%d)", s, s)
	return s
}

// randomPings makes a messy day for n patients: noise, trips, clinic visits,
// silences, teleports, mock providers, late and duplicate deliveries.
func randomPings(r *rand.Rand, n, count int) []processor.Ping {
	type walker struct {
		east, north float64
		silentUntil int64
		last        int64
		misUntil    int64 // a mislocated access point is all the phone sees
	}
	ws := make([]walker, n)
	clock := t0
	out := make([]processor.Ping, 0, count)
	for len(out) < count {
		clock += r.Int64N(4 * 60_000 / int64(n)) // each patient pings about every two minutes
		i := r.IntN(n)
		w := &ws[i]
		if clock < w.silentUntil || clock-w.last < 10_000 {
			continue
		}
		if r.IntN(300) == 0 {
			w.silentUntil = clock + 40*60_000 // a silence longer than the signal timeout
		}
		w.last = clock
		switch k := r.IntN(100); {
		case k < 60: // home, with noise
			w.east, w.north = r.NormFloat64()*20, r.NormFloat64()*20
		case k < 85: // a walk
			w.east += r.NormFloat64() * 150
			w.north += r.NormFloat64() * 150
		case k < 88: // the clinic
			w.east, w.north = 2000, 0
		}
		ts := clock
		if r.IntN(40) == 0 {
			ts -= r.Int64N(600_000) // late
		}
		p := east(w.east)
		p[1] += w.north / 111195
		if r.IntN(200) == 0 {
			p[0] += 0.5 // a teleport
		}
		ping := processor.Ping{PatientID: []byte(fmt.Sprintf("p%d", i)), TS: ts, Lat: p[1], Lon: p[0],
			Accuracy: math.Abs(r.NormFloat64()*30) + 3, Mock: r.IntN(300) == 0}
		if i%5 == 0 { // an enrolled phone, sometimes with a second phone beside it
			ping.DeviceID = []byte(fmt.Sprintf("phone-%d", i))
			switch r.IntN(30) {
			case 0, 1:
				ping.DeviceID = []byte(fmt.Sprintf("spare-%d", i))
			case 2:
				ping.DeviceID = nil
			}
		}
		if r.IntN(3) == 0 {
			ping.Source = []byte([]string{"gps", "wifi", "fused"}[r.IntN(3)])
		}
		// Some phones see only a mislocated access point now and then, always
		// placed at the same wrong spot 700 m away; their owner, at home,
		// answers with a GNSS check-in.
		if i%11 == 3 && clock >= w.misUntil && r.IntN(40) == 0 {
			w.misUntil = clock + 25*60_000
		}
		if clock < w.misUntil {
			wrong := east(700 + r.NormFloat64()*10)
			ping.Lat, ping.Lon, ping.Accuracy, ping.Source, ping.Mock = wrong[1], wrong[0], 20, []byte("wifi"), false
			if r.IntN(5) == 0 {
				at := east(r.NormFloat64() * 5)
				ping.Lat, ping.Lon, ping.Accuracy, ping.Source = at[1], at[0], 8, []byte("gps")
				ping.Checkin = processor.Checkin{Present: true, Verified: true, Method: []byte("selfie")}
				st := processor.StatementOf(&ping, "qfence", processor.IntegrityDevice)
				jws, err := st.Sign(attestKey, "k1")
				if err != nil {
					panic(err)
				}
				ping.Attestation = []byte(jws)
				w.misUntil = 0
			}
			out = append(out, ping)
			continue
		}
		if r.IntN(25) == 0 { // a check-in: mostly verified, some failing the face match
			ping.Checkin = processor.Checkin{Present: true, Verified: r.IntN(5) != 0, Method: []byte("selfie")}
			// Most attested as they are; some forged.
			st := processor.StatementOf(&ping, "qfence", processor.IntegrityDevice)
			switch r.IntN(6) {
			case 0:
				st.Fix.Lat += 0.01 // the fix the service saw is not this one
			case 1:
				st = processor.Statement{} // no attestation at all
			}
			if st.Sub != "" {
				jws, err := st.Sign(attestKey, "k1")
				if err != nil {
					panic(err)
				}
				ping.Attestation = []byte(jws)
			}
		}
		out = append(out, ping)
		if r.IntN(50) == 0 {
			out = append(out, ping) // a duplicate delivery
		}
	}
	return out
}

func equivalenceBook(n int) *processor.OrderBook {
	book := processor.NewOrderBook()
	for i := 0; i < n; i++ {
		o := &processor.Order{PatientID: fmt.Sprintf("p%d", i), Home: home, RadiusM: 50, StartsAt: t0, EndsAt: math.MaxInt64, District: "district-a"}
		if i%7 == 0 {
			o.EndsAt = t0 + 6*3600_000 // some orders end mid-day
		}
		if i%5 == 0 {
			o.EnrolDevice(fmt.Sprintf("phone-%d", i))
		}
		book.Put(o)
	}
	return book
}

func encode(r *processor.Rules, events []processor.Event) []byte {
	var b []byte
	for i := range events {
		b = events[i].AppendJSON(b, r)
		b = append(b, '\n')
	}
	return b
}

// TestBatchingAndRestartsDoNotChangeEvents: the events of a stream are the
// same, byte for byte, processed in one go or in random batches with the
// state checkpointed (as the pipeline does, through TakeDirty into a
// changelog) and restored into a fresh engine between batches.
func TestBatchingAndRestartsDoNotChangeEvents(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 1))
	const patients = 60
	pings := randomPings(r, patients, 20000)
	rules := processor.DefaultRules()
	rules.Checkins.RandomPerDay = 3
	rules.Checkins.Attest = processor.NewAttestation(attestKeys(t), "qfence", processor.IntegrityDevice)
	zones := testZones()

	whole := processor.NewEngine(rules, equivalenceBook(patients))
	var want []processor.Event
	for i := range pings {
		want, _, _ = whole.Process(&pings[i], zones, want)
	}
	want = whole.Sweep(want)

	book := equivalenceBook(patients)
	changelog := map[string][]byte{}
	var meta []byte
	var got []processor.Event
	batches := 0
	for start := 0; start < len(pings); batches++ {
		eng := processor.NewEngine(rules, book)
		for id, st := range changelog {
			if err := eng.Restore(id, st); err != nil {
				t.Fatal(err)
			}
		}
		if meta != nil {
			if _, err := eng.UnmarshalMeta(meta); err != nil {
				t.Fatal(err)
			}
		}
		end := min(len(pings), start+1+r.IntN(1500))
		for i := start; i < end; i++ {
			got, _, _ = eng.Process(&pings[i], zones, got)
		}
		if end == len(pings) {
			got = eng.Sweep(got)
		}
		for _, r := range eng.TakeDirty(nil) {
			if r.Value == nil {
				delete(changelog, r.Key)
			} else {
				changelog[r.Key] = r.Value
			}
		}
		meta = eng.MarshalMeta(0)
		start = end
	}
	if len(want) < 50 {
		t.Fatalf("only %d events: the generator no longer exercises the rules", len(want))
	}
	counts := map[processor.EventType]int{}
	for _, e := range want {
		counts[e.Type]++
	}
	for _, typ := range processor.EventTypes {
		if counts[typ] == 0 {
			t.Errorf("no %s event: the generator no longer exercises every rule", typ)
		}
	}
	if a, b := encode(&rules, want), encode(&rules, got); !bytes.Equal(a, b) {
		t.Fatalf("%d batches gave %d events, one go gave %d; first difference at byte %d", batches, len(got), len(want), firstDiff(a, b))
	}
	t.Logf("%d events identical across %d batches; by type %v", len(want), batches, counts)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestStateRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 2))
	book := equivalenceBook(20)
	eng := processor.NewEngine(processor.DefaultRules(), book)
	pings := randomPings(r, 20, 3000)
	zones := testZones()
	for i := range pings {
		_, _, _ = eng.Process(&pings[i], zones, nil)
	}
	n := 0
	eng.Snapshot(func(id string, b []byte) {
		n++
		var st processor.State
		if err := st.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if again := st.AppendBinary(nil); !bytes.Equal(again, b) {
			t.Fatalf("%s: state does not round-trip", id)
		}
		for cut := 0; cut < len(b); cut++ {
			if err := st.UnmarshalBinary(b[:cut]); err == nil {
				t.Fatalf("%s: a state cut at %d of %d bytes was accepted", id, cut, len(b))
			}
		}
	})
	if n == 0 {
		t.Fatal("no states to check")
	}
}
