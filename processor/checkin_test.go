package processor_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/processor"
)

func verified(t tping) tping { t.checkin = 'v'; return t }
func failed(t tping) tping   { t.checkin = 'f'; return t }
func naming(min float64, t tping) tping {
	t.request = min
	return t
}

// Check-ins (contract 2.2), with the default rules: breach after 5m,
// escalation 15m after breach_started, requests open for 20m. A breach
// that starts at minute 5 asks at 5; its request expires at 25; the
// breach escalates at 20.
func TestCheckins(t *testing.T) {
	p2 := func(min float64) step { tp := of("p2", in(min)); return step{ping: &tp} }
	tests := []struct {
		name  string
		steps []step
		want  string
	}{
		{"a breach asks at its start; unanswered, the request is missed at expiry",
			pings(out(0), out(5), out(10), out(26)),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_escalated@20(0) p1:checkin_missed@25(5)"},
		{"a verified check-in at home during the dwell: no breach",
			pings(out(0), out(3), verified(in(4)), out(6), out(10)),
			""},
		{"a verified check-in at home ends an open breach at once, ended_at its ts",
			pings(out(0), out(5), verified(in(8))),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_ended@8(0..8) checkin"},
		{"a verified check-in at home during a return ends the breach at the return's first ping",
			pings(out(0), out(5), in(7), verified(in(8))),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_ended@8(0..7)"},
		{"a verified check-in outside answers the request and ends nothing",
			pings(out(0), out(5), verified(out(8)), out(21), out(30)),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_escalated@20(0)"},
		{"a failed check-in answers the request with checkin_failed; at home it is one inside ping",
			pings(out(0), out(5), failed(in(8)), in(9)),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:checkin_failed@8(5) p1:breach_ended@9(0..8)"},
		{"an answer one second before expiry counts",
			pings(out(0), out(5), verified(out(24.99)), out(26)),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_escalated@20(0)"},
		{"an answer at exactly expires_at is too late, but a verified check-in at home still ends the breach",
			pings(out(0), out(5), verified(in(25))),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_escalated@20(0) p1:checkin_missed@25(5) p1:breach_ended@25(0..25) checkin"},
		{"a signal loss asks; the silence that follows is a missed check-in",
			[]step{{ping: &[]tping{in(0)}[0]}, p2(31), p2(51)},
			"p1:signal_lost@30(0) p1:checkin_requested@30(30) signal_lost p1:checkin_missed@50(30)"},
		{"a check-in answers the oldest open request first",
			append([]step{{ping: &[]tping{in(0)}[0]}, p2(31)}, pings(out(32), out(37), verified(out(40)), verified(out(41)), out(60))...),
			"p1:signal_lost@30(0) p1:checkin_requested@30(30) signal_lost p1:signal_restored@32(0..32) " +
				"p1:breach_started@37(32) p1:checkin_requested@37(37) breach_started p1:breach_escalated@52(32)"},
		{"a check-in naming a request answers that one; the other is missed",
			append([]step{{ping: &[]tping{in(0)}[0]}, p2(31)}, pings(out(32), out(37), naming(37, verified(out(40))), out(60))...),
			"p1:signal_lost@30(0) p1:checkin_requested@30(30) signal_lost p1:signal_restored@32(0..32) " +
				"p1:breach_started@37(32) p1:checkin_requested@37(37) breach_started p1:checkin_missed@50(30) p1:breach_escalated@52(32)"},
		{"a check-in naming no open request answers none",
			pings(out(0), out(5), naming(99, verified(out(8))), out(26)),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_escalated@20(0) p1:checkin_missed@25(5)"},
		{"a verified check-in at home naming no open request (000…0, or a copy of an earlier one) ends nothing",
			pings(out(0), out(5), naming(0.5, verified(in(8))), out(9), out(26)),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_escalated@20(0) p1:checkin_missed@25(5)"},
		{"a check-in dated before its request's at answers nothing",
			append([]step{{ping: &[]tping{in(0)}[0]}, p2(31)}, pings(verified(in(29.5)), in(52))...),
			"p1:signal_lost@30(0) p1:checkin_requested@30(30) signal_lost p1:signal_restored@29.5(0..29.5) p1:checkin_missed@50(30)"},
		{"a check-in from a mock location answers but proves no presence",
			pings(out(0), out(5), verified(mocked(in(8))), out(21), out(30)),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:implausible_location@8(8) mock_provider p1:breach_escalated@20(0)"},
		{"a late check-in answers nothing",
			pings(out(0), out(5), out(9), verified(in(8)), out(26)),
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_escalated@20(0) p1:checkin_missed@25(5)"},
		{"an unasked failed check-in is still checkin_failed",
			pings(in(0), failed(in(1))),
			"p1:checkin_failed@1(1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, events := runRules(t, processor.DefaultRules(), nil, tt.steps)
			if s := strings.Join(events, " "); s != tt.want {
				t.Errorf("events:\n got  %s\n want %s", s, tt.want)
			}
		})
	}
}

// The check-in events carry request_id (the checkin_requested's event_id)
// and expires_at; the pings table learns which request a check-in answered.
func TestCheckinEventFields(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	eng := processor.NewEngine(processor.DefaultRules(), book)
	var ev []processor.Event
	var rows []processor.Track
	for _, tp := range []tping{out(0), out(5), failed(out(7))} {
		p := ping(tp)
		var tr processor.Track
		ev, _, tr = eng.Process(&p, nil, ev)
		rows = append(rows, tr)
	}
	if len(ev) != 3 {
		t.Fatalf("events %d, want breach_started, checkin_requested, checkin_failed", len(ev))
	}
	req, fail := ev[1], ev[2]
	if req.RequestID != req.ID() || fail.RequestID != req.ID() || req.ExpiresAt != t0+25*60_000 || fail.ExpiresAt != req.ExpiresAt {
		t.Errorf("request %x (id %x) expires %d; failed names %x expires %d", req.RequestID, req.ID(), req.ExpiresAt, fail.RequestID, fail.ExpiresAt)
	}
	r := processor.DefaultRules()
	js := string(req.AppendJSON(nil, &r))
	if !strings.Contains(js, fmt.Sprintf(`"request_id":"%s","expires_at":"2026-04-02T10:25:00.000Z"`, req.IDString())) {
		t.Errorf("checkin_requested JSON lacks request_id/expires_at: %s", js)
	}
	if row := rows[2]; !row.Checkin.Present || row.Checkin.Verified || row.Checkin.RequestID != req.ID() || string(row.Checkin.Method) != "selfie" {
		t.Errorf("row of the check-in: %+v", row.Checkin)
	}
	bs := ev[0].AppendJSON(nil, &r)
	if strings.Contains(string(bs), "request_id") {
		t.Errorf("a breach event carries request_id: %s", bs)
	}
}

// Open requests survive a checkpoint: an answer after a restore closes the
// request asked before it, and one never answered is missed after it.
func TestOpenRequestsSurviveARestore(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	r := processor.DefaultRules()
	r.Checkins.RandomPerDay = 2
	run := func(eng *processor.Engine, ts ...tping) (out []string) {
		var ev []processor.Event
		for _, tp := range ts {
			p := ping(tp)
			ev, _, _ = eng.Process(&p, nil, ev)
		}
		for _, e := range ev {
			out = append(out, describe(e))
		}
		return out
	}
	restored := func(a *processor.Engine) *processor.Engine {
		b := processor.NewEngine(r, book)
		a.Snapshot(func(id string, state []byte) {
			if err := b.Restore(id, state); err != nil {
				t.Fatal(err)
			}
		})
		return b
	}
	a := processor.NewEngine(r, book)
	run(a, out(0), out(5))
	if got := strings.Join(run(restored(a), verified(in(8))), " "); got != "p1:breach_ended@8(0..8) checkin" {
		t.Errorf("answered after a restore: %s", got)
	}
	a = processor.NewEngine(r, book)
	run(a, out(0), out(5))
	if got := strings.Join(run(restored(a), out(26)), " "); got != "p1:breach_escalated@20(0) p1:checkin_missed@25(5)" {
		t.Errorf("missed after a restore: %s", got)
	}
}

// The random schedule is the contract's formula, computed here again from
// its text for one patient and day: HMAC-SHA256 keyed with
// checkins.schedule_key, plain SHA-256 without it. The keyed schedule is
// not the unkeyed one, so knowing a patient id no longer tells when they
// will be asked.
func TestRandomScheduleIsTheContractFormula(t *testing.T) {
	const key = "k3y-of-32-bytes-or-more-0123456789abcdef"
	start := time.Date(2026, 4, 2, 8, 0, 0, 0, time.UTC) // quiet hours end
	length := uint64(14 * 3600)                          // 08:00 to 22:00
	schedules := map[string]string{}
	for _, keyed := range []bool{false, true} {
		c := processor.DefaultRules().Checkins
		c.RandomPerDay = 2
		var want []int64
		for k := range 2 {
			msg := []byte(fmt.Sprintf("qfence-checkin|p-000123|2026-04-02|%d", k))
			h := sha256.Sum256(msg)
			sum := h[:]
			if keyed {
				c.ScheduleKey = key
				mac := hmac.New(sha256.New, []byte(key))
				mac.Write(msg)
				sum = mac.Sum(nil)
			}
			want = append(want, start.Add(time.Duration(binary.BigEndian.Uint64(sum[:8])%length)*time.Second).UnixMilli())
		}
		if want[0] > want[1] {
			want[0], want[1] = want[1], want[0]
		}
		got := processor.RandomCheckins(&c, "p-000123", start.UnixMilli(), start.Add(14*time.Hour).UnixMilli())
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("keyed %v: got %v, want %v", keyed, got, want)
		}
		schedules[fmt.Sprint(keyed)] = fmt.Sprint(got)
	}
	if schedules["true"] == schedules["false"] {
		t.Error("the keyed schedule is the unkeyed one")
	}
}

// Random requests never fall in quiet hours, across both DST changes of a
// zone that has them, with quiet hours inside a day and across midnight;
// each local day has its random_per_day requests; a window that spans a
// DST change is as long as real time says (21 or 23 hours, not 22).
func TestRandomScheduleAvoidsQuietHoursAcrossDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct{ start, end int }{{22 * 60, 8 * 60}, {23 * 60, 60}, {60, 6 * 60}} {
		c := processor.Checkins{RandomPerDay: 5, QuietStart: q.start, QuietEnd: q.end, Location: berlin, ResponseWindow: 20 * time.Minute}
		from := time.Date(2026, 3, 27, 0, 0, 0, 0, berlin).UnixMilli()
		to := time.Date(2026, 11, 1, 0, 0, 0, 0, berlin).UnixMilli()
		perDay := map[string]int{}
		for i := range 30 {
			id := fmt.Sprintf("p-%d", i)
			for _, at := range processor.RandomCheckins(&c, id, from, to) {
				if c.InQuietHours(at) {
					t.Fatalf("quiet %d-%d: %s request at %s is in quiet hours", q.start, q.end, id, time.UnixMilli(at).In(berlin))
				}
				// The window of day D runs from quiet hours' end on D: an
				// instant before that clock time belongs to the day before.
				lt := time.UnixMilli(at).In(berlin)
				if lt.Hour()*60+lt.Minute() < q.end {
					lt = lt.AddDate(0, 0, -1)
				}
				perDay[id+lt.Format(" 2006-01-02")]++
			}
		}
		for day, n := range perDay {
			if n > 5 {
				t.Errorf("quiet %d-%d: %s has %d requests, want at most 5", q.start, q.end, day, n)
			}
		}
	}
	c := processor.Checkins{RandomPerDay: 48, QuietStart: 23 * 60, QuietEnd: 60, Location: berlin}
	for _, day := range []struct {
		d     time.Time
		hours float64
	}{{time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), 21}, {time.Date(2026, 10, 25, 0, 0, 0, 0, berlin), 23}, {time.Date(2026, 10, 26, 0, 0, 0, 0, berlin), 22}} {
		got := processor.RandomCheckins(&c, "p-1", day.d.UnixMilli(), day.d.Add(26*time.Hour).UnixMilli())
		var last int64
		for _, at := range got {
			if time.UnixMilli(at).In(berlin).Day() == day.d.Day() {
				last = max(last, at)
			}
		}
		windowStart := time.Date(day.d.Year(), day.d.Month(), day.d.Day(), 1, 0, 0, 0, berlin)
		if span := time.Duration(last-windowStart.UnixMilli()) * time.Millisecond; span.Hours() >= day.hours || span.Hours() < day.hours-2 {
			t.Errorf("%s: the latest of 48 requests is %s after the window opens, want just under %gh", day.d.Format(time.DateOnly), span, day.hours)
		}
	}
}

// The engine issues exactly the schedule's instants, for patients whose
// order is active then, with at = the instant, whatever the ping cadence:
// three days across a DST change in Moscow's neighbour Berlin.
func TestEngineIssuesTheRandomSchedule(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	r := processor.DefaultRules()
	r.Checkins = processor.Checkins{RandomPerDay: 3, QuietStart: 22 * 60, QuietEnd: 8 * 60, Location: berlin, ResponseWindow: 20 * time.Minute}
	book := processor.NewOrderBook()
	start := time.Date(2026, 10, 24, 12, 0, 0, 0, berlin).UnixMilli()
	end := start + 3*24*3600_000
	for i := range 10 {
		o := &processor.Order{PatientID: fmt.Sprintf("p%d", i), Home: home, RadiusM: 50, StartsAt: start - 3600_000, EndsAt: math.MaxInt64}
		if i == 3 {
			o.EndsAt = start + 36*3600_000 // p3's order ends after a day and a half
		}
		book.Put(o)
	}
	eng := processor.NewEngine(r, book)
	var ev []processor.Event
	pt := east(5)
	for ts := start; ts < end; ts += 10 * 60_000 {
		for i := range 10 {
			p := processor.Ping{PatientID: []byte(fmt.Sprintf("p%d", i)), TS: ts + int64(i)*1000, Lat: pt[1], Lon: pt[0], Accuracy: 10,
				Checkin: processor.Checkin{Present: i%2 == 0 && ts%(30*60_000) == 0, Verified: true}}
			ev, _, _ = eng.Process(&p, nil, ev)
		}
	}
	got := map[string][]int64{}
	for _, e := range ev {
		if e.Type == processor.CheckinRequested && e.Reason == "random" {
			got[e.PatientID] = append(got[e.PatientID], e.At)
			if r.Checkins.InQuietHours(e.At) {
				t.Errorf("%s asked at %s, in quiet hours", e.PatientID, time.UnixMilli(e.At).In(berlin))
			}
		}
	}
	for i := range 10 {
		id := fmt.Sprintf("p%d", i)
		o := book.Lookup(id)
		var want []int64
		for _, at := range processor.RandomCheckins(&r.Checkins, id, start+int64(i)*1000+1, eng.Watermark()+1) {
			if o.ActiveAt(at) {
				want = append(want, at)
			}
		}
		if fmt.Sprint(got[id]) != fmt.Sprint(want) {
			t.Errorf("%s: asked at %v, the schedule says %v", id, got[id], want)
		}
		if len(want) < 6 && i != 3 {
			t.Errorf("%s: only %d random requests in three days", id, len(want))
		}
	}
}

// Notifications: a warning with breach_started and a checkin_request with
// checkin_requested, from the templates, times in checkins.timezone; the
// default texts hold no patient id, a template that asks for it gets it.
func TestNotifications(t *testing.T) {
	moscow, _ := time.LoadLocation("Europe/Moscow")
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	eng := processor.NewEngine(processor.DefaultRules(), book)
	var ev []processor.Event
	for _, tp := range []tping{out(0), out(5), out(8)} {
		p := ping(tp)
		ev, _, _ = eng.Process(&p, nil, ev)
	}
	def, err := processor.NewNotifier("", "", moscow)
	if err != nil {
		t.Fatal(err)
	}
	var got []processor.Notification
	for i := range ev {
		got = def.For(&ev[i], got)
	}
	if len(got) != 2 || got[0].Kind != processor.Warning || got[1].Kind != processor.CheckinRequest {
		t.Fatalf("notifications %+v, want a warning and a checkin_request", got)
	}
	// t0 is 10:00 UTC, 13:00 in Moscow; the breach started at t0.
	if want := "You appear to have left home at 13:00. Please return, or open the app to check in."; got[0].Text != want {
		t.Errorf("warning %q, want %q", got[0].Text, want)
	}
	if want := "Please open the app and check in before 13:25."; got[1].Text != want || got[1].ExpiresAt != t0+25*60_000 {
		t.Errorf("checkin_request %q (expires %d), want %q", got[1].Text, got[1].ExpiresAt, want)
	}
	for _, n := range got {
		if strings.Contains(n.Text, "p1") {
			t.Errorf("a default text names the patient: %q", n.Text)
		}
		if n.EventID == ([16]byte{}) || n.ID() == n.EventID {
			t.Errorf("ids: notification %x event %x", n.ID(), n.EventID)
		}
	}
	js := string(got[1].AppendJSON(nil))
	if !strings.Contains(js, `"kind":"checkin_request","at":"2026-04-02T10:05:00.000Z"`) || !strings.Contains(js, `"expires_at":"2026-04-02T10:25:00.000Z"`) {
		t.Errorf("JSON %s", js)
	}
	named, err := processor.NewNotifier("Patient {{.PatientID}}: return home.", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := named.For(&ev[0], nil); len(n) != 1 || n[0].Text != "Patient p1: return home." {
		t.Errorf("a template asking for the id: %+v", n)
	}
	if _, err := processor.NewNotifier("{{.Nope}}", "", nil); err == nil || !strings.Contains(err.Error(), "can't evaluate field Nope") {
		t.Errorf("a template naming a missing field: %v", err)
	}
}

// With pseudonymisation on, every id qfence makes is hashed from the
// patient's pseudonym (contract 3.1): request ids, event ids and
// notification ids equal the ids of the same records of a patient named
// by the pseudonym, and none equals the unkeyed one a list of guessed
// patient ids would give. The events still name the real patient.
func TestIdsAreHashedFromThePseudonym(t *testing.T) {
	const key = "k3y-of-32-bytes-or-more-0123456789abcdef"
	run := func(pseudonymKey string) []processor.Event {
		book := processor.NewOrderBook()
		book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, StartsAt: t0 - 24*3600_000, EndsAt: math.MaxInt64})
		r := processor.DefaultRules()
		r.PseudonymKey = pseudonymKey
		eng := processor.NewEngine(r, book)
		var ev []processor.Event
		for _, tp := range []tping{out(0), out(5), out(10)} {
			p := ping(tp)
			ev, _, _ = eng.Process(&p, testZones(), ev)
		}
		return ev
	}
	plain, keyed := run(""), run(key)
	pseudonym := processor.Pseudonym(key, "p1")
	notifier, err := processor.NewNotifier("", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(keyed) != len(plain) || len(keyed) < 2 {
		t.Fatalf("%d events keyed, %d plain", len(keyed), len(plain))
	}
	for i := range keyed {
		k, p := keyed[i], plain[i]
		as := processor.Event{Type: k.Type, PatientID: pseudonym, At: k.At, StartedAt: k.StartedAt} // of a patient named by the pseudonym, unkeyed
		if k.PatientID != "p1" || k.ID() == p.ID() || k.ID() != as.ID() {
			t.Errorf("%s: id %x, unkeyed %x", k.Type, k.ID(), p.ID())
		}
		if k.Type == processor.CheckinRequested && (k.RequestID != requestID(pseudonym, 5) || k.RequestID == requestID("p1", 5)) {
			t.Errorf("request id %x is not hashed from the pseudonym", k.RequestID)
		}
		kn, pn := notifier.For(&keyed[i], nil), notifier.For(&plain[i], nil)
		if len(kn) == 1 && (kn[0].ID() == pn[0].ID() || kn[0].PatientID != "p1") {
			t.Errorf("%s's notification id is the unkeyed one", k.Type)
		}
	}
}
