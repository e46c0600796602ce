package processor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
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

type orderWire struct {
	PatientID *string `json:"patient_id"`
	Home      *struct {
		Lat *float64 `json:"lat"`
		Lon *float64 `json:"lon"`
	} `json:"home"`
	RadiusM  *float64        `json:"radius_m"`
	StartsAt json.RawMessage `json:"starts_at"`
	EndsAt   json.RawMessage `json:"ends_at"`
	District *string         `json:"district"`
	DeviceID *string         `json:"device_id"`
}

// DecodeOrder decodes one order. key is the Kafka key, or nil for a line of
// orders.file. maxBytes is limits.max_message_bytes (0: no limit). When the
// order has no district, zones (if any) supply the district holding the home.
// Errors are *Reject.
func DecodeOrder(key, value []byte, maxBytes int, zones *geo.Zones) (*Order, error) {
	if maxBytes > 0 && len(value) > maxBytes {
		return nil, reject(TooLarge, "message is %d bytes, more than limits.max_message_bytes (%d)", len(value), maxBytes)
	}
	var w orderWire
	// Unmarshal, not a Decoder: it refuses data after the object too, and
	// does not allocate a Decoder's buffer for every order.
	if err := json.Unmarshal(value, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, reject(reasonOfField(te.Field), "order field %s has the wrong type (%s)", te.Field, te.Value)
		}
		return nil, reject(MalformedJSON, "order is not a JSON object: %v", err)
	}
	switch {
	case w.PatientID == nil:
		return nil, reject(MissingField, "patient_id is required")
	case w.Home == nil || w.Home.Lat == nil || w.Home.Lon == nil:
		return nil, reject(MissingField, "home.lat and home.lon are required")
	case w.RadiusM == nil:
		return nil, reject(MissingField, "radius_m is required")
	case len(w.StartsAt) == 0 || string(w.StartsAt) == "null":
		return nil, reject(MissingField, "starts_at is required")
	}
	if !ValidPatientID([]byte(*w.PatientID)) {
		return nil, reject(BadPatientID, "patient_id %q must be 1-128 bytes of [A-Za-z0-9._:-]", truncate([]byte(*w.PatientID)))
	}
	if key != nil && string(key) != *w.PatientID {
		return nil, reject(BadPatientID, "key %q differs from patient_id %q", truncate(key), *w.PatientID)
	}
	lat, lon := *w.Home.Lat, *w.Home.Lon
	if lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return nil, reject(BadCoordinates, "home lat %v, lon %v: lat must be in [-90, 90] and lon in [-180, 180]", lat, lon)
	}
	if r := *w.RadiusM; !(r >= 10 && r <= 10000) {
		return nil, reject(BadRadius, "radius_m %v must be between 10 and 10000", r)
	}
	o := &Order{PatientID: *w.PatientID, Home: orb.Point{lon, lat}, RadiusM: *w.RadiusM, EndsAt: math.MaxInt64}
	if d := w.DeviceID; d != nil && *d != "" {
		if len(*d) > maxDeviceBytes {
			return nil, reject(MalformedJSON, "device_id is %d bytes, at most %d", len(*d), maxDeviceBytes)
		}
		o.EnrolDevice(*d)
	}
	var ok bool
	if o.StartsAt, ok = orderTime(w.StartsAt); !ok {
		return nil, reject(BadTimestamp, "starts_at %s is not an RFC 3339 time with a zone from %s", truncate(w.StartsAt), tsRange)
	}
	if len(w.EndsAt) > 0 && string(w.EndsAt) != "null" {
		if o.EndsAt, ok = orderTime(w.EndsAt); !ok {
			return nil, reject(BadTimestamp, "ends_at %s is not an RFC 3339 time with a zone from %s (leave ends_at out for an order with no end)", truncate(w.EndsAt), tsRange)
		}
		if o.EndsAt <= o.StartsAt {
			return nil, reject(BadPeriod, "ends_at %s is not after starts_at %s", FormatTS(o.EndsAt), FormatTS(o.StartsAt))
		}
	}
	if w.District != nil {
		o.District = *w.District
	} else if d, _ := zones.Lookup(o.Home); d != nil {
		o.District = d.ID
	}
	return o, nil
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

// orderTime accepts the same two forms as a ping's ts.
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
