package api

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/local"
)

type auditLog struct {
	mu   sync.Mutex
	rows []pipeline.AuditRow
}

func (a *auditLog) add(r pipeline.AuditRow) { a.mu.Lock(); a.rows = append(a.rows, r); a.mu.Unlock() }
func (a *auditLog) all() []pipeline.AuditRow {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]pipeline.AuditRow(nil), a.rows...)
}

type noPasses struct{}

func (noPasses) ByID(string) *processor.Pass { return nil }

func testServer(t *testing.T) (*Server, *auditLog, *httptest.Server) {
	t.Helper()
	toks, err := ParseTokens([]byte("police:officer-7:0123456789abcdef\n"))
	if err != nil {
		t.Fatal(err)
	}
	audit := &auditLog{}
	s := &Server{Tokens: toks, Passes: noPasses{}, Audit: audit.add, Now: time.Now, Log: local.TestLog(),
		Throttled: prometheus.NewCounter(prometheus.CounterOpts{Name: "t"})}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return s, audit, hs
}

func get(t *testing.T, url, auth string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The bearer scheme is case-insensitive (RFC 9110).
func TestTheBearerSchemeIsCaseInsensitive(t *testing.T) {
	_, _, hs := testServer(t)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		if got := get(t, hs.URL+"/v1/passes/X-1", scheme+" 0123456789abcdef"); got != http.StatusNotFound {
			t.Errorf("%s: %d, want 404 (an unknown pass, with a valid token)", scheme, got)
		}
	}
}

// A flood of unauthenticated requests with long paths is bounded: each
// audit row keeps at most 256 bytes of the path, and beyond the first
// burst a remote address is answered 429, counted, not audited.
func TestAFloodOfUnauthenticatedRequestsIsBounded(t *testing.T) {
	s, audit, hs := testServer(t)
	long := "/v1/passes/" + strings.Repeat("x", 15_000)
	codes := map[int]int{}
	for range 300 {
		codes[get(t, hs.URL+long, "")]++
	}
	rows := audit.all()
	if codes[http.StatusUnauthorized] == 0 || codes[http.StatusTooManyRequests] < 200 || len(rows) != codes[http.StatusUnauthorized] {
		t.Errorf("answers %v, %d audit rows", codes, len(rows))
	}
	for _, r := range rows {
		if len(r.Path) > maxAuditPath+32 || !strings.HasSuffix(r.Path, "(15011 bytes)") {
			t.Fatalf("an audit row keeps %d bytes of the path: %.80q…", len(r.Path), r.Path)
		}
	}
	if n := testutil.ToFloat64(s.Throttled); int(n) != codes[http.StatusTooManyRequests] {
		t.Errorf("throttled counted %v, answered %d", n, codes[http.StatusTooManyRequests])
	}
	if got := get(t, hs.URL+"/v1/passes/X-1", "Bearer 0123456789abcdef"); got != http.StatusNotFound {
		t.Errorf("a valid token from the same address is throttled too: %d", got)
	}
}

// A path the router would redirect is answered behind the token check and
// audited, not redirected unaudited.
func TestARedirectingPathIsAudited(t *testing.T) {
	_, audit, hs := testServer(t)
	for _, p := range []string{"//v1/passes/X-1", "/v1/./passes/X-1", "/v1/passes/../passes/X-1"} {
		before := len(audit.all())
		if got := get(t, hs.URL+p, ""); got != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", p, got)
		}
		if got := get(t, hs.URL+p, "Bearer 0123456789abcdef"); got != http.StatusNotFound {
			t.Errorf("%s with a token: %d, want 404", p, got)
		}
		if n := len(audit.all()) - before; n != 2 {
			t.Errorf("%s: %d audit rows, want 2", p, n)
		}
	}
}

// TLS 1.2 is served with AEAD suites only: a client that offers only CBC
// with SHA-1 gets no handshake; one that offers GCM does.
func TestTLS12ServesOnlyAEADSuites(t *testing.T) {
	ca := local.NewTestCA(t.TempDir())
	if ca.Err != nil {
		t.Fatal(ca.Err)
	}
	l, err := Listen("127.0.0.1:0", ca.CertFile, ca.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	t.Cleanup(func() { l.Close() })
	for suite, want := range map[uint16]bool{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: false, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: true} {
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}}) //nolint:gosec // the suite is what is tested
		if (err == nil) != want {
			t.Errorf("%s: handshake error %v, want success %v", tls.CipherSuiteName(suite), err, want)
		}
		if err == nil {
			c.Close()
		}
	}
}

// A tokens file others may read is refused, with the chmod to run.
func TestATokensFileOthersMayReadIsRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("police:officer-7:0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokens(file); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a 0644 tokens file: %v", err)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokens(file); err != nil {
		t.Errorf("a 0600 tokens file: %v", err)
	}
}
