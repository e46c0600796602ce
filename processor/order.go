package processor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
)

// Order is one quarantine order (config/contract/CONTRACT.md 1.2). It is immutable:
// a new version replaces the pointer in the OrderBook.
type Order struct {
	PatientID string
	Home      orb.Point // [lon, lat]
	RadiusM   float64
	StartsAt  int64 // Unix ms
	EndsAt    int64 // Unix ms; math.MaxInt64 when open
	District  string
	// stale is set (atomically) once the book no longer holds this version:
	// it was replaced or revoked, or it never was in the book (an open
	// breach's copy restored from the changelog). A partition may use the
	// order its patient's state points to while it is not stale, sparing
	// the book's look-up and its lock on every ping.
	stale int32
	// devLen is the length of the enrolled device id (contract 2.3; 0:
	// none), whose bytes follow PatientID's in the same allocation: a
	// million orders with a 36-byte device id cost 40 bytes each, not 64,
	// and this byte sits in what was padding (BENCHMARKS.md, heap per
	// patient).
	devLen uint8
	// passes are the patient's passes, kept here by the pass book so that
	// a ping away from home finds them without a look-up of its own.
	passes atomic.Pointer[[]*Pass]
}

// DeviceID is the phone enrolled for the patient ("" when the order names
// none).
func (o *Order) DeviceID() string {
	if o.devLen == 0 {
		return ""
	}
	return unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(unsafe.StringData(o.PatientID)), len(o.PatientID))), int(o.devLen))
}

// EnrolDevice makes device (at most 128 bytes) the order's enrolled phone.
// It is for orders built in code (tests, the simulator), before the order
// goes into a book; DecodeOrder reads device_id itself.
func (o *Order) EnrolDevice(device string) {
	if len(device) > maxDeviceBytes {
		panic("BUG: a device id longer than 128 bytes")
	}
	both := o.PatientID + device
	o.PatientID, o.devLen = both[:len(o.PatientID)], uint8(len(device))
}

// Enrolled reports whether device may decide for the patient: the order
// names no device, or names this one.
func (o *Order) Enrolled(device []byte) bool {
	return o.devLen == 0 || string(device) == o.DeviceID()
}

// Passes are the patient's QR passes (nil for most patients).
func (o *Order) Passes() []*Pass {
	if p := o.passes.Load(); p != nil {
		return *p
	}
	return nil
}

// Current reports whether o is still the book's version for its patient.
func (o *Order) Current() bool { return atomic.LoadInt32(&o.stale) == 0 }

func (o *Order) markStale() { atomic.StoreInt32(&o.stale, 1) }

// ActiveAt reports whether the order covers ts: starts_at <= ts < ends_at.
func (o *Order) ActiveAt(ts int64) bool {
	return o != nil && ts >= o.StartsAt && ts < o.EndsAt
}

// Open reports whether the order has no end.
func (o *Order) Open() bool { return o.EndsAt == math.MaxInt64 }

// DecodeOrder decodes one order. key is the Kafka key, or nil for a line of
// orders.file. maxBytes is limits.max_message_bytes (0: no limit). When the
// order has no district, zones (if any) supply the district holding the home.
// Errors are *Reject.
//
// It reads the order with the pings' scanner, not encoding/json: every
// order is decoded at every start of an instance holding them all, and
// Unmarshal was two thirds of that load's CPU (BENCHMARKS.md, orders at
// start). It rejects what encoding/json rejected, for the same reason,
// with three differences a test pins: field names match exactly
// (encoding/json also took "Patient_ID"), a message that is not UTF-8 is
// malformed (encoding/json replaced the bytes), and values nest at most 64
// deep, as in a ping.
func DecodeOrder(key, value []byte, maxBytes int, zones *geo.Zones) (*Order, error) {
	if maxBytes > 0 && len(value) > maxBytes {
		return nil, reject(TooLarge, "message is %d bytes, more than limits.max_message_bytes (%d)", len(value), maxBytes)
	}
	if !utf8.Valid(value) {
		return nil, reject(MalformedJSON, "order is not valid UTF-8")
	}
	var w orderWire
	if r := w.scan(value); r != nil {
		return nil, r
	}
	switch {
	case w.patient == nil:
		return nil, reject(MissingField, "patient_id is required")
	case !w.home || !w.hasLat || !w.hasLon:
		return nil, reject(MissingField, "home.lat and home.lon are required")
	case !w.hasRadius:
		return nil, reject(MissingField, "radius_m is required")
	case w.startsAt.absent():
		return nil, reject(MissingField, "starts_at is required")
	}
	if !ValidPatientID(w.patient) {
		return nil, reject(BadPatientID, "patient_id %q must be 1-128 bytes of [A-Za-z0-9._:-]", truncate(w.patient))
	}
	if key != nil && string(key) != string(w.patient) {
		return nil, reject(BadPatientID, "key %q differs from patient_id %q", truncate(key), w.patient)
	}
	lat, lon := w.lat, w.lon
	if lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return nil, reject(BadCoordinates, "home lat %v, lon %v: lat must be in [-90, 90] and lon in [-180, 180]", lat, lon)
	}
	if r := w.radius; !(r >= 10 && r <= 10000) {
		return nil, reject(BadRadius, "radius_m %v must be between 10 and 10000", r)
	}
	o := &Order{Home: orb.Point{lon, lat}, RadiusM: w.radius, EndsAt: math.MaxInt64}
	if d := w.device; len(d) > 0 {
		if len(d) > maxDeviceBytes {
			return nil, reject(MalformedJSON, "device_id is %d bytes, at most %d", len(d), maxDeviceBytes)
		}
		// One allocation holds the patient id and, after it, the device's
		// bytes (Order.DeviceID).
		both := string(w.patient) + string(d)
		o.PatientID, o.devLen = both[:len(w.patient)], uint8(len(d))
	} else {
		o.PatientID = string(w.patient)
	}
	var ok bool
	if o.StartsAt, ok = w.startsAt.time(); !ok {
		return nil, reject(BadTimestamp, "starts_at %s is not an RFC 3339 time with a zone from %s", truncate(w.startsAt.raw), tsRange)
	}
	if !w.endsAt.absent() {
		if o.EndsAt, ok = w.endsAt.time(); !ok {
			return nil, reject(BadTimestamp, "ends_at %s is not an RFC 3339 time with a zone from %s (leave ends_at out for an order with no end)", truncate(w.endsAt.raw), tsRange)
		}
		if o.EndsAt <= o.StartsAt {
			return nil, reject(BadPeriod, "ends_at %s is not after starts_at %s", FormatTS(o.EndsAt), FormatTS(o.StartsAt))
		}
	}
	if w.district != nil {
		o.District = string(w.district)
	} else if d, _ := zones.Lookup(o.Home); d != nil {
		o.District = d.ID
	}
	return o, nil
}

// orderWire is an order as scanned: its byte slices alias the message (or
// hold the decoded copy of an escaped string); nil is absent.
type orderWire struct {
	patient, district, device []byte
	home, hasLat, hasLon      bool
	hasRadius                 bool
	lat, lon, radius          float64
	startsAt, endsAt          orderTS
}

// orderTS is starts_at or ends_at as sent: the JSON value's text; nil is
// absent (or null).
type orderTS struct{ raw []byte }

func (t *orderTS) absent() bool { return t.raw == nil }

// time accepts the same two forms as a ping's ts.
func (t *orderTS) time() (int64, bool) { return orderTime(t.raw) }

// orderTime accepts the same two forms as a ping's ts, from minTS to maxTS.
func orderTime(raw json.RawMessage) (int64, bool) {
	var ts int64
	var ok bool
	if len(raw) > 0 && raw[0] == '"' {
		ts, ok = parseRFC3339(raw[1 : len(raw)-1])
	} else {
		ts, ok = parseUnixMillis(raw)
	}
	return ts, ok && ts >= minTS && ts <= maxTS
}

// wrongType is the reject of a field whose value has another JSON type
// (c is its first byte), with the reason its field's errors have.
func wrongType(field string, c byte) *Reject {
	kind := "object"
	switch {
	case c == '"':
		kind = "string"
	case c == '[':
		kind = "array"
	case c == 't' || c == 'f':
		kind = "bool"
	case c == '-' || isDigit(c):
		kind = "number"
	}
	return reject(reasonOfField(field), "order field %s has the wrong type (%s)", field, kind)
}

// scan fills w from data. It returns a *Reject for malformed JSON or, once
// the whole message is known to be well-formed, for the first field whose
// value had the wrong type (as encoding/json did).
func (w *orderWire) scan(data []byte) *Reject {
	s := scanner{b: data}
	var first *Reject
	wrong := func(field string, c byte) {
		if first == nil {
			first = wrongType(field, c)
		}
	}
	switch c := s.peek(); {
	case c == 'n':
		if !s.lit("null") || s.peek() != 0 {
			return malformed(&s)
		}
		return nil // null holds no field: patient_id is missing
	case c != '{':
		if !s.skip(0) || s.peek() != 0 {
			return malformed(&s)
		}
		return wrongType("", c)
	}
	ok := s.object(func(key []byte, c byte) bool {
		switch string(key) {
		case "patient_id", "district", "device_id":
			var v []byte
			if c == 'n' {
				if !s.lit("null") {
					return false
				}
			} else {
				var ok bool
				if v, ok = s.strValue(c); !ok {
					return false
				}
				if v == nil {
					wrong(string(key), c)
					return true
				}
			}
			switch {
			case key[0] == 'p':
				w.patient = v
			case key[1] == 'i':
				w.district = v
			default:
				w.device = v
			}
		case "radius_m":
			return w.number(&s, c, "radius_m", &w.radius, &w.hasRadius, wrong)
		case "starts_at", "ends_at":
			t := &w.startsAt
			if key[0] == 'e' {
				t = &w.endsAt
			}
			if c == 'n' {
				t.raw = nil
				return s.lit("null")
			}
			s.ws()
			start := s.i
			if !s.skip(0) {
				return false
			}
			t.raw = data[start:s.i]
		case "home":
			switch c {
			case 'n':
				w.home, w.hasLat, w.hasLon = false, false, false
				return s.lit("null")
			case '{':
				// A second home object updates the first, as encoding/json
				// decodes into the struct it already holds.
				w.home = true
				return s.object(func(key []byte, c byte) bool {
					switch string(key) {
					case "lat":
						return w.number(&s, c, "home.lat", &w.lat, &w.hasLat, wrong)
					case "lon":
						return w.number(&s, c, "home.lon", &w.lon, &w.hasLon, wrong)
					}
					return s.skip(1)
				})
			}
			wrong("home", c)
			return s.skip(0)
		default:
			return s.skip(0)
		}
		return true
	})
	if !ok {
		return malformed(&s)
	}
	if s.peek() != 0 {
		return reject(MalformedJSON, "unexpected data after the JSON object at byte %d", s.i)
	}
	return first
}

// number reads a numeric field into v (null: absent); another type, or a
// number beyond float64, is the field's wrong type.
func (w *orderWire) number(s *scanner, c byte, field string, v *float64, has *bool, wrong func(string, byte)) bool {
	if c == 'n' {
		*has = false
		return s.lit("null")
	}
	f, ok := s.floatValue(c)
	if !ok {
		return false
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		wrong(field, c)
		return true
	}
	*v, *has = f, true
	return true
}

func reasonOfField(field string) Reason {
	switch field {
	case "patient_id":
		return BadPatientID
	case "home", "home.lat", "home.lon":
		return BadCoordinates
	case "radius_m":
		return BadRadius
	}
	return MalformedJSON
}

// OrderBook is the table of active orders, keyed by patient id. Orders are a
// global table (every instance reads the whole topic) read by every
// partition's goroutine and written by the orders reader, so unlike patient
// state it is shared: sharded, each shard behind a read-mostly lock.
type OrderBook struct {
	seed   maphash.Seed
	shards [orderShards]orderShard

	// districts interns district names: a million orders share a few
	// hundred strings instead of holding a copy each.
	dmu       sync.Mutex
	districts map[string]string

	n atomic.Int64 // orders held: Len without visiting the shards

	// passes, once linked (PassBook.link), gives a new order its
	// patient's passes.
	passes atomic.Pointer[PassBook]
}

// maxDistricts bounds the interning table against orders with made-up names.
const maxDistricts = 10000

const orderShards = 64

type orderShard struct {
	mu sync.RWMutex
	m  map[string]*Order
	_  [40]byte // keeps shards on separate cache lines
}

// NewOrderBook returns an empty book.
func NewOrderBook() *OrderBook {
	b := &OrderBook{seed: maphash.MakeSeed(), districts: make(map[string]string)}
	for i := range b.shards {
		b.shards[i].m = make(map[string]*Order)
	}
	return b
}

func (b *OrderBook) shard(id []byte) *orderShard {
	return &b.shards[maphash.Bytes(b.seed, id)%orderShards]
}

// Get returns the patient's order, or nil.
func (b *OrderBook) Get(id []byte) *Order {
	s := b.shard(id)
	s.mu.RLock()
	o := s.m[string(id)]
	s.mu.RUnlock()
	return o
}

// Lookup is Get for a string id.
func (b *OrderBook) Lookup(id string) *Order {
	s := &b.shards[maphash.String(b.seed, id)%orderShards]
	s.mu.RLock()
	o := s.m[id]
	s.mu.RUnlock()
	return o
}

// Put adds or replaces the patient's order and returns the one it replaced.
func (b *OrderBook) Put(o *Order) (old *Order) {
	if o.District != "" {
		b.dmu.Lock()
		if d, ok := b.districts[o.District]; ok {
			o.District = d
		} else if len(b.districts) < maxDistricts {
			b.districts[o.District] = o.District
		}
		b.dmu.Unlock()
	}
	if pb := b.passes.Load(); pb != nil {
		// Under the pass book's link lock, so that a pass applied at the same
		// time reaches this order too.
		pb.linkMu.Lock()
		defer pb.linkMu.Unlock()
		if ps := pb.For([]byte(o.PatientID)); ps != nil {
			o.passes.Store(&ps)
		}
	}
	s := &b.shards[maphash.String(b.seed, o.PatientID)%orderShards]
	s.mu.Lock()
	old = s.m[o.PatientID]
	if old != nil && old.DeviceID() == o.DeviceID() {
		// Keep the key string already in the map: states share it. (Its
		// device bytes follow it, so only when the device is the same.)
		o.PatientID = old.PatientID
	}
	s.m[o.PatientID] = o
	s.mu.Unlock()
	if old != nil {
		old.markStale()
	} else {
		b.n.Add(1)
	}
	return old
}

// Revoke removes the patient's order and returns it (nil if there was none).
func (b *OrderBook) Revoke(id []byte) *Order {
	s := b.shard(id)
	s.mu.Lock()
	o := s.m[string(id)]
	delete(s.m, string(id))
	s.mu.Unlock()
	if o != nil {
		o.markStale()
		b.n.Add(-1)
	}
	return o
}

// Drop removes the orders of the patients drop names (a co-partitioned
// instance releasing a partition's patients) and returns how many it
// removed. Unlike Revoke it is no revocation: the engines that judged
// those patients have stopped, and the next owner holds the orders.
func (b *OrderBook) Drop(drop func(patientID string) bool) int {
	n := 0
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		for id, o := range s.m {
			if drop(id) {
				delete(s.m, id)
				o.markStale()
				n++
			}
		}
		s.mu.Unlock()
	}
	b.n.Add(int64(-n))
	return n
}

// Len is the number of orders in the book.
func (b *OrderBook) Len() int { return int(b.n.Load()) }

// LoadOrders reads NDJSON orders (the orders.file format) into the book.
// Blank lines are skipped; a line that is JSON null is ignored (there is no
// key to revoke). It returns how many orders it loaded and the rejects with
// their line numbers; it stops only on a read error.
func LoadOrders(lines func() ([]byte, bool), b *OrderBook, zones *geo.Zones) (loaded int, rejects []error) {
	for n := 1; ; n++ {
		line, ok := lines()
		if !ok {
			return loaded, rejects
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || string(line) == "null" {
			continue
		}
		o, err := DecodeOrder(nil, line, 0, zones)
		if err != nil {
			rejects = append(rejects, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		b.Put(o)
		loaded++
	}
}
