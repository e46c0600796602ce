package config_test

import (
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/qfence/qfence/config"
)

func writeJWKS(t *testing.T, path string, kids ...string) {
	t.Helper()
	var set jose.JSONWebKeySet
	for i, kid := range kids {
		seed := make([]byte, ed25519.SeedSize)
		seed[0] = byte(i)
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: ed25519.NewKeyFromSeed(seed).Public(), KeyID: kid})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The keys file is read at Load and again on SIGHUP; a bad file on reload
// keeps the keys in force and says why.
func TestCheckinKeysReload(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.jwks")
	writeJWKS(t, keys, "a", "b")
	file := filepath.Join(dir, "qfence.yaml")
	if err := os.WriteFile(file, []byte("checkins:\n  verify_keys_file: "+keys+"\n  min_integrity: device\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.EngineRules()
	if !cfg.Attested() || r.Checkins.Attest == nil || r.Checkins.Attest.Keys().Len() != 2 || r.Checkins.Attest.MinIntegrity.String() != "device" {
		t.Fatalf("attested %v, rules %+v", cfg.Attested(), r.Checkins.Attest)
	}
	writeJWKS(t, keys, "c")
	if n, err := cfg.ReloadCheckinKeys(); err != nil || n != 1 || r.Checkins.Attest.Keys().Len() != 1 {
		t.Fatalf("reload: %d keys, %v; the engine's rules hold %d", n, err, r.Checkins.Attest.Keys().Len())
	}
	if err := os.WriteFile(keys, []byte(`{"keys":[{"kty":"oct","k":"AAAA","kid":"x"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := cfg.ReloadCheckinKeys()
	if err == nil || !strings.Contains(err.Error(), "checkins.verify_keys_file") || n != 1 || r.Checkins.Attest.Keys().Len() != 1 {
		t.Fatalf("a bad file: %d keys, %v; want the old key kept and the key named", n, err)
	}
}

// Without the keys file, check-ins count on the phone's word.
func TestNoCheckinKeysIsUnattested(t *testing.T) {
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Attested() || cfg.EngineRules().Checkins.Attest != nil {
		t.Fatal("the default configuration verifies check-ins")
	}
}
