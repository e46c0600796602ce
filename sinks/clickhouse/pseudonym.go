package clickhouse

import (
	"strings"

	"github.com/qfence/qfence/processor"
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

func (p *pseudonymizer) of(id string) string {
	if v, ok := p.cache[id]; ok {
		return v
	}
	if len(p.cache) > 2_000_000 { // bound the cache; it refills with who pings now
		clear(p.cache)
	}
	v := processor.Pseudonym(string(p.key), id)
	p.cache[strings.Clone(id)] = v
	return v
}
