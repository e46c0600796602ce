package processor_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/qfence/qfence/processor"
)

// attested is a check-in ping at home answering a request, as the app sends
// it, with the statement the verification service would sign for it.
func attested() (processor.Ping, processor.Statement) {
	p := ping(naming(5, verified(in(8))))
	p.Source = []byte("gps")
	st := processor.StatementOf(&p, "qfence", processor.IntegrityDevice)
	return p, st
}

func sign(t testing.TB, st processor.Statement, key any, kid string) []byte {
	t.Helper()
	jws, err := st.Sign(key, kid)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(jws)
}

// b64 is base64url without padding, as JWS uses it.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func payload(t testing.TB, st processor.Statement) string {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every claim of contract 2.3, one rejection reason or boundary a case.
func TestAttestationClaims(t *testing.T) {
	other := ed25519.NewKeyFromSeed([]byte("another service, not in our set!"))
	tests := []struct {
		name  string
		edit  func(p *processor.Ping, st *processor.Statement) // the statement signed with k1
		token func(t testing.TB, p *processor.Ping) []byte     // or a token made otherwise
		want  processor.CheckinReason
	}{
		{name: "a statement of this ping, signed EdDSA, counts", want: processor.CheckinCounted},
		{name: "a statement signed ES256 by the P-256 key counts", want: processor.CheckinCounted,
			token: func(t testing.TB, p *processor.Ping) []byte {
				return sign(t, processor.StatementOf(p, "qfence", processor.IntegrityDevice), attestKeyEC, "k2")
			}},
		{name: "no attestation", want: processor.CheckinNoAttestation,
			token: func(testing.TB, *processor.Ping) []byte { return nil }},
		{name: "not a JWS", want: processor.CheckinMalformedAttestation,
			token: func(testing.TB, *processor.Ping) []byte { return []byte("selfie-ok") }},
		{name: "a kid not in the set", want: processor.CheckinUnknownKey,
			edit: nil, token: func(t testing.TB, p *processor.Ping) []byte {
				return sign(t, processor.StatementOf(p, "qfence", processor.IntegrityDevice), other, "k9")
			}},
		{name: "a kid of the set on another key's signature", want: processor.CheckinBadSignature,
			token: func(t testing.TB, p *processor.Ping) []byte {
				return sign(t, processor.StatementOf(p, "qfence", processor.IntegrityDevice), other, "k1")
			}},
		{name: "an ES256 signature under the Ed25519 key's kid", want: processor.CheckinBadSignature,
			token: func(t testing.TB, p *processor.Ping) []byte {
				return sign(t, processor.StatementOf(p, "qfence", processor.IntegrityDevice), attestKeyEC, "k1")
			}},
		{name: "another audience", want: processor.CheckinWrongAudience,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Aud = "another-app" }},
		{name: "another patient", want: processor.CheckinMismatch,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Sub = "p2" }},
		{name: "a verdict the service did not give", want: processor.CheckinMismatch,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Verified = false }},
		{name: "another method", want: processor.CheckinMismatch,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Method = "pin" }},
		{name: "the request id of another request", want: processor.CheckinMismatch,
			edit: func(_ *processor.Ping, st *processor.Statement) {
				id := requestID("p1", 6)
				st.RequestID = strings.ToLower(string(hexOf(id[:])))
			}},
		{name: "a request id the check-in does not name", want: processor.CheckinMismatch,
			edit: func(p *processor.Ping, _ *processor.Statement) { p.Checkin.HasRequestID = false }},
		{name: "a fix 1 ms off", want: processor.CheckinMismatch,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Fix.TS++ }},
		{name: "a fix lat off by 2e-6", want: processor.CheckinMismatch,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Fix.Lat += 2e-6 }},
		{name: "a fix lon off by 5e-7 still matches", want: processor.CheckinCounted,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Fix.Lon += 5e-7 }},
		{name: "an accuracy off by 0.2", want: processor.CheckinMismatch,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Fix.Accuracy += 0.2 }},
		{name: "an accuracy off by 0.05 still matches", want: processor.CheckinCounted,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Fix.Accuracy += 0.05 }},
		{name: "another source", want: processor.CheckinMismatch,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Fix.Source = "wifi" }},
		{name: "exp exactly at ts counts", want: processor.CheckinCounted,
			edit: func(p *processor.Ping, st *processor.Statement) { st.Iat, st.Exp = p.TS/1000-60, p.TS/1000 }},
		{name: "exp a second before ts", want: processor.CheckinExpired,
			edit: func(p *processor.Ping, st *processor.Statement) { st.Iat, st.Exp = p.TS/1000-60, p.TS/1000-1 }},
		{name: "iat 300 s ahead of ts counts", want: processor.CheckinCounted,
			edit: func(p *processor.Ping, st *processor.Statement) { st.Iat, st.Exp = p.TS/1000+300, p.TS/1000+600 }},
		{name: "iat 301 s ahead of ts", want: processor.CheckinExpired,
			edit: func(p *processor.Ping, st *processor.Statement) { st.Iat, st.Exp = p.TS/1000+301, p.TS/1000+600 }},
		{name: "a statement valid for an hour and a second", want: processor.CheckinExpired,
			edit: func(p *processor.Ping, st *processor.Statement) { st.Iat, st.Exp = p.TS/1000-1, p.TS/1000+3600 }},
		{name: "integrity basic, below the minimum device", want: processor.CheckinWeakIntegrity,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Integrity = "basic" }},
		{name: "no integrity verdict is none", want: processor.CheckinWeakIntegrity,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Integrity = "" }},
		{name: "integrity strong counts", want: processor.CheckinCounted,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Integrity = "strong" }},
		{name: "an integrity verdict of no known level", want: processor.CheckinMalformedAttestation,
			edit: func(_ *processor.Ping, st *processor.Statement) { st.Integrity = "excellent" }},
		{name: "a payload without exp", want: processor.CheckinMalformedAttestation,
			token: func(t testing.TB, p *processor.Ping) []byte {
				return signRaw(t, `{"aud":"qfence","sub":"p1","verified":true,"fix":{},"iat":1}`)
			}},

		// The classic attacks on signed tokens.
		{name: "alg none", want: processor.CheckinMalformedAttestation,
			token: func(t testing.TB, p *processor.Ping) []byte {
				_, st := attested()
				return []byte(b64(`{"alg":"none","kid":"k1"}`) + "." + b64(payload(t, st)) + ".")
			}},
		{name: "HS256 with the public key's bytes as the secret", want: processor.CheckinMalformedAttestation,
			token: func(t testing.TB, p *processor.Ping) []byte {
				return compact(t, signWith(t, jose.SigningKey{Algorithm: jose.HS256,
					Key: jose.JSONWebKey{Key: []byte(attestKey.Public().(ed25519.PublicKey)), KeyID: "k1"}}, nil, statement(t, p)))
			}},
		{name: "a JWS in JSON serialization", want: processor.CheckinMalformedAttestation,
			token: func(t testing.TB, p *processor.Ping) []byte {
				jws := signWith(t, jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: attestKey, KeyID: "k1"}}, nil, statement(t, p))
				return []byte(jws.FullSerialize())
			}},
		{name: "an embedded jwk of the forger's own key is ignored", want: processor.CheckinBadSignature,
			token: func(t testing.TB, p *processor.Ping) []byte {
				return compact(t, signWith(t, jose.SigningKey{Algorithm: jose.EdDSA, Key: other},
					(&jose.SignerOptions{EmbedJWK: true}).WithHeader("kid", "k1"), statement(t, p)))
			}},
		{name: "jku and x5u naming the forger's keys are ignored", want: processor.CheckinBadSignature,
			token: func(t testing.TB, p *processor.Ping) []byte {
				return compact(t, signWith(t, jose.SigningKey{Algorithm: jose.EdDSA, Key: other},
					(&jose.SignerOptions{}).WithHeader("kid", "k1").WithHeader("jku", "https://forger.example/keys").
						WithHeader("x5u", "https://forger.example/cert"), statement(t, p)))
			}},
		{name: "a signature copied from another token", want: processor.CheckinBadSignature,
			token: func(t testing.TB, p *processor.Ping) []byte {
				real := string(sign(t, processor.StatementOf(p, "qfence", processor.IntegrityDevice), attestKey, "k1"))
				st := processor.StatementOf(p, "qfence", processor.IntegrityStrong)
				parts := strings.Split(real, ".")
				return []byte(parts[0] + "." + b64(payload(t, st)) + "." + parts[2])
			}},
	}
	att := processor.NewAttestation(attestKeys(t), "qfence", processor.IntegrityDevice)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, st := attested()
			if tt.edit != nil {
				tt.edit(&p, &st)
			}
			if tt.token != nil {
				p.Attestation = tt.token(t, &p)
			} else {
				p.Attestation = sign(t, st, attestKey, "k1")
			}
			got := att.Verify(&p)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// signRaw signs any payload with k1.
func signRaw(t testing.TB, payload string) []byte {
	t.Helper()
	return compact(t, signWith(t, jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: attestKey, KeyID: "k1"}}, nil, []byte(payload)))
}

// signWith signs payload as the caller builds the signer: the tokens no
// honest service makes (other algorithms, headers, serializations).
func signWith(t testing.TB, key jose.SigningKey, opts *jose.SignerOptions, payload []byte) *jose.JSONWebSignature {
	t.Helper()
	signer, err := jose.NewSigner(key, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	return jws
}

func compact(t testing.TB, jws *jose.JSONWebSignature) []byte {
	t.Helper()
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// statement is the honest statement of p's check-in, as JSON.
func statement(t testing.TB, p *processor.Ping) []byte {
	t.Helper()
	return []byte(payload(t, processor.StatementOf(p, "qfence", processor.IntegrityDevice)))
}

func hexOf(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}

// A rotation: both keys of the file count; once a reload drops one, its
// tokens no longer do.
func TestAttestationKeyRotation(t *testing.T) {
	att := processor.NewAttestation(attestKeys(t), "qfence", processor.IntegrityNone)
	p1, st := attested()
	p1.Attestation = sign(t, st, attestKey, "k1")
	p2, st2 := attested()
	p2.Attestation = sign(t, st2, attestKeyEC, "k2")
	if a, b := att.Verify(&p1), att.Verify(&p2); a != processor.CheckinCounted || b != processor.CheckinCounted {
		t.Fatalf("before the reload: k1 %q, k2 %q; want both to count", a, b)
	}
	only2, err := processor.ParseKeySet(jwks(t, map[string]any{"k2": attestKeyEC}))
	if err != nil {
		t.Fatal(err)
	}
	att.SetKeys(only2)
	if a, b := att.Verify(&p1), att.Verify(&p2); a != processor.CheckinUnknownKey || b != processor.CheckinCounted {
		t.Errorf("after the reload: k1 %q, k2 %q; want unknown_key and counted", a, b)
	}
}

// A keys file that is not a set of public Ed25519 or P-256 keys with kids
// is refused whole.
func TestParseKeySetRefuses(t *testing.T) {
	good := jwks(t, map[string]any{"k1": attestKey})
	private, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: attestKey, KeyID: "k1"}}})
	if err != nil {
		t.Fatal(err)
	}
	noKid, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: attestKey.Public()}}})
	if err != nil {
		t.Fatal(err)
	}
	hmac, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "h"}}})
	if err != nil {
		t.Fatal(err)
	}
	twice := strings.Replace(string(good), `]}`, ","+strings.TrimSuffix(strings.TrimPrefix(string(good), `{"keys":[`), `]}`)+`]}`, 1)
	tests := []struct {
		name, doc, want string
	}{
		{"not JSON", "keys", "not a JWKS document"},
		{"no keys", `{"keys":[]}`, "no keys"},
		{"a private key", string(private), "not a public key"},
		{"a key without kid", string(noKid), "no kid"},
		{"a symmetric key", string(hmac), "not a public key"},
		{"a kid twice", twice, "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := processor.ParseKeySet([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if ks, err := processor.ParseKeySet(good); err != nil || ks.Len() != 1 {
		t.Errorf("a good set: %v, %v", ks, err)
	}
}

// An attestation of more than 2048 bytes is bad_checkin at decoding.
func TestOversizedAttestationIsBadCheckin(t *testing.T) {
	big := strings.Repeat("a", processor.MaxAttestationBytes+1)
	msg := `{"patient_id":"p1","ts":1775131200000,"lat":55.75,"lon":37.61,"checkin":{"verified":true,"attestation":"` + big + `"}}`
	var p processor.Ping
	err := (&processor.PingDecoder{MaxBytes: 8192}).Decode([]byte(msg), 0, &p)
	if r, ok := err.(*processor.Reject); !ok || r.Reason != processor.BadCheckin {
		t.Fatalf("got %v, want bad_checkin", err)
	}
	msg = strings.Replace(msg, big, big[1:], 1)
	if err := (&processor.PingDecoder{MaxBytes: 8192}).Decode([]byte(msg), 0, &p); err != nil || len(p.Attestation) != processor.MaxAttestationBytes {
		t.Fatalf("2048 bytes: %v, %d bytes kept", err, len(p.Attestation))
	}
}

// Attested check-ins and the enrolled phone in the engine (contract 2.3),
// with the default rules and every check-in judged against k1.
func TestWhoseWordCounts(t *testing.T) {
	rules := processor.DefaultRules()
	rules.Checkins.Attest = processor.NewAttestation(attestKeys(t), "qfence", processor.IntegrityNone)
	enrol := func(o *processor.Order) { o.EnrolDevice("phone-1") }
	phone := func(tp tping) tping { tp.device = "phone-1"; return tp }
	spare := func(tp tping) tping { tp.device = "spare"; return tp }
	signed := func(tp tping) tping { tp.attest = 's'; return tp }
	forged := func(tp tping) tping { tp.attest = 'x'; return tp }
	tests := []struct {
		name       string
		order      func(*processor.Order)
		steps      []step
		wantStates string
		want       string
	}{
		{"an attested check-in at home ends the breach at once", nil,
			pings(out(0), out(5), signed(verified(in(8)))),
			"outside outside inside",
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:breach_ended@8(0..8) checkin"},
		{"an unattested check-in at home is rejected and ends nothing", nil,
			pings(out(0), out(5), verified(in(8)), out(9), out(21)),
			"outside outside inside outside outside",
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:checkin_rejected@8(8) no_attestation p1:breach_escalated@20(0)"},
		{"a forged fix at home, really out: rejected, the breach escalates", nil,
			pings(out(0), out(5), forged(verified(out(8))), out(21)),
			"outside outside outside outside",
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:checkin_rejected@8(8) mismatch p1:breach_escalated@20(0)"},
		{"a rejected check-in answers no request: it is missed at expiry", nil,
			pings(out(0), out(5), verified(out(8)), out(26)),
			"outside outside outside outside",
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:checkin_rejected@8(8) no_attestation p1:breach_escalated@20(0) p1:checkin_missed@25(5)"},
		{"a rejected failed check-in gives no checkin_failed", nil,
			pings(in(0), failed(in(1))),
			"inside inside",
			"p1:checkin_rejected@1(1) no_attestation"},
		{"a second phone at home does not hide the enrolled one's breach", enrol,
			pings(phone(in(0)), phone(out(1)), spare(in(2)), phone(out(3)), spare(in(4)), phone(out(6)), spare(in(7))),
			"inside outside uncertain/foreign_device outside uncertain/foreign_device outside uncertain/foreign_device",
			"p1:device_mismatch@2(2) p1:device_mismatch@4(4) p1:breach_started@6(1) p1:checkin_requested@6(6) breach_started p1:device_mismatch@7(7)"},
		{"pings without device_id are foreign too; one event per episode", enrol,
			pings(phone(in(0)), in(1), in(2), phone(in(3))),
			"inside uncertain/foreign_device uncertain/foreign_device inside",
			"p1:device_mismatch@1(1)"},
		{"a signed check-in from the second phone answers nothing", enrol,
			pings(phone(out(0)), phone(out(5)), spare(signed(verified(in(8)))), phone(out(21))),
			"outside outside uncertain/foreign_device outside",
			"p1:breach_started@5(0) p1:checkin_requested@5(5) breach_started p1:device_mismatch@8(8) p1:breach_escalated@20(0)"},
		{"the second phone's silence is the enrolled phone's lost signal", enrol,
			pings(phone(in(0)), spare(in(10)), spare(in(25)), spare(in(35))),
			"inside uncertain/foreign_device uncertain/foreign_device uncertain/foreign_device",
			"p1:device_mismatch@10(10) p1:signal_lost@30(0) p1:checkin_requested@30(30) signal_lost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			states, events := runRules(t, rules, tt.order, tt.steps)
			if s := strings.Join(states, " "); s != tt.wantStates {
				t.Errorf("states:\n got  %s\n want %s", s, tt.wantStates)
			}
			if s := strings.Join(events, " "); s != tt.want {
				t.Errorf("events:\n got  %s\n want %s", s, tt.want)
			}
		})
	}
}

// The attestation path never panics and counts only what k1 or k2 signed
// for exactly this ping.
func FuzzAttestation(f *testing.F) {
	p, st := attested()
	f.Add(string(sign(f, st, attestKey, "k1")))
	f.Add(string(sign(f, st, attestKeyEC, "k2")))
	f.Add(b64(`{"alg":"none"}`) + "." + b64(`{}`) + ".")
	f.Add(`{"payload":"e30","signatures":[]}`)
	f.Add("a.b.c")
	att := processor.NewAttestation(attestKeys(f), "qfence", processor.IntegrityDevice)
	f.Fuzz(func(t *testing.T, token string) {
		q := p
		q.Attestation = []byte(token)
		got := att.Verify(&q)
		if got == processor.CheckinCounted {
			// Only a real signature over this ping's statement counts: check it
			// came from one of our keys by verifying it again independently.
			jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
			if err != nil {
				t.Fatalf("counted a token go-jose cannot parse: %v", err)
			}
			if _, err1 := jws.Verify(attestKey.Public()); err1 != nil {
				if _, err2 := jws.Verify(&attestKeyEC.PublicKey); err2 != nil {
					t.Fatalf("counted a token no key of the set signed")
				}
			}
		}
	})
}
