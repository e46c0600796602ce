package clickhouse

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// pseudonymizer maps patient ids to the first 32 hex digits of their
// HMAC-SHA256 under the configured key. Only the flush goroutine uses it.
type pseudonymizer struct {
	key   []byte
	cache map[string]string
}

func newPseudonymizer(key []byte) *pseudonymizer {
	return &pseudonymizer{key: key, cache: make(map[string]string)}
}

// Pseudonym is the pseudonym of id under key (config/contract/CONTRACT.md 3.2).
func Pseudonym(key []byte, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

func (p *pseudonymizer) of(id string) string {
	if v, ok := p.cache[id]; ok {
		return v
	}
	if len(p.cache) > 2_000_000 { // bound the cache; it refills with who pings now
		clear(p.cache)
	}
	v := Pseudonym(p.key, id)
	p.cache[strings.Clone(id)] = v
	return v
}
