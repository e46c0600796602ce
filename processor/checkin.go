package processor

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
	"time"
)

// Checkin is a ping's answer to a check-in request (contract 1.1 and 2.2):
// the app did the photo and the face match; qfence sees only the verdict.
//
// Aliasing: Method points into the ping's message, like Ping.PatientID.
type Checkin struct {
	Present      bool // the ping carried a checkin object
	Verified     bool
	HasRequestID bool
	// Counted says the check-in counted (contract 2.3): set by the engine
	// on the stored row, never by the decoder.
	Counted   bool
	RequestID [16]byte
	Method    []byte
}

// Checkins are the rules of contract 2.2: check-in requests at random and
// how long a request waits for its answer.
type Checkins struct {
	// RandomPerDay is how many random requests a patient gets per local day.
	RandomPerDay int
	// ScheduleKey keys the random schedule (checkins.schedule_key): without
	// it anyone who knows a patient id can compute when they are asked.
	ScheduleKey string
	// QuietStart and QuietEnd bound the quiet hours, in minutes after local
	// midnight (22:00-08:00 is 1320 and 480); equal values: no quiet hours,
	// and a day's window is the whole local day.
	QuietStart, QuietEnd int
	// Location is checkins.timezone (nil: UTC). The engine only computes
	// with it; loading it is the caller's business.
	Location *time.Location
	// ResponseWindow is how long a request stays open.
	ResponseWindow time.Duration
	// Attest judges attestations (contract 2.3); nil: every check-in
	// counts on the phone's word.
	Attest *Attestation
}

// judge says whether the check-in of p counts.
func (c *Checkins) judge(p *Ping) CheckinReason {
	if c.Attest == nil {
		return CheckinCounted
	}
	return c.Attest.Verify(p)
}

// rejectCheckin emits checkin_rejected for a check-in that does not
// count: the ping, the reason, and the request it tried to answer (the one
// it named, or the oldest it could have answered; none: null).
func (st *State) rejectCheckin(o *Order, p *Ping, why CheckinReason, cur Evidence, ev []Event) []Event {
	e := newEvent(CheckinRejected, o, cur.TS, cur.TS, cur)
	e.Reason = why.String()
	e.Evidence = []Evidence{cur}
	if i, ok := st.answerable(&p.Checkin, cur.TS); ok {
		q := st.ep.Requests[i]
		e.RequestID, e.ExpiresAt = q.ID, q.Expires
	} else if p.Checkin.HasRequestID {
		e.RequestID = p.Checkin.RequestID
	}
	return append(ev, e)
}

// answerable is the open request a check-in at ts answers: the one it
// names, or else the oldest, and only one asked by ts (contract 2.2).
func (st *State) answerable(c *Checkin, ts int64) (int, bool) {
	if st.ep == nil {
		return -1, false
	}
	for i, open := range st.ep.Requests {
		if open.At > ts {
			break // ordered by at: none later can be answered either
		}
		if !c.HasRequestID || open.ID == c.RequestID {
			return i, true
		}
	}
	return -1, false
}

func (c *Checkins) location() *time.Location {
	if c.Location == nil {
		return time.UTC
	}
	return c.Location
}

// request is an open check-in request. Requests are rare (a breach, a lost
// signal, a few random ones a day), so they live in the episode, out of
// the state every idle patient carries.
type request struct {
	ID      [16]byte // the event_id of its checkin_requested
	At      int64
	Expires int64
}

// Request triggers, as checkin_requested's reason.
const (
	triggerBreach = "breach_started"
	triggerSignal = "signal_lost"
	triggerRandom = "random"
)

// ask opens a check-in request at `at` and returns its checkin_requested.
// A second request at the same instant would have the same id: the one
// already open stands for both.
func (st *State) ask(o *Order, at int64, trigger string, loc Evidence, r *Rules, ev []Event) []Event {
	ep := st.episode()
	for _, q := range ep.Requests {
		if q.At == at {
			return ev
		}
	}
	e := newEvent(CheckinRequested, o, at, at, loc)
	e.Reason = trigger
	e.ExpiresAt = at + r.Checkins.ResponseWindow.Milliseconds()
	e.idPatient = r.idPatient(o.PatientID) // the request id is hashed now, before the engine pseudonymizes the rest
	e.RequestID = e.ID()
	e.Evidence = []Evidence{loc}
	if loc.TS == 0 {
		e.Evidence = []Evidence{}
	}
	q := request{ID: e.RequestID, At: at, Expires: e.ExpiresAt}
	i, _ := slices.BinarySearchFunc(ep.Requests, at, func(q request, at int64) int { return cmp.Compare(q.At, at) })
	ep.Requests = slices.Insert(ep.Requests, i, q)
	return append(ev, e)
}

// answer matches a ping's check-in to the patient's open request (by
// request_id, or the oldest) and closes it. It returns the request (ok
// false: the check-in answered none) and, for verified false, appends
// checkin_failed. The ping itself is judged by the caller like any other.
func (st *State) answer(o *Order, c *Checkin, cur Evidence, r *Rules, ev []Event) (request, bool, []Event) {
	var q request
	i, found := st.answerable(c, cur.TS)
	if found {
		q = st.ep.Requests[i]
		st.ep.Requests = slices.Delete(st.ep.Requests, i, i+1)
	}
	if !c.Verified {
		// A failed face match says someone else may hold the phone, asked
		// or not; unasked, the episode is the ping itself.
		e := newEvent(CheckinFailed, o, cur.TS, cur.TS, cur)
		if found {
			e.StartedAt, e.RequestID, e.ExpiresAt = q.At, q.ID, q.Expires
		}
		e.Evidence = []Evidence{cur}
		ev = append(ev, e)
	}
	return q, found, ev
}

// due emits what time alone makes happen to one patient by now (a ping's
// ts, or the partition's watermark): the breach's escalation, random
// requests whose instant has come, and requests that expired unanswered.
// The events are in time order.
func (st *State) due(o *Order, id string, now int64, r *Rules, ev []Event) ([]Event, bool) {
	start, scheduled := len(ev), false
	if st.ep != nil && escalationDue(st.ep, now, r) {
		ev = append(ev, escalate(st, o, r))
	}
	c := &r.Checkins
	if c.RandomPerDay > 0 {
		if st.nextRandom == 0 {
			st.nextRandom, scheduled = nextRandom(c, id, now), true
		}
		for st.nextRandom != 0 && now >= int64(st.nextRandom)*1000 {
			at := int64(st.nextRandom) * 1000
			if o.ActiveAt(at) {
				ev = st.ask(o, at, triggerRandom, st.Last, r, ev)
			}
			st.nextRandom = nextRandom(c, id, at)
		}
	}
	ev = st.expire(o, now, ev)
	if len(ev) > start {
		slices.SortStableFunc(ev[start:], func(a, b Event) int { return cmp.Compare(a.At, b.At) })
	}
	return ev, scheduled || len(ev) > start
}

// expire emits checkin_missed for every open request that expired by now.
func (st *State) expire(o *Order, now int64, ev []Event) []Event {
	if ep := st.ep; ep != nil {
		for len(ep.Requests) > 0 && ep.Requests[0].Expires <= now {
			// Requests are ordered by at and share one window, so the
			// oldest expires first.
			q := ep.Requests[0]
			ep.Requests = ep.Requests[1:]
			e := newEvent(CheckinMissed, o, q.Expires, q.At, st.Last)
			e.RequestID, e.ExpiresAt = q.ID, q.Expires
			e.Evidence = []Evidence{}
			ev = append(ev, e)
		}
		if len(ep.Requests) == 0 {
			ep.Requests = nil
		}
		st.tidy()
	}
	return ev
}

// randomDue reports whether a random request is due by now, or the
// schedule is still to be set.
func (st *State) randomDue(now int64, r *Rules) bool {
	return r.Checkins.RandomPerDay > 0 && (st.nextRandom == 0 || now >= int64(st.nextRandom)*1000)
}

// nextRandom is the first random request instant of patient id after
// `after` (Unix ms), in Unix seconds (which fit a uint32 until 2106, past
// the newest ts qfence accepts), or 0 when there is none.
//
// Contract 2.2: local day D has one window, from the end of quiet hours on
// D to the next start of quiet hours, L real seconds long; request k of D
// falls at its start + H mod L, H the first 8 bytes of
// SHA-256("qfence-checkin|P|D|k") big-endian.
func nextRandom(c *Checkins, id string, after int64) uint32 {
	loc := c.location()
	t := time.UnixMilli(after).In(loc)
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc)
	// The window of the day before may reach past midnight into today.
	for d := -1; d <= 2; d++ {
		y, m, dd := day.AddDate(0, 0, d).Date()
		start, length := window(c, y, m, dd)
		if length <= 0 {
			continue
		}
		best := int64(0)
		for k := 0; k < c.RandomPerDay; k++ {
			at := start + int64(randomOffset(c.ScheduleKey, id, y, m, dd, k, uint64(length)))
			if at*1000 > after && (best == 0 || at < best) {
				best = at
			}
		}
		if best != 0 {
			return uint32(best)
		}
	}
	return 0
}

// window is local day (y, m, d)'s allowed window: its start in Unix
// seconds and its length in real seconds.
func window(c *Checkins, y int, m time.Month, d int) (start, length int64) {
	loc := c.location()
	if c.QuietStart == c.QuietEnd {
		s := time.Date(y, m, d, 0, 0, 0, 0, loc)
		return s.Unix(), time.Date(y, m, d+1, 0, 0, 0, 0, loc).Unix() - s.Unix()
	}
	s := time.Date(y, m, d, c.QuietEnd/60, c.QuietEnd%60, 0, 0, loc)
	end := time.Date(y, m, d, c.QuietStart/60, c.QuietStart%60, 0, 0, loc)
	if !end.After(s) {
		end = time.Date(y, m, d+1, c.QuietStart/60, c.QuietStart%60, 0, 0, loc)
	}
	return s.Unix(), end.Unix() - s.Unix()
}

// randomOffset is H mod length of contract 2.2: HMAC-SHA256 keyed with
// checkins.schedule_key (plain SHA-256 without it) over
// qfence-checkin|P|D|k.
func randomOffset(key string, id string, y int, m time.Month, d, k int, length uint64) uint64 {
	b := make([]byte, 0, 64)
	b = append(b, "qfence-checkin|"...)
	b = append(b, id...)
	b = append(b, '|')
	b = time.Date(y, m, d, 0, 0, 0, 0, time.UTC).AppendFormat(b, "2006-01-02")
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(k), 10)
	if len(key) > 0 {
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write(b)
		return binary.BigEndian.Uint64(mac.Sum(nil)[:8]) % length
	}
	h := sha256.Sum256(b)
	return binary.BigEndian.Uint64(h[:8]) % length
}

// RandomCheckins lists the random request instants of patient id in
// [from, to) (Unix ms): the schedule the engine follows, for those who
// check it (the tests).
func RandomCheckins(c *Checkins, id string, from, to int64) []int64 {
	var out []int64
	for t := from - 1; ; {
		next := nextRandom(c, id, t)
		if next == 0 || int64(next)*1000 >= to {
			return out
		}
		t = int64(next) * 1000
		out = append(out, t)
	}
}

// InQuietHours reports whether ms falls in the quiet hours of c.
func (c *Checkins) InQuietHours(ms int64) bool {
	if c.QuietStart == c.QuietEnd {
		return false
	}
	t := time.UnixMilli(ms).In(c.location())
	min := t.Hour()*60 + t.Minute()
	if c.QuietStart < c.QuietEnd {
		return min >= c.QuietStart && min < c.QuietEnd
	}
	return min >= c.QuietStart || min < c.QuietEnd
}

// ParseRequestID reads a request id: 32 lowercase hex digits, as qfence
// writes them.
func ParseRequestID(s []byte) ([16]byte, bool) {
	var id [16]byte
	if len(s) != 32 {
		return id, false
	}
	for _, c := range s {
		if c >= 'A' && c <= 'F' {
			return id, false
		}
	}
	_, err := hex.Decode(id[:], s)
	return id, err == nil
}
