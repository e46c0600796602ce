package processor

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Purpose is what a pass is for (config/contract/CONTRACT.md 1.4).
type Purpose uint8

// The purposes, in the contract's order; the ClickHouse Enum8 follows it.
const (
	Grocery Purpose = iota + 1
	Pharmacy
	Medical
	Trash
	Pet
	Work
	Other
)

var purposeNames = [...]string{"", "grocery", "pharmacy", "medical", "trash", "pet", "work", "other"}

func (p Purpose) String() string { return purposeNames[p] }

// The reasons a pass is rejected with, besides the pings' own.
const (
	BadPassID    Reason = "bad_pass_id"
	BadPurpose   Reason = "bad_purpose"
	BadDistance  Reason = "bad_distance"
	BadSignature Reason = "bad_signature"
	// Stale: the pass is an older version (issued_at) than the one held,
	// such as the original re-sent after its revocation (contract 1.4).
	Stale Reason = "stale"
)

// PassReasons lists every reason a pass can be rejected with.
var PassReasons = []Reason{TooLarge, MalformedJSON, MissingField, BadPassID, BadPatientID, BadPurpose, BadPeriod, BadDistance, BadSignature, Stale}

// Pass is one QR pass: a permit for one trip out of the home. It is
// immutable once decoded; a later version of the same pass_id replaces it.
type Pass struct {
	ID        string
	PatientID string
	Purpose   Purpose
	ValidFrom int64 // Unix ms, inclusive
	ValidTo   int64 // Unix ms, exclusive
	// MaxDistanceM bounds how far from home the trip may go; 0 is any
	// distance.
	MaxDistanceM float64
	RevokedAt    int64 // Unix ms; 0 when not revoked
	IssuedAt     int64 // Unix ms; 0 when not given

	signature string // as received, for Verify after Parse
}

// Size is about what the pass holds in memory, in bytes.
func (p *Pass) Size() int {
	return int(unsafe.Sizeof(*p)) + len(p.ID) + len(p.PatientID) + len(p.signature)
}

// End is when the pass stops covering anything: valid_to, or revoked_at
// when earlier.
func (p *Pass) End() int64 {
	if p.RevokedAt != 0 {
		return min(p.ValidTo, p.RevokedAt)
	}
	return p.ValidTo
}

// CoversTime reports whether the pass is valid at ts: from valid_from,
// before valid_to, and before revoked_at.
func (p *Pass) CoversTime(ts int64) bool {
	return p.ValidFrom <= ts && ts < p.ValidTo && (p.RevokedAt == 0 || ts < p.RevokedAt)
}

// Covers reports whether the pass excuses a ping at ts, d metres from home
// with accuracy a, under margin m: valid at ts and, with a distance bound,
// d - a <= max_distance_m + m (the accuracy counts in the patient's
// favour).
func (p *Pass) Covers(ts int64, d, a, m float64) bool {
	return p.CoversTime(ts) && (p.MaxDistanceM == 0 || d-a <= p.MaxDistanceM+m)
}

// SigningMessage is what the pass's Ed25519 signature signs (contract 1.4):
// qfence-pass-v2, then pass_id, patient_id, purpose, valid_from and
// valid_to as Unix milliseconds, max_distance_m as an integer (empty when
// absent), revoked_at (empty when absent) and issued_at as Unix
// milliseconds, one per line. Signing revoked_at and issued_at is what
// makes a revocation a version no one else can write, and an earlier
// version one that can be told older.
func SigningMessage(p *Pass) []byte {
	b := []byte("qfence-pass-v2\n")
	b = append(b, p.ID...)
	b = append(b, '\n')
	b = append(b, p.PatientID...)
	b = append(b, '\n')
	b = append(b, p.Purpose.String()...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, p.ValidFrom, 10)
	b = append(b, '\n')
	b = strconv.AppendInt(b, p.ValidTo, 10)
	b = append(b, '\n')
	if p.MaxDistanceM != 0 {
		b = strconv.AppendInt(b, int64(math.Round(p.MaxDistanceM)), 10)
	}
	b = append(b, '\n')
	if p.RevokedAt != 0 {
		b = strconv.AppendInt(b, p.RevokedAt, 10)
	}
	b = append(b, '\n')
	return strconv.AppendInt(b, p.IssuedAt, 10)
}

// ParseVerifyKeys reads passes.verify_keys_file's content: one base64
// (standard) 32-byte Ed25519 public key a line; blank lines and lines
// starting with # are skipped.
func ParseVerifyKeys(data []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("line %d: not a base64 %d-byte Ed25519 public key", i+1, ed25519.PublicKeySize)
		}
		keys = append(keys, ed25519.PublicKey(k))
	}
	if len(keys) == 0 {
		return nil, errors.New("no key in the file")
	}
	return keys, nil
}

// PassDecoder decodes and validates passes.
type PassDecoder struct {
	MaxBytes    int           // limits.max_message_bytes; 0 is no limit
	MaxDuration time.Duration // passes.max_duration
	// Keys verify signatures; with none, signatures are not checked.
	Keys []ed25519.PublicKey
}

type passWire struct {
	PassID       *string         `json:"pass_id"`
	PatientID    *string         `json:"patient_id"`
	Purpose      *string         `json:"purpose"`
	ValidFrom    json.RawMessage `json:"valid_from"`
	ValidTo      json.RawMessage `json:"valid_to"`
	MaxDistanceM *float64        `json:"max_distance_m"`
	RevokedAt    json.RawMessage `json:"revoked_at"`
	IssuedAt     json.RawMessage `json:"issued_at"`
	Signature    *string         `json:"signature"`
}

// Decode decodes and verifies one pass: Parse, then Verify. key is the
// Kafka key (it must equal pass_id), or nil for a line of passes.file.
// Errors are *Reject.
func (d *PassDecoder) Decode(key, value []byte) (*Pass, error) {
	p, err := d.Parse(key, value)
	if err == nil {
		err = d.Verify(p)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Parse decodes and validates one pass without checking its signature (a
// fiftieth of the cost): the passes reader parses every pass of a city and
// verifies only those it holds. Errors are *Reject.
func (d *PassDecoder) Parse(key, value []byte) (*Pass, error) {
	if d.MaxBytes > 0 && len(value) > d.MaxBytes {
		return nil, reject(TooLarge, "pass is %d bytes, more than limits.max_message_bytes (%d)", len(value), d.MaxBytes)
	}
	var w passWire
	if err := json.Unmarshal(value, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, reject(passReasonOfField(te.Field), "field %s has the wrong type", te.Field)
		}
		return nil, reject(MalformedJSON, "pass is not valid JSON: %v", err)
	}
	for name, missing := range map[string]bool{"pass_id": w.PassID == nil, "patient_id": w.PatientID == nil, "purpose": w.Purpose == nil,
		"valid_from": len(w.ValidFrom) == 0 || string(w.ValidFrom) == "null", "valid_to": len(w.ValidTo) == 0 || string(w.ValidTo) == "null"} {
		if missing {
			return nil, reject(MissingField, "%s is required", name)
		}
	}
	p := &Pass{ID: *w.PassID, PatientID: *w.PatientID}
	if !ValidPatientID([]byte(p.ID)) {
		return nil, reject(BadPassID, "pass_id %q must be 1-128 bytes of [A-Za-z0-9._:-]", truncate([]byte(p.ID)))
	}
	if key != nil && string(key) != p.ID {
		return nil, reject(BadPassID, "message key %q is not the pass_id %q", truncate(key), p.ID)
	}
	if !ValidPatientID([]byte(p.PatientID)) {
		return nil, reject(BadPatientID, "patient_id %q must be 1-128 bytes of [A-Za-z0-9._:-]", truncate([]byte(p.PatientID)))
	}
	for i, name := range purposeNames {
		if i > 0 && name == *w.Purpose {
			p.Purpose = Purpose(i)
		}
	}
	if p.Purpose == 0 {
		return nil, reject(BadPurpose, "purpose %q must be grocery, pharmacy, medical, trash, pet, work or other", truncate([]byte(*w.Purpose)))
	}
	var ok bool
	if p.ValidFrom, ok = orderTime(w.ValidFrom); !ok {
		return nil, reject(BadPeriod, "valid_from %s is not an RFC 3339 time with a zone from %s", truncate(w.ValidFrom), tsRange)
	}
	if p.ValidTo, ok = orderTime(w.ValidTo); !ok {
		return nil, reject(BadPeriod, "valid_to %s is not an RFC 3339 time with a zone from %s", truncate(w.ValidTo), tsRange)
	}
	if p.ValidTo <= p.ValidFrom {
		return nil, reject(BadPeriod, "valid_to %s is not after valid_from %s", FormatTS(p.ValidTo), FormatTS(p.ValidFrom))
	}
	if d.MaxDuration > 0 && p.ValidTo-p.ValidFrom > d.MaxDuration.Milliseconds() {
		return nil, reject(BadPeriod, "the pass lasts %s, more than passes.max_duration (%s)",
			time.Duration(p.ValidTo-p.ValidFrom)*time.Millisecond, d.MaxDuration)
	}
	for _, t := range []struct {
		name string
		raw  json.RawMessage
		dst  *int64
	}{{"revoked_at", w.RevokedAt, &p.RevokedAt}, {"issued_at", w.IssuedAt, &p.IssuedAt}} {
		if len(t.raw) == 0 || string(t.raw) == "null" {
			continue
		}
		if *t.dst, ok = orderTime(t.raw); !ok {
			return nil, reject(BadPeriod, "%s %s is not an RFC 3339 time with a zone from %s", t.name, truncate(t.raw), tsRange)
		}
	}
	if w.MaxDistanceM != nil {
		if m := *w.MaxDistanceM; !(m >= 10 && m <= 100000) {
			return nil, reject(BadDistance, "max_distance_m %v must be between 10 and 100000", m)
		}
		p.MaxDistanceM = *w.MaxDistanceM
	}
	if w.Signature != nil {
		p.signature = *w.Signature
	}
	return p, nil
}

// Verify checks a parsed pass's signature against the keys; with no keys
// every pass passes.
func (d *PassDecoder) Verify(p *Pass) error {
	if len(d.Keys) == 0 {
		return nil
	}
	if p.signature == "" {
		return reject(BadSignature, "the pass has no signature, and passes.verify_keys_file is set")
	}
	if p.IssuedAt == 0 {
		return reject(MissingField, "issued_at is required when signatures are checked (passes.verify_keys_file is set)")
	}
	// The length first: a signature is 88 characters, and a megabyte of
	// base64 is not worth decoding.
	if len(p.signature) != base64.StdEncoding.EncodedLen(ed25519.SignatureSize) {
		return reject(BadSignature, "signature is not a base64 %d-byte Ed25519 signature", ed25519.SignatureSize)
	}
	sig, err := base64.StdEncoding.DecodeString(p.signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return reject(BadSignature, "signature is not a base64 %d-byte Ed25519 signature", ed25519.SignatureSize)
	}
	msg := SigningMessage(p)
	for _, k := range d.Keys {
		if ed25519.Verify(k, msg, sig) {
			return nil
		}
	}
	return reject(BadSignature, "the signature does not verify with any key of passes.verify_keys_file")
}

func passReasonOfField(field string) Reason {
	switch field {
	case "pass_id":
		return BadPassID
	case "patient_id":
		return BadPatientID
	case "purpose":
		return BadPurpose
	case "max_distance_m":
		return BadDistance
	case "signature":
		return BadSignature
	}
	return MalformedJSON
}

// PassBook holds the passes qfence needs, by patient: a global table like
// the orders, read by every partition and written by the passes reader.
// A patient's passes are few (a trip each), so each patient's are a small
// slice, replaced whole on every change (readers never see it change).
type PassBook struct {
	seed   maphash.Seed
	shards [64]passShard
	n      atomic.Int64
	// orders, once linked, get each patient's passes on their Order
	// (Order.Passes): the hot path reads them there. linkMu orders a
	// patient's pass changes with the arrival of a new order version.
	orders *OrderBook
	linkMu sync.Mutex
}

// link makes orders carry their patients' passes from now on (idempotent;
// one order book per pass book).
func (b *PassBook) link(orders *OrderBook) {
	b.linkMu.Lock()
	defer b.linkMu.Unlock()
	if b.orders == orders {
		return
	}
	b.orders = orders
	orders.passes.Store(b)
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.RLock()
		for patient, ps := range s.byPatient {
			if o := orders.Lookup(patient); o != nil {
				o.passes.Store(&ps)
			}
		}
		s.mu.RUnlock()
	}
}

// attach puts a patient's new list on their order (linkMu held).
func (b *PassBook) attach(patient string, ps []*Pass) {
	if b.orders == nil {
		return
	}
	if o := b.orders.Lookup(patient); o != nil {
		if len(ps) == 0 {
			o.passes.Store(nil)
		} else {
			o.passes.Store(&ps)
		}
	}
}

type passShard struct {
	mu        sync.RWMutex
	byPatient map[string][]*Pass
	byID      map[string]*Pass
}

// NewPassBook returns an empty book.
func NewPassBook() *PassBook {
	b := &PassBook{seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].byPatient = make(map[string][]*Pass)
		b.shards[i].byID = make(map[string]*Pass)
	}
	return b
}

func (b *PassBook) shard(key string) *passShard {
	return &b.shards[maphash.String(b.seed, key)%uint64(len(b.shards))]
}

// For returns the patient's passes (nil for most patients). The slice must
// not be changed.
func (b *PassBook) For(patient []byte) []*Pass {
	if b == nil || b.n.Load() == 0 {
		return nil
	}
	s := b.shard(string(patient))
	s.mu.RLock()
	ps := s.byPatient[string(patient)]
	s.mu.RUnlock()
	return ps
}

// ByID returns the pass with this pass_id, or nil.
func (b *PassBook) ByID(id string) *Pass {
	s := b.idShard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byID[id]
}

// idShard keys passes by id in the shards too (a separate map per shard).
func (b *PassBook) idShard(id string) *passShard { return b.shard("#" + id) }

// Put adds or replaces a pass (a new version of its pass_id) and returns
// the one it replaced, if any.
func (b *PassBook) Put(p *Pass) (old *Pass) {
	b.linkMu.Lock()
	defer b.linkMu.Unlock()
	return b.put(p)
}

func (b *PassBook) put(p *Pass) (old *Pass) {
	old = b.delete(p.ID)
	is := b.idShard(p.ID)
	is.mu.Lock()
	is.byID[p.ID] = p
	is.mu.Unlock()
	s := b.shard(p.PatientID)
	s.mu.Lock()
	cur := s.byPatient[p.PatientID]
	next := make([]*Pass, 0, len(cur)+1)
	next = append(next, cur...)
	next = append(next, p)
	s.byPatient[p.PatientID] = next
	s.mu.Unlock()
	b.attach(p.PatientID, next)
	b.n.Add(1)
	return old
}

// Apply puts p in the book unless it is stale: an older version
// (issued_at) than the one held under its pass_id, which it then leaves in
// force and returns a Reject for (contract 1.4). A version without
// issued_at, or one replacing a version without it, is not judged older.
func (b *PassBook) Apply(p *Pass) (old *Pass, err error) {
	b.linkMu.Lock()
	defer b.linkMu.Unlock()
	if err := CheckVersion(p, b.ByID(p.ID)); err != nil {
		return nil, err
	}
	return b.put(p), nil
}

// CheckVersion is a Reject (stale) when p is an older version than held:
// both have issued_at and p's is earlier. held may be nil.
func CheckVersion(p, held *Pass) error {
	if held != nil && p.IssuedAt != 0 && held.IssuedAt != 0 && p.IssuedAt < held.IssuedAt {
		return reject(Stale, "issued_at %s is older than the held version's %s", FormatTS(p.IssuedAt), FormatTS(held.IssuedAt))
	}
	return nil
}

// Delete removes the pass with this pass_id (a tombstone) and returns it.
func (b *PassBook) Delete(id string) *Pass {
	b.linkMu.Lock()
	defer b.linkMu.Unlock()
	return b.delete(id)
}

func (b *PassBook) delete(id string) *Pass {
	is := b.idShard(id)
	is.mu.Lock()
	old := is.byID[id]
	delete(is.byID, id)
	is.mu.Unlock()
	if old == nil {
		return nil
	}
	s := b.shard(old.PatientID)
	s.mu.Lock()
	cur := s.byPatient[old.PatientID]
	next := make([]*Pass, 0, len(cur))
	for _, q := range cur {
		if q != old {
			next = append(next, q)
		}
	}
	if len(next) == 0 {
		delete(s.byPatient, old.PatientID)
	} else {
		s.byPatient[old.PatientID] = next
	}
	s.mu.Unlock()
	b.attach(old.PatientID, next)
	b.n.Add(-1)
	return old
}

// Len is how many passes the book holds.
func (b *PassBook) Len() int { return int(b.n.Load()) }

// Expire removes every pass that ended (valid_to or revoked_at) before
// cutoff and returns how many it removed: a pass that ended more than a
// day before the watermark can excuse no ping that is not late.
func (b *PassBook) Expire(cutoff int64) int {
	var ids []string
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.RLock()
		for id, p := range s.byID {
			if p.End() < cutoff {
				ids = append(ids, id)
			}
		}
		s.mu.RUnlock()
	}
	for _, id := range ids {
		b.Delete(id)
	}
	return len(ids)
}

// PassPatient finds a pass message's patient_id without decoding it: a
// fiftieth of a full parse, so that reading a city's passes at start
// spends little on the passes of people under no order. ok is false when
// it cannot tell for sure: then parse. It is sure only of a message with
// no backslash (an escaped key decodes to the same name) and the key once,
// in any case (encoding/json matches keys case-insensitively): otherwise
// the sniff and the parse could name two patients, and a pass be held
// while running and passed over after a restart.
func PassPatient(value []byte) (id []byte, ok bool) {
	const key = `"patient_id"`
	if bytes.IndexByte(value, '\\') >= 0 {
		return nil, false
	}
	i, n := -1, 0
	for j := bytes.IndexByte(value, '"'); j >= 0 && j+len(key) <= len(value); {
		if bytes.EqualFold(value[j:j+len(key)], []byte(key)) {
			i, n = j, n+1
		}
		k := bytes.IndexByte(value[j+1:], '"')
		if k < 0 {
			break
		}
		j += 1 + k
	}
	if n != 1 {
		return nil, false
	}
	s := scanner{b: value, i: i + len(key)}
	s.ws()
	if !s.eat(':') {
		return nil, false
	}
	s.ws()
	raw, escaped, ok := s.str()
	if !ok || escaped {
		return nil, false
	}
	return raw, true
}
