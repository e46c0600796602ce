package api

import (
	"strings"
	"testing"

	"github.com/qfence/qfence/processor"
)

func TestParseTokens(t *testing.T) {
	toks, err := ParseTokens([]byte("# scanners\npolice:officer-7:0123456789abcdef\n\nreviewer:judge-2:fedcba9876543210xx\n"))
	if err != nil || len(toks) != 2 || toks[0].Role != Police || toks[1].Name != "judge-2" {
		t.Fatalf("got %+v, %v", toks, err)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"an unknown role", "admin:x:0123456789abcdef", "must be police or reviewer"},
		{"a short token", "police:x:short", "shorter than 16 bytes"},
		{"a name twice", "police:x:0123456789abcdef\nreviewer:x:0123456789abcdeg", "unique"},
		{"a token twice", "police:x:0123456789abcdef\nreviewer:y:0123456789abcdef", "used by another line"},
		{"no colon", "police", "role:name:token"},
		{"nothing", "# none\n", "no token"},
	} {
		if _, err := ParseTokens([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestStatusOfAPass(t *testing.T) {
	p := &processor.Pass{ValidFrom: 1000, ValidTo: 2000, RevokedAt: 1500}
	for now, want := range map[int64]string{999: "not_yet_valid", 1000: "valid", 1499: "valid", 1500: "revoked", 2500: "revoked"} {
		if got := StatusOf(p, now); got != want {
			t.Errorf("at %d: %s, want %s", now, got, want)
		}
	}
	q := &processor.Pass{ValidFrom: 1000, ValidTo: 2000}
	if got := StatusOf(q, 2000); got != "expired" {
		t.Errorf("at valid_to: %s, want expired", got)
	}
}
