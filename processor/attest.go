package processor

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"

	"github.com/go-jose/go-jose/v4"
)

// CheckinReason says why a check-in did not count (contract 2.3, the
// reason of checkin_rejected). The zero value is a check-in that counted.
type CheckinReason uint8

// The reasons of contract 2.3, in the order Verify checks them.
const (
	CheckinCounted CheckinReason = iota
	CheckinNoAttestation
	CheckinMalformedAttestation
	CheckinUnknownKey
	CheckinBadSignature
	CheckinWrongAudience
	CheckinMismatch
	CheckinExpired
	CheckinWeakIntegrity
)

var checkinReasonNames = [...]string{"", "no_attestation", "malformed_attestation", "unknown_key", "bad_signature",
	"wrong_audience", "mismatch", "expired", "weak_integrity"}

// CheckinReasons lists every rejection reason, for metrics and tests.
var CheckinReasons = []CheckinReason{CheckinNoAttestation, CheckinMalformedAttestation, CheckinUnknownKey, CheckinBadSignature, CheckinWrongAudience,
	CheckinMismatch, CheckinExpired, CheckinWeakIntegrity}

func (r CheckinReason) String() string { return checkinReasonNames[r] }

// Integrity is the platform's verdict on the phone and the app, as the
// verification service checked it (contract 2.3), weakest first.
type Integrity uint8

// The integrity levels.
const (
	IntegrityNone Integrity = iota
	IntegrityBasic
	IntegrityDevice
	IntegrityStrong
)

var integrityNames = [...]string{"none", "basic", "device", "strong"}

func (i Integrity) String() string { return integrityNames[i] }

// ParseIntegrity reads an integrity level by name.
func ParseIntegrity(s string) (Integrity, bool) {
	for i, n := range integrityNames {
		if s == n {
			return Integrity(i), true
		}
	}
	return 0, false
}

// attestationAlgs is the allow-list of contract 2.3: any other alg (none,
// HS256 with a public key as its secret, RS256) is refused before any key
// is looked at.
var attestationAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256}

// MaxAttestationBytes bounds a check-in's attestation (contract 1.1).
const MaxAttestationBytes = 2048

// KeySet is the verification service's public keys, by kid: a parsed
// checkins.verify_keys_file. It is immutable.
type KeySet struct {
	keys map[string]any // ed25519.PublicKey or *ecdsa.PublicKey
}

// Len is the number of keys.
func (k *KeySet) Len() int { return len(k.keys) }

// ParseKeySet reads a JWKS document (RFC 7517) of Ed25519 (kty OKP, crv
// Ed25519) and P-256 (kty EC) public keys, each with a kid. Anything else in
// it (a private key, another curve, RSA, a kid twice, no key at all) refuses
// the whole file, so that a half-read set never replaces a good one.
func ParseKeySet(data []byte) (*KeySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %w", err)
	}
	if len(doc.Keys) == 0 {
		return nil, errors.New(`no keys: a JWKS document is {"keys":[…]} with at least one key`)
	}
	set := &KeySet{keys: make(map[string]any, len(doc.Keys))}
	for i, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if k.KeyID == "" {
			return nil, fmt.Errorf("key %d: no kid", i)
		}
		if _, dup := set.keys[k.KeyID]; dup {
			return nil, fmt.Errorf("key %d: kid %q appears twice", i, k.KeyID)
		}
		if !k.IsPublic() {
			return nil, fmt.Errorf("key %q is not a public key (a private or a symmetric one): the keys file holds public keys only", k.KeyID)
		}
		switch pub := k.Key.(type) {
		case ed25519.PublicKey:
			set.keys[k.KeyID] = pub
		case *ecdsa.PublicKey:
			if pub.Curve != elliptic.P256() {
				return nil, fmt.Errorf("key %q: curve %s, want P-256", k.KeyID, pub.Curve.Params().Name)
			}
			set.keys[k.KeyID] = pub
		default:
			return nil, fmt.Errorf("key %q: type %T, want an Ed25519 (OKP) or P-256 (EC) public key", k.KeyID, k.Key)
		}
	}
	return set, nil
}

// Attestation is how check-ins are judged (contract 2.3). Its keys may be
// swapped while engines use it (a SIGHUP re-reads the keys file); the rest
// is fixed at start-up.
type Attestation struct {
	Audience     string
	MinIntegrity Integrity
	keys         atomic.Pointer[KeySet]
}

// NewAttestation returns the rules with their first key set.
func NewAttestation(keys *KeySet, audience string, min Integrity) *Attestation {
	a := &Attestation{Audience: audience, MinIntegrity: min}
	a.keys.Store(keys)
	return a
}

// SetKeys replaces the key set.
func (a *Attestation) SetKeys(k *KeySet) { a.keys.Store(k) }

// Keys is the key set in force.
func (a *Attestation) Keys() *KeySet { return a.keys.Load() }

// claims is the payload of an attestation (contract 2.3). Pointers tell
// absent from zero.
type claims struct {
	Aud       json.RawMessage `json:"aud"`
	Iss       string          `json:"iss"`
	Sub       *string         `json:"sub"`
	Verified  *bool           `json:"verified"`
	Method    *string         `json:"method"`
	RequestID *string         `json:"request_id"`
	Fix       *struct {
		TS       *int64   `json:"ts"`
		Lat      *float64 `json:"lat"`
		Lon      *float64 `json:"lon"`
		Accuracy *float64 `json:"accuracy_m"`
		Source   *string  `json:"source"`
	} `json:"fix"`
	Iat       *int64  `json:"iat"`
	Exp       *int64  `json:"exp"`
	Integrity *string `json:"integrity"`
}

// Verify judges the check-in of ping p (which must carry one): CheckinCounted, or
// why it does not count. Every claim is checked here and nowhere else.
func (a *Attestation) Verify(p *Ping) CheckinReason {
	if len(p.Attestation) == 0 {
		return CheckinNoAttestation
	}
	jws, err := jose.ParseSignedCompact(string(p.Attestation), attestationAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return CheckinMalformedAttestation
	}
	// Only the kid is read from the header: a jku, x5u or embedded jwk
	// names a key the sender chose, and is never looked at.
	key, ok := a.Keys().keys[jws.Signatures[0].Header.KeyID]
	if !ok {
		return CheckinUnknownKey
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return CheckinBadSignature
	}
	var cl claims
	if err := json.Unmarshal(payload, &cl); err != nil || cl.Iat == nil || cl.Exp == nil || cl.Fix == nil ||
		cl.Verified == nil || cl.Sub == nil {
		return CheckinMalformedAttestation
	}
	integrity := IntegrityNone
	if cl.Integrity != nil {
		if integrity, ok = ParseIntegrity(*cl.Integrity); !ok {
			return CheckinMalformedAttestation
		}
	}
	if !audience(cl.Aud, a.Audience) {
		return CheckinWrongAudience
	}
	if !cl.matches(p) {
		return CheckinMismatch
	}
	// In milliseconds, so that a ts within a second is judged exactly.
	if *cl.Iat*1000 > p.TS+300_000 || p.TS > *cl.Exp*1000 || *cl.Exp-*cl.Iat > 3600 {
		return CheckinExpired
	}
	if integrity < a.MinIntegrity {
		return CheckinWeakIntegrity
	}
	return CheckinCounted
}

// audience reports whether aud (a string, or an array of strings as RFC
// 7519 allows) names want.
func audience(aud json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(aud, &one) == nil {
		return one == want
	}
	var many []string
	if json.Unmarshal(aud, &many) != nil {
		return false
	}
	for _, s := range many {
		if s == want {
			return true
		}
	}
	return false
}

// matches reports whether the statement is about this ping: its patient,
// its check-in's verdict, method and request, and its fix.
func (cl *claims) matches(p *Ping) bool {
	c := &p.Checkin
	if *cl.Sub != string(p.PatientID) || *cl.Verified != c.Verified {
		return false
	}
	if (cl.Method == nil) != (c.Method == nil) || cl.Method != nil && *cl.Method != string(c.Method) {
		return false
	}
	if (cl.RequestID == nil) != !c.HasRequestID {
		return false
	}
	if cl.RequestID != nil && !strings.EqualFold(*cl.RequestID, hex.EncodeToString(c.RequestID[:])) {
		return false
	}
	f := cl.Fix
	if f.TS == nil || f.Lat == nil || f.Lon == nil || f.Accuracy == nil || *f.TS != p.TS {
		return false
	}
	if math.Abs(*f.Lat-p.Lat) > 1e-6 || math.Abs(*f.Lon-p.Lon) > 1e-6 || math.Abs(*f.Accuracy-p.Accuracy) > 0.1 {
		return false
	}
	return (f.Source == nil) == (p.Source == nil) && (f.Source == nil || *f.Source == string(p.Source))
}

// Statement is what the verification service signs (contract 2.3): the
// issuer's side of Verify, for the simulator and the tests.
type Statement struct {
	Aud       string `json:"aud"`
	Iss       string `json:"iss,omitempty"`
	Sub       string `json:"sub"`
	Verified  bool   `json:"verified"`
	Method    string `json:"method,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Fix       Fix    `json:"fix"`
	Iat       int64  `json:"iat"`
	Exp       int64  `json:"exp"`
	Integrity string `json:"integrity,omitempty"`
}

// Fix is the fix a statement vouches for.
type Fix struct {
	TS       int64   `json:"ts"`
	Lat      float64 `json:"lat"`
	Lon      float64 `json:"lon"`
	Accuracy float64 `json:"accuracy_m"`
	Source   string  `json:"source,omitempty"`
}

// StatementOf is the statement that attests ping p's check-in as it is,
// issued at the ping's second and valid for ten minutes.
func StatementOf(p *Ping, audience string, integrity Integrity) Statement {
	s := Statement{Aud: audience, Iss: "verification", Sub: string(p.PatientID), Verified: p.Checkin.Verified,
		Method: string(p.Checkin.Method), Iat: p.TS / 1000, Exp: p.TS/1000 + 600, Integrity: integrity.String(),
		Fix: Fix{TS: p.TS, Lat: p.Lat, Lon: p.Lon, Accuracy: p.Accuracy, Source: string(p.Source)}}
	if p.Checkin.HasRequestID {
		s.RequestID = hex.EncodeToString(p.Checkin.RequestID[:])
	}
	return s
}

// Sign signs the statement as a compact JWS with key (an
// ed25519.PrivateKey signs EdDSA, an *ecdsa.PrivateKey on P-256 ES256)
// under kid.
func (s Statement) Sign(key any, kid string) (string, error) {
	alg := jose.EdDSA
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = jose.ES256
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}
