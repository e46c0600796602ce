package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/dossier"
)

// Reviews is what the review endpoints read and write: the queue and the
// outcomes from ClickHouse, an event's current decision, and a new
// disposition produced to the dispositions topic (acknowledged) and
// stored.
type Reviews interface {
	Queue(ctx context.Context, f dossier.QueueFilter) (*dossier.Queue, error)
	// Outcomes is the JSON-encodable answer of GET /v1/outcomes.
	Outcomes(ctx context.Context, since, until int64) (any, error)
	// Current is the event's newest disposition (nil: none yet), or
	// ErrUnknownEvent.
	Current(ctx context.Context, eventID string) (*processor.Disposition, error)
	// Publish produces d and returns once the broker acknowledged it.
	Publish(ctx context.Context, d *processor.Disposition) error
	// Store stores d in ClickHouse now (what the dispositions consumer
	// would do a moment later; the two collapse on disposition_id).
	Store(ctx context.Context, d *processor.Disposition) error
}

// MaxDispositionBody bounds a disposition request's body.
const MaxDispositionBody = 4 << 10

// csrfFor is the CSRF token of a bearer token: an HMAC keyed by the token
// itself, so that it is the same on every instance, changes with the
// token, and cannot be made without it.
func csrfFor(t *Token) string {
	m := hmac.New(sha256.New, t.token)
	m.Write([]byte("qfence csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sameOrigin refuses a request a page of another origin made: a browser
// sends Origin with every POST and Sec-Fetch-Site with every request;
// clients that are not browsers send neither.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

// pageHeaders are the headers of a page people use: its CSP (no script,
// forms to this origin, not framed), no caching, no sniffing.
func pageHeaders(w http.ResponseWriter, csp string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", csp+"; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
}

func badField(w http.ResponseWriter, field, why string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": why, "field": field})
}

// dispositionBody is the POST body: JSON, or the form's fields.
type dispositionBody struct {
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Comment  string `json:"comment"`
	CSRF     string `json:"-"`
	Return   string `json:"-"`
	form     bool
}

// readDisposition reads the body: 413 over MaxDispositionBody, 400 naming
// the field that is wrong.
func readDisposition(w http.ResponseWriter, r *http.Request) (*dispositionBody, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxDispositionBody)
	var b dispositionBody
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var err error
	switch ct {
	case "application/json":
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		err = dec.Decode(&b)
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			badField(w, te.Field, "wrong type")
			return nil, false
		}
		if err != nil && strings.HasPrefix(err.Error(), "json: unknown field ") {
			badField(w, strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), "not a field of a disposition")
			return nil, false
		}
	case "application/x-www-form-urlencoded":
		b.form = true
		if err = r.ParseForm(); err == nil {
			b.Decision, b.Reason, b.Comment = r.PostForm.Get("decision"), r.PostForm.Get("reason"), r.PostForm.Get("comment")
			b.CSRF, b.Return = r.PostForm.Get("csrf"), r.PostForm.Get("return")
		}
	default:
		http.Error(w, "send application/json (or the page's form)", http.StatusUnsupportedMediaType)
		return nil, false
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		http.Error(w, fmt.Sprintf("the body is over %d bytes", MaxDispositionBody), http.StatusRequestEntityTooLarge)
		return nil, false
	case err != nil:
		badField(w, "", "the body is not valid: "+err.Error())
		return nil, false
	}
	switch {
	case b.Decision == "":
		badField(w, "decision", "required: confirmed, dismissed or contested")
	case !slices.Contains(processor.Decisions, b.Decision):
		badField(w, "decision", "must be confirmed, dismissed or contested")
	case b.Reason == "":
		badField(w, "reason", "required")
	case !slices.Contains(processor.DecisionReasons, b.Reason):
		badField(w, "reason", "must be one of "+strings.Join(processor.DecisionReasons, ", "))
	case len(b.Comment) > processor.MaxCommentBytes:
		badField(w, "comment", fmt.Sprintf("at most %d bytes", processor.MaxCommentBytes))
	default:
		return &b, true
	}
	return nil, false
}

// newDispositionID is unique: the server's time and 64 random bits.
func newDispositionID(now time.Time) string {
	var r [8]byte
	_, _ = rand.Read(r[:])
	return "rv-" + now.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(r[:])
}

// returnTo is where a form goes back to: a page of this API, else the queue.
func returnTo(p string) string {
	if strings.HasPrefix(p, "/v1/review") || strings.HasPrefix(p, "/v1/events/") && !strings.Contains(p, "//") {
		return p
	}
	return "/v1/review"
}

func (s *Server) decide(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("event_id")
	tok, _ := r.Context().Value(ctxKey{}).(*Token)
	switch {
	case !sameOrigin(r):
		http.Error(w, "a request from another origin may not record a decision", http.StatusForbidden)
		return
	case !processor.ValidEventID(id):
		http.Error(w, "an event_id is 32 lowercase hex digits", http.StatusNotFound)
		return
	case s.Reviews == nil:
		http.Error(w, "this qfence records no decisions (no ClickHouse)", http.StatusNotImplemented)
		return
	}
	b, ok := readDisposition(w, r)
	if !ok {
		return
	}
	if b.form && !hmac.Equal([]byte(b.CSRF), []byte(csrfFor(tok))) {
		http.Error(w, "the form's token does not match your session: reload the page and submit again", http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	prev, err := s.Reviews.Current(ctx, id)
	switch {
	case errors.Is(err, ErrUnknownEvent):
		http.Error(w, "no such event", http.StatusNotFound)
		return
	case err != nil:
		s.Log.Warn("reading an event's decision failed", "err", err)
		http.Error(w, "ClickHouse did not answer; nothing was recorded: try again", http.StatusServiceUnavailable)
		return
	}
	now := s.Now()
	d := &processor.Disposition{DispositionID: newDispositionID(now), EventID: id, Decision: b.Decision, Reason: b.Reason, Comment: b.Comment,
		DecidedBy: tok.Name, DecidedAt: now.UnixMilli(), Channel: "review"}
	if err := processor.CheckDisposition(d); err != nil {
		badField(w, "comment", err.Error())
		return
	}
	if err := s.Reviews.Publish(ctx, d); err != nil {
		s.Log.Warn("producing a disposition failed", "err", err)
		http.Error(w, "Kafka did not acknowledge the decision; it may not be recorded: try again", http.StatusServiceUnavailable)
		return
	}
	if err := s.Reviews.Store(ctx, d); err != nil { // the consumer stores it too
		s.Log.Warn("storing a disposition now failed; the dispositions consumer will", "err", err)
	}
	if b.form {
		http.Redirect(w, r, returnTo(b.Return), http.StatusSeeOther)
		return
	}
	out := append([]byte(`{"disposition":`), d.AppendJSON(nil)...)
	out = append(out, `,"supersedes":`...)
	if prev != nil {
		out = prev.AppendJSON(out)
	} else {
		out = append(out, "null"...)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/v1/events/"+id+"/dossier")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(append(out, "}\n"...))
}

// eventTypes are the types the queue may list.
var eventTypes = []string{"breach_started", "breach_ended", "breach_escalated", "signal_lost", "signal_restored", "implausible_location",
	"checkin_requested", "checkin_missed", "checkin_failed", "checkin_rejected", "device_mismatch", "mislocation_learned"}

func parseTime(w http.ResponseWriter, q url.Values, name string) (int64, bool) {
	v := q.Get(name)
	if v == "" {
		return 0, true
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		badField(w, name, "an RFC 3339 time, as 2026-04-02T00:00:00Z")
		return 0, false
	}
	return t.UnixMilli(), true
}

func (s *Server) review(w http.ResponseWriter, r *http.Request) {
	if s.Reviews == nil {
		http.Error(w, "this qfence has no review queue (no ClickHouse)", http.StatusNotImplemented)
		return
	}
	q := r.URL.Query()
	f := dossier.QueueFilter{District: q.Get("district"), Type: q.Get("type"), Limit: 200}
	if f.Type == "" {
		f.Type = "breach_escalated"
	}
	if !slices.Contains(eventTypes, f.Type) {
		badField(w, "type", "an event type of the contract")
		return
	}
	var ok bool
	if f.Since, ok = parseTime(w, q, "since"); !ok {
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10_000 {
			badField(w, "limit", "a number from 1 to 10000")
			return
		}
		f.Limit = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), 8*time.Second)
	defer cancel()
	queue, err := s.Reviews.Queue(ctx, f)
	if err != nil {
		s.Log.Warn("review queue failed", "err", err)
		http.Error(w, "the review queue could not be read now; try again", http.StatusServiceUnavailable)
		return
	}
	queue.Now = s.Now()
	if accepts(r, "application/json") {
		writeQueueJSON(w, queue)
		return
	}
	tok, _ := r.Context().Value(ctxKey{}).(*Token)
	queue.Form = &dossier.Form{CSRF: csrfFor(tok), Return: r.URL.RequestURI()}
	page, err := dossier.RenderQueue(queue)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pageHeaders(w, dossier.QueueCSP)
	_, _ = w.Write(page)
}

// accepts reports whether the request asks for typ first.
func accepts(r *http.Request, typ string) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		if mt == typ {
			return true
		}
		if mt == "text/html" {
			return false
		}
	}
	return false
}

type queueEventJSON struct {
	dossier.QueueItem
	At        string `json:"at"`
	StartedAt string `json:"started_at"`
	Dossier   string `json:"dossier"`
}

func writeQueueJSON(w http.ResponseWriter, q *dossier.Queue) {
	out := struct {
		Type    string                  `json:"type"`
		Waiting int                     `json:"waiting"`
		Counts  []dossier.DistrictCount `json:"districts"`
		Events  []queueEventJSON        `json:"events"`
	}{Type: q.Filter.Type, Waiting: q.Total, Counts: q.Counts, Events: []queueEventJSON{}}
	if out.Counts == nil {
		out.Counts = []dossier.DistrictCount{}
	}
	for _, it := range q.Items {
		out.Events = append(out.Events, queueEventJSON{QueueItem: it, At: processor.FormatTS(it.At), StartedAt: processor.FormatTS(it.StartedAt),
			Dossier: "/v1/events/" + it.EventID + "/dossier"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) outcomes(w http.ResponseWriter, r *http.Request) {
	if s.Reviews == nil {
		http.Error(w, "this qfence has no outcomes (no ClickHouse)", http.StatusNotImplemented)
		return
	}
	q := r.URL.Query()
	since, ok := parseTime(w, q, "since")
	if !ok {
		return
	}
	until, ok := parseTime(w, q, "until")
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 8*time.Second)
	defer cancel()
	out, err := s.Reviews.Outcomes(ctx, since, until)
	if err != nil {
		s.Log.Warn("outcomes failed", "err", err)
		http.Error(w, "the outcomes could not be read now; try again", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"outcomes": out})
}
