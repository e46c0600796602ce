package processor_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/processor"
)

// The signing golden: another issuer's implementation can check itself
// against it. The key pair is Ed25519's from the seed 00 01 02 … 1f.
const (
	goldenPublicKey = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
	goldenMessage   = "qfence-pass-v2\nPX-20260402-000123-1\np-000123\npharmacy\n1775124000000\n1775127600000\n1500\n\n1775122872000"
	goldenSignature = "CLD2PrDDOORXl/PdGn/cdrCu+15BmSGNSQVsCF9WGr2ahndQ7j43kzogqQ+0FYEbI1KWXf0ImvZxWkWfQwh/CA=="
	goldenPass      = `{"pass_id":"PX-20260402-000123-1","patient_id":"p-000123","purpose":"pharmacy",` +
		`"valid_from":"2026-04-02T10:00:00Z","valid_to":"2026-04-02T11:00:00Z","max_distance_m":1500,` +
		`"issued_at":"2026-04-02T09:41:12Z","signature":"` + goldenSignature + `"}`
)

func seedKey(first byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = first + byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func keysOf(t *testing.T, lines ...string) []ed25519.PublicKey {
	t.Helper()
	keys, err := processor.ParseVerifyKeys([]byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestPassSignatureGolden(t *testing.T) {
	k := seedKey(0)
	if got := base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey)); got != goldenPublicKey {
		t.Fatalf("public key %s, want %s", got, goldenPublicKey)
	}
	dec := processor.PassDecoder{MaxDuration: 12 * time.Hour, Keys: keysOf(t, goldenPublicKey)}
	p, err := dec.Decode([]byte("PX-20260402-000123-1"), []byte(goldenPass))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(processor.SigningMessage(p)); got != goldenMessage {
		t.Errorf("signing message %q, want %q", got, goldenMessage)
	}
	if got := base64.StdEncoding.EncodeToString(ed25519.Sign(k, []byte(goldenMessage))); got != goldenSignature {
		t.Errorf("signature %s, want %s", got, goldenSignature)
	}
	// One flipped byte anywhere that is signed, or in the signature, fails.
	for _, tamper := range []struct{ from, to string }{
		{`"pharmacy"`, `"grocery"`}, {`"max_distance_m":1500`, `"max_distance_m":1501`},
		{`11:00:00Z`, `11:00:01Z`}, {goldenSignature[:10], "A" + goldenSignature[1:10]},
		// A revocation added by anyone, and a version re-dated to look newer.
		{`"issued_at"`, `"revoked_at":"2026-04-02T10:30:00Z","issued_at"`}, {`09:41:12Z`, `09:41:13Z`},
	} {
		bad := strings.Replace(goldenPass, tamper.from, tamper.to, 1)
		_, err := dec.Decode(nil, []byte(bad))
		var rj *processor.Reject
		if !errors.As(err, &rj) || rj.Reason != processor.BadSignature {
			t.Errorf("tampered %s→%s: %v, want bad_signature", tamper.from, tamper.to, err)
		}
	}
}

// During a key rotation the file holds both keys: a pass signed by either
// verifies; one signed by a third key does not.
func TestPassKeyRotation(t *testing.T) {
	old, cur, other := seedKey(0), seedKey(100), seedKey(200)
	pub := func(k ed25519.PrivateKey) string {
		return base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
	}
	dec := processor.PassDecoder{Keys: keysOf(t, "# rotation in progress", pub(old), "", pub(cur))}
	for name, tc := range map[string]struct {
		key  ed25519.PrivateKey
		want bool
	}{"the old key": {old, true}, "the new key": {cur, true}, "a key not in the file": {other, false}} {
		p := &processor.Pass{ID: "x-1", PatientID: "p-1", Purpose: processor.Trash, ValidFrom: 1775124000000, ValidTo: 1775124600000, IssuedAt: 1775123000000}
		sig := base64.StdEncoding.EncodeToString(ed25519.Sign(tc.key, processor.SigningMessage(p)))
		doc := fmt.Sprintf(`{"pass_id":"x-1","patient_id":"p-1","purpose":"trash","valid_from":1775124000000,"valid_to":1775124600000,"issued_at":1775123000000,"signature":%q}`, sig)
		_, err := dec.Decode(nil, []byte(doc))
		if got := err == nil; got != tc.want {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := processor.ParseVerifyKeys([]byte("not a key\n")); err == nil {
		t.Error("a line that is not a key was accepted")
	}
}

func TestPassDecodeRejects(t *testing.T) {
	const ok = `"pass_id":"x-1","patient_id":"p-1","purpose":"pet","valid_from":"2026-04-02T10:00:00Z","valid_to":"2026-04-02T11:00:00Z"`
	tests := []struct {
		name, key, in string
		want          processor.Reason
	}{
		{"not JSON", "x-1", `{`, processor.MalformedJSON},
		{"no pass_id", "", `{"patient_id":"p-1","purpose":"pet","valid_from":1,"valid_to":2}`, processor.MissingField},
		{"no valid_to", "", `{"pass_id":"x-1","patient_id":"p-1","purpose":"pet","valid_from":"2026-04-02T10:00:00Z"}`, processor.MissingField},
		{"a key that is not the pass_id", "x-2", `{` + ok + `}`, processor.BadPassID},
		{"a pass_id with a space", "", `{` + strings.Replace(ok, `"x-1"`, `"x 1"`, 1) + `}`, processor.BadPassID},
		{"a bad patient_id", "", `{` + strings.Replace(ok, `"p-1"`, `"p/1"`, 1) + `}`, processor.BadPatientID},
		{"an unknown purpose", "", `{` + strings.Replace(ok, `"pet"`, `"party"`, 1) + `}`, processor.BadPurpose},
		{"an end before the start", "", `{` + strings.Replace(ok, `11:00:00Z`, `09:00:00Z`, 1) + `}`, processor.BadPeriod},
		{"longer than max_duration", "", `{` + strings.Replace(ok, `"2026-04-02T11:00:00Z"`, `"2026-04-03T11:00:00Z"`, 1) + `}`, processor.BadPeriod},
		{"a bad revoked_at", "", `{` + ok + `,"revoked_at":"soon"}`, processor.BadPeriod},
		{"a max_distance_m under 10", "", `{` + ok + `,"max_distance_m":5}`, processor.BadDistance},
		{"a max_distance_m as a string", "", `{` + ok + `,"max_distance_m":"5"}`, processor.BadDistance},
		{"no signature with keys set", "", `{` + ok + `}`, processor.BadSignature},
		{"a signature that is not base64", "", `{` + ok + `,"issued_at":1775123000000,"signature":"` + strings.Repeat("%", 88) + `"}`, processor.BadSignature},
		{"a signature of the wrong length", "", `{` + ok + `,"issued_at":1775123000000,"signature":"` + strings.Repeat("A", 3000) + `"}`, processor.BadSignature},
		{"no issued_at with keys set", "", `{` + ok + `,"signature":"` + goldenSignature + `"}`, processor.MissingField},
		{"too large", "", `{` + ok + `,"pad":"` + strings.Repeat("x", 5000) + `"}`, processor.TooLarge},
	}
	dec := processor.PassDecoder{MaxBytes: 4096, MaxDuration: 12 * time.Hour, Keys: keysOf(t, goldenPublicKey)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var key []byte
			if tt.key != "" {
				key = []byte(tt.key)
			}
			_, err := dec.Decode(key, []byte(tt.in))
			var rj *processor.Reject
			if !errors.As(err, &rj) || rj.Reason != tt.want || rj.Msg == "" {
				t.Errorf("got %v, want reason %s", err, tt.want)
			}
		})
	}
	// Without keys, an unsigned pass is accepted.
	if _, err := (&processor.PassDecoder{}).Decode(nil, []byte(`{`+ok+`}`)); err != nil {
		t.Errorf("an unsigned pass without verify keys: %v", err)
	}
}

// Coverage at each boundary (contract 2): valid_from <= ts < valid_to,
// ts < revoked_at, d - a <= max_distance_m + m.
func TestPassCoversAtItsBoundaries(t *testing.T) {
	p := processor.Pass{ValidFrom: 1000, ValidTo: 2000, RevokedAt: 1800, MaxDistanceM: 500}
	const m = 25
	tests := []struct {
		name    string
		ts      int64
		d, a    float64
		covered bool
	}{
		{"at valid_from", 1000, 100, 10, true},
		{"just before valid_from", 999, 100, 10, false},
		{"just before revoked_at", 1799, 100, 10, true},
		{"at revoked_at", 1800, 100, 10, false},
		{"exactly max_distance_m + m away, accuracy counted", 1500, 560, 35, true},
		{"a centimetre beyond", 1500, 560.01, 35, false},
	}
	for _, tt := range tests {
		if got := p.Covers(tt.ts, tt.d, tt.a, m); got != tt.covered {
			t.Errorf("%s: covered %v, want %v", tt.name, got, tt.covered)
		}
	}
	unrevoked := processor.Pass{ValidFrom: 1000, ValidTo: 2000}
	if !unrevoked.Covers(1999, 1e6, 0, m) || unrevoked.Covers(2000, 0, 0, m) {
		t.Error("a pass without a distance bound covers any distance, up to valid_to exclusive")
	}
}

func TestPassBookByPatientAndID(t *testing.T) {
	b := processor.NewPassBook()
	a1 := &processor.Pass{ID: "a1", PatientID: "p-a", ValidTo: 10}
	a2 := &processor.Pass{ID: "a2", PatientID: "p-a", ValidTo: 5000}
	b.Put(a1)
	b.Put(a2)
	b.Put(&processor.Pass{ID: "b1", PatientID: "p-b", ValidTo: 10})
	if n := len(b.For([]byte("p-a"))); n != 2 || b.Len() != 3 {
		t.Fatalf("p-a has %d passes, the book %d", n, b.Len())
	}
	moved := &processor.Pass{ID: "a1", PatientID: "p-c", ValidTo: 10} // a new version of a1, for another patient
	if old := b.Put(moved); old != a1 || len(b.For([]byte("p-a"))) != 1 || len(b.For([]byte("p-c"))) != 1 {
		t.Errorf("replacing a1 left p-a with %d passes", len(b.For([]byte("p-a"))))
	}
	if b.Delete("b1") == nil || b.For([]byte("p-b")) != nil || b.ByID("b1") != nil {
		t.Error("a tombstone did not delete b1")
	}
	if n := b.Expire(100); n != 1 || b.Len() != 1 || b.ByID("a2") != a2 {
		t.Errorf("expired %d, %d left", n, b.Len())
	}
}

// FuzzPassDecode: any message is a pass or a rejection with a reason the
// contract lists; nothing panics; when the sniff (PassPatient) is sure of
// a patient, the parse names the same one.
func FuzzPassDecode(f *testing.F) {
	f.Add([]byte("PX-20260402-000123-1"), []byte(goldenPass))
	f.Add([]byte(nil), []byte(`{"pass_id":"x","patient_id":"p","purpose":"pet","valid_from":1775124000000,"valid_to":1775127600000}`))
	f.Add([]byte("k"), []byte(`{"pass_id":null}`))
	keys := []ed25519.PublicKey{seedKey(0).Public().(ed25519.PublicKey)}
	f.Add([]byte(nil), []byte(`{"patient_id":"p-other","Patient_ID":"p-real","pass_id":"x","purpose":"pet","valid_from":1,"valid_to":2}`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		if id, ok := processor.PassPatient(value); ok {
			if p, err := (&processor.PassDecoder{}).Parse(nil, value); err == nil && p.PatientID != string(id) {
				t.Fatalf("the sniff names %q, the parse %q", id, p.PatientID)
			}
		}
		for _, dec := range []processor.PassDecoder{{MaxBytes: 4096, MaxDuration: 12 * time.Hour}, {MaxBytes: 4096, MaxDuration: 12 * time.Hour, Keys: keys}} {
			p, err := dec.Decode(key, value)
			if err == nil {
				if p == nil || p.ValidTo <= p.ValidFrom || p.Purpose == 0 {
					t.Fatalf("accepted an invalid pass %+v", p)
				}
				continue
			}
			var rj *processor.Reject
			if !errors.As(err, &rj) || rj.Msg == "" {
				t.Fatalf("error %v is not a reject", err)
			}
			known := false
			for _, r := range processor.PassReasons {
				known = known || r == rj.Reason
			}
			if !known {
				t.Fatalf("reason %s is not a pass reason", rj.Reason)
			}
		}
	})
}

// The sniff names a patient only when it is sure the parse names the same
// one; otherwise the pass is parsed.
func TestPassPatientIsFoundWithoutAParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{`{"pass_id":"x","patient_id":"p-1","purpose":"pet"}`, "p-1", true},
		{`{"pass_id":"x", "patient_id" :  "p-2"}`, "p-2", true},
		{`{"patient_id":"p\u002d3"}`, "", false},                     // escaped: parse
		{`{"patient_id":"p-1","x":{"patient_id":"p-9"}}`, "", false}, // twice: parse
		{`{"pass_id":"x"}`, "", false},
		{`{"patient_id":7}`, "", false},
		// Keys that encoding/json reads as patient_id too: the sniff would
		// name another patient than the parse.
		{`{"patient\u005fid":"p-real","patient_id":"p-other"}`, "", false},
		{`{"patient_id":"p-other","Patient_ID":"p-real"}`, "", false},
		{`{"patient_id":"p-1","note":"\"patient_id\""}`, "", false},
	} {
		id, ok := processor.PassPatient([]byte(tc.in))
		if ok != tc.ok || string(id) != tc.want {
			t.Errorf("%s: %q %v, want %q %v", tc.in, id, ok, tc.want, tc.ok)
		}
	}
}

// Once linked to the order book (Engine.UsePasses), a patient's passes ride
// on their order, whatever arrives first, and follow replacements and
// deletions: the hot path reads them there.
func TestPassesRideOnTheirOrder(t *testing.T) {
	orders := processor.NewOrderBook()
	passes := processor.NewPassBook()
	order := func() *processor.Order {
		return &processor.Order{PatientID: "p-1", RadiusM: 50, EndsAt: 1 << 62}
	}
	passes.Put(&processor.Pass{ID: "early", PatientID: "p-1", ValidTo: 10})
	orders.Put(order())
	processor.NewEngine(processor.DefaultRules(), orders).UsePasses(passes) // links: the early pass reaches the order
	ids := func() string {
		var out []string
		for _, p := range orders.Lookup("p-1").Passes() {
			out = append(out, p.ID)
		}
		return strings.Join(out, ",")
	}
	if got := ids(); got != "early" {
		t.Fatalf("after linking: %q", got)
	}
	passes.Put(&processor.Pass{ID: "later", PatientID: "p-1", ValidTo: 10})
	if got := ids(); got != "early,later" {
		t.Errorf("after a new pass: %q", got)
	}
	orders.Put(order()) // a new version of the order keeps them
	if got := ids(); got != "early,later" {
		t.Errorf("after the order was replaced: %q", got)
	}
	passes.Delete("early")
	if got := ids(); got != "later" {
		t.Errorf("after a deletion: %q", got)
	}
	orders.Revoke([]byte("p-1"))
	orders.Put(order()) // revoked, then ordered again
	if got := ids(); got != "later" {
		t.Errorf("after a revocation and a new order: %q", got)
	}
	passes.Delete("later")
	if got := ids(); got != "" {
		t.Errorf("after the last deletion: %q", got)
	}
}
