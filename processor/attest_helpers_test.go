package processor_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/json"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/qfence/qfence/processor"
)

// The verification service's keys in these tests: k1 Ed25519, k2 P-256,
// both from fixed seeds so that signatures are reproducible.
var (
	attestKey   = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	attestKeyEC = func() *ecdsa.PrivateKey {
		scalar := make([]byte, 32)
		scalar[31] = 7
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar)
		if err != nil {
			panic(err)
		}
		return k
	}()
)

// jwks is the JWKS document of the public halves of keys, by kid.
func jwks(t testing.TB, keys map[string]any) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for kid, k := range keys {
		var pub any
		switch k := k.(type) {
		case ed25519.PrivateKey:
			pub = k.Public()
		case *ecdsa.PrivateKey:
			pub = &k.PublicKey
		default:
			pub = k
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: pub, KeyID: kid})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func attestKeys(t testing.TB) *processor.KeySet {
	t.Helper()
	ks, err := processor.ParseKeySet(jwks(t, map[string]any{"k1": attestKey, "k2": attestKeyEC}))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}
