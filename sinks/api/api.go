// Package api serves what people reach: an officer's scanner asking about
// a QR pass, a reviewer reading an event's dossier. Nothing is served
// without a bearer token; every request, allowed or refused, is audited
// (the token's name and role, never the token).
package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/dossier"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
)

// Role is what a token may do.
type Role string

// The roles: police check passes; reviewers check passes, read dossiers
// and the review queue, and record decisions.
const (
	Police   Role = "police"
	Reviewer Role = "reviewer"
)

// Token is one line of api.tokens_file.
type Token struct {
	Role  Role
	Name  string
	token []byte
}

// ParseTokens reads api.tokens_file: one role:name:token a line (blank
// lines and # comments skipped). A token shorter than 16 bytes, a name or
// token used twice, or an unknown role is refused with its line.
func ParseTokens(data []byte) ([]Token, error) {
	var out []Token
	names, secrets := map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("line %d: want role:name:token", n)
		}
		role, name, secret := Role(parts[0]), parts[1], parts[2]
		switch {
		case role != Police && role != Reviewer:
			return nil, fmt.Errorf("line %d: role %q must be police or reviewer", n, role)
		case name == "" || names[name]:
			return nil, fmt.Errorf("line %d: the name must be present and unique (it is what the audit trail records)", n)
		case len(secret) < 16:
			return nil, fmt.Errorf("line %d: the token of %s is shorter than 16 bytes (make one with: head -c 24 /dev/urandom | base64)", n, name)
		case secrets[secret]:
			return nil, fmt.Errorf("line %d: the token of %s is used by another line", n, name)
		}
		names[name], secrets[secret] = true, true
		out = append(out, Token{Role: role, Name: name, token: []byte(secret)})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no token in the file")
	}
	return out, nil
}

// Passes is what the pass endpoint reads.
type Passes interface {
	ByID(id string) *processor.Pass
}

// Dossiers renders an event's dossier (an HTML page), or says the event
// is unknown (ErrUnknownEvent).
type Dossiers interface {
	// Dossier renders the page; form, when set, puts the disposition form
	// on it.
	Dossier(ctx context.Context, eventID string, form *dossier.Form) ([]byte, error)
}

// ErrUnknownEvent is a Dossiers' answer for an event it does not hold.
var ErrUnknownEvent = errors.New("unknown event")

// Server is the API.
type Server struct {
	Tokens []Token
	Passes Passes
	// Dossiers is nil when qfence has none to give (no ClickHouse).
	Dossiers Dossiers
	// Reviews serves the review queue, the outcomes and the dispositions
	// (nil: those endpoints answer 501).
	Reviews Reviews
	// Audit hears every request (the ClickHouse api_audit table).
	Audit func(pipeline.AuditRow)
	Now   func() time.Time
	Log   *slog.Logger
	// PassesLoaded, when set, says whether the passes are loaded: until
	// then a pass check answers 503, not "unknown" (qfence answers from
	// start-up on, while it reads the tables).
	PassesLoaded func() bool
	// Throttled counts the requests refused with 429: a remote address that
	// sent more than unauthorizedPerSecond requests without a valid token
	// (nil: not counted).
	Throttled prometheus.Counter

	limitMu  sync.Mutex
	limiters map[string]*rate.Limiter
}

// A remote address may send this many requests a second without a valid
// token (and a burst of twice that) before it is answered 429, unaudited
// and counted: a flood of 401s once took the daemon from 37 MB to 1.1 GB.
const (
	unauthorizedPerSecond = 20
	maxLimiters           = 10_000
	// maxAuditPath bounds the path an audit row keeps.
	maxAuditPath = 256
)

// Handler routes the endpoints behind authentication and audit. A path
// the router would redirect (//v1/…, /v1/./…) is answered 404 behind the
// same checks instead: no request escapes the audit.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	notFound := s.allow(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "not found", http.StatusNotFound) }, Police, Reviewer)
	mux.HandleFunc("GET /v1/passes/{pass_id}", s.allow(s.pass, Police, Reviewer))
	mux.HandleFunc("GET /v1/events/{event_id}/dossier", s.allow(s.dossier, Reviewer))
	mux.HandleFunc("POST /v1/events/{event_id}/dispositions", s.allow(s.decide, Reviewer))
	mux.HandleFunc("GET /v1/review", s.allow(s.review, Reviewer))
	mux.HandleFunc("GET /v1/outcomes", s.allow(s.outcomes, Reviewer))
	mux.HandleFunc("/", notFound)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p && path.Clean(p)+"/" != p {
			notFound(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// throttled reports whether the remote address of r has sent too many
// requests without a valid token.
func (s *Server) throttled(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	s.limitMu.Lock()
	defer s.limitMu.Unlock()
	l := s.limiters[host]
	if l == nil {
		if s.limiters == nil || len(s.limiters) >= maxLimiters {
			s.limiters = make(map[string]*rate.Limiter) // forget the old ones: bounded, and fair enough
		}
		l = rate.NewLimiter(unauthorizedPerSecond, 2*unauthorizedPerSecond)
		s.limiters[host] = l
	}
	return !l.Allow()
}

// auditPath is the path an audit row keeps: at most maxAuditPath bytes,
// cut at a UTF-8 boundary and marked.
func auditPath(p string) string {
	if len(p) <= maxAuditPath {
		return p
	}
	return fmt.Sprintf("%s…(%d bytes)", processor.CutUTF8(p, maxAuditPath), len(p))
}

type ctxKey struct{}

// who is the token a request presented, or nil. The scheme is
// case-insensitive (RFC 9110 11.1).
func (s *Server) who(r *http.Request) *Token {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	got := []byte(strings.TrimLeft(token, " "))
	var found *Token
	for i := range s.Tokens { // every token compared, in constant time each
		if subtle.ConstantTimeCompare(s.Tokens[i].token, got) == 1 {
			found = &s.Tokens[i]
		}
	}
	return found
}

// allow wraps a handler: 401 without a valid token, 403 for a role not in
// roles, and an audit row for every request.
func (s *Server) allow(h http.HandlerFunc, roles ...Role) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		tok := s.who(r)
		if tok == nil && s.throttled(r) {
			if s.Throttled != nil {
				s.Throttled.Inc()
			}
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests without a valid token", http.StatusTooManyRequests)
			return
		}
		defer func() {
			row := pipeline.AuditRow{At: s.Now(), Method: auditPath(r.Method), Path: auditPath(r.URL.Path), Status: uint16(rec.status), Remote: r.RemoteAddr}
			if tok != nil {
				row.Role, row.TokenName = string(tok.Role), tok.Name
			}
			s.Audit(row)
		}()
		switch {
		case tok == nil:
			rec.Header().Set("WWW-Authenticate", `Bearer realm="qfence"`)
			http.Error(rec, "a bearer token is required", http.StatusUnauthorized)
		case !roleIn(tok.Role, roles):
			http.Error(rec, fmt.Sprintf("role %s may not call this endpoint", tok.Role), http.StatusForbidden)
		default:
			h(rec, r.WithContext(context.WithValue(r.Context(), ctxKey{}, tok)))
		}
	}
}

func roleIn(r Role, roles []Role) bool {
	for _, x := range roles {
		if r == x {
			return true
		}
	}
	return false
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// PassStatus is the pass endpoint's answer (contract 5).
type PassStatus struct {
	PassID       string   `json:"pass_id"`
	Status       string   `json:"status"`
	Purpose      string   `json:"purpose,omitempty"`
	ValidFrom    string   `json:"valid_from,omitempty"`
	ValidTo      string   `json:"valid_to,omitempty"`
	MaxDistanceM *float64 `json:"max_distance_m,omitempty"`
}

// StatusOf says what a scanner shows for p at now.
func StatusOf(p *processor.Pass, now int64) string {
	switch {
	case p.RevokedAt != 0 && now >= p.RevokedAt:
		return "revoked"
	case now < p.ValidFrom:
		return "not_yet_valid"
	case now >= p.ValidTo:
		return "expired"
	}
	return "valid"
}

func (s *Server) pass(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("pass_id")
	if s.PassesLoaded != nil && !s.PassesLoaded() {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "qfence is starting: the passes are not loaded yet; try again in a few seconds", http.StatusServiceUnavailable)
		return
	}
	p := s.Passes.ByID(id)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if p == nil {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(PassStatus{PassID: id, Status: "unknown"})
		return
	}
	out := PassStatus{PassID: p.ID, Status: StatusOf(p, s.Now().UnixMilli()), Purpose: p.Purpose.String(),
		ValidFrom: processor.FormatTS(p.ValidFrom), ValidTo: processor.FormatTS(p.ValidTo)}
	if p.MaxDistanceM != 0 {
		out.MaxDistanceM = &p.MaxDistanceM
	}
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) dossier(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("event_id")
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		http.Error(w, "an event_id is 32 lowercase hex digits", http.StatusNotFound)
		return
	}
	if s.Dossiers == nil {
		http.Error(w, "this qfence has no dossiers to give", http.StatusNotImplemented)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 8*time.Second)
	defer cancel()
	tok, _ := r.Context().Value(ctxKey{}).(*Token)
	var form *dossier.Form
	if s.Reviews != nil {
		form = &dossier.Form{CSRF: csrfFor(tok), Return: r.URL.RequestURI()}
	}
	page, err := s.Dossiers.Dossier(ctx, id, form)
	switch {
	case errors.Is(err, ErrUnknownEvent):
		http.Error(w, "no such event", http.StatusNotFound)
		return
	case err != nil:
		s.Log.Warn("dossier failed", "err", err)
		http.Error(w, "the dossier could not be made now; try again", http.StatusServiceUnavailable)
		return
	}
	csp := dossier.CSP
	if form != nil {
		csp = (&dossier.Case{Form: form}).CSP()
	}
	pageHeaders(w, csp)
	_, _ = w.Write(page)
}

// TLS12Suites are the TLS 1.2 cipher suites served: ECDHE with an AEAD
// only, no CBC or SHA-1 (TLS 1.3's are fixed by Go and all AEAD).
var TLS12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Listen opens the API's listener on addr, over TLS when certFile is set,
// bounded to edge.MaxHTTPConns connections.
func Listen(addr, certFile, keyFile string) (net.Listener, error) {
	var tlsCfg *tls.Config
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("api.tls: %w", err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, CipherSuites: TLS12Suites}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("api.listen %s: %w (is another qfence running?)", addr, err)
	}
	l = edge.LimitListener(l)
	if tlsCfg != nil {
		l = tls.NewListener(l, tlsCfg)
	}
	return l, nil
}

// Serve answers on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := edge.HTTPServer(s.Handler(), 10*time.Second, s.Log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(l)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// LoadTokens reads api.tokens_file, refusing one that others than its
// owner may read (the tokens are bearer secrets).
func LoadTokens(path string) ([]Token, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("api.tokens_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("api.tokens_file %s: mode %04o lets others read the tokens; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api.tokens_file: %w", err)
	}
	toks, err := ParseTokens(data)
	if err != nil {
		return nil, fmt.Errorf("api.tokens_file %s: %w", path, err)
	}
	return toks, nil
}
