package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/dossier"
	"github.com/qfence/qfence/sinks/local"
)

// untouched is a Reviews that no refused request may reach.
type untouched struct{ t *testing.T }

func (u untouched) Queue(context.Context, dossier.QueueFilter) (*dossier.Queue, error) {
	u.t.Error("a refused request read the queue")
	return &dossier.Queue{}, nil
}
func (u untouched) Outcomes(context.Context, int64, int64) (any, error) {
	u.t.Error("a refused request read the outcomes")
	return nil, nil
}
func (u untouched) Current(context.Context, string) (*processor.Disposition, error) {
	u.t.Error("a refused request looked up an event")
	return nil, nil
}
func (u untouched) Publish(context.Context, *processor.Disposition) error {
	u.t.Error("a refused request was produced")
	return nil
}
func (u untouched) Store(context.Context, *processor.Disposition) error {
	u.t.Error("a refused request was stored")
	return nil
}

const (
	policeTok   = "police-token-0123456789"
	reviewerTok = "reviewer-token-0123456789"
	anEvent     = "0123456789abcdef0123456789abcdef"
)

// Every way a request to the review endpoints can be wrong is refused
// before anything is read or recorded, with the status and the field, and
// audited.
func TestReviewEndpointsRefuse(t *testing.T) {
	toks, err := ParseTokens([]byte("police:officer-7:" + policeTok + "\nreviewer:judge-2:" + reviewerTok + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	audit := &auditLog{}
	s := &Server{Tokens: toks, Passes: noPasses{}, Reviews: untouched{t}, Audit: audit.add, Now: time.Now, Log: local.TestLog(),
		Throttled: prometheus.NewCounter(prometheus.CounterOpts{Name: "t"})}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	post := "/v1/events/" + anEvent + "/dispositions"
	good := `{"decision":"dismissed","reason":"false_location","comment":"wifi"}`
	form := func(v url.Values) string { return v.Encode() }
	csrf := csrfFor(&toks[1])
	for _, tc := range []struct {
		name, method, path, token, ctype, body string
		header                                 map[string]string
		want                                   int
		field                                  string
	}{
		{"no token: disposition", "POST", post, "", "application/json", good, nil, 401, ""},
		{"no token: queue", "GET", "/v1/review", "", "", "", nil, 401, ""},
		{"no token: outcomes", "GET", "/v1/outcomes", "", "", "", nil, 401, ""},
		{"police: disposition", "POST", post, policeTok, "application/json", good, nil, 403, ""},
		{"police: queue", "GET", "/v1/review", policeTok, "", "", nil, 403, ""},
		{"police: outcomes", "GET", "/v1/outcomes", policeTok, "", "", nil, 403, ""},
		{"another origin", "POST", post, reviewerTok, "application/json", good, map[string]string{"Origin": "http://127.0.0.1:1"}, 403, ""},
		{"a cross-site form", "POST", post, reviewerTok, "application/x-www-form-urlencoded",
			form(url.Values{"decision": {"dismissed"}, "reason": {"other"}, "csrf": {csrf}}), map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, ""},
		{"a form without its token", "POST", post, reviewerTok, "application/x-www-form-urlencoded",
			form(url.Values{"decision": {"dismissed"}, "reason": {"other"}}), nil, 403, ""},
		{"a form with another token's", "POST", post, reviewerTok, "application/x-www-form-urlencoded",
			form(url.Values{"decision": {"dismissed"}, "reason": {"other"}, "csrf": {csrfFor(&toks[0])}}), nil, 403, ""},
		{"a body over 4 KiB", "POST", post, reviewerTok, "application/json", `{"decision":"dismissed","reason":"other","comment":"` + strings.Repeat("x", 5000) + `"}`, nil, 413, ""},
		{"a bad decision", "POST", post, reviewerTok, "application/json", `{"decision":"fined","reason":"other"}`, nil, 400, "decision"},
		{"no decision", "POST", post, reviewerTok, "application/json", `{"reason":"other"}`, nil, 400, "decision"},
		{"a bad reason", "POST", post, reviewerTok, "application/json", `{"decision":"dismissed","reason":"looked guilty"}`, nil, 400, "reason"},
		{"no reason", "POST", post, reviewerTok, "application/json", `{"decision":"dismissed"}`, nil, 400, "reason"},
		{"a long comment", "POST", post, reviewerTok, "application/json", `{"decision":"dismissed","reason":"other","comment":"` + strings.Repeat("x", 1001) + `"}`, nil, 400, "comment"},
		{"a comment of the wrong type", "POST", post, reviewerTok, "application/json", `{"decision":"dismissed","reason":"other","comment":7}`, nil, 400, "comment"},
		{"a field it does not take", "POST", post, reviewerTok, "application/json", `{"decision":"dismissed","reason":"other","decided_by":"someone else"}`, nil, 400, "decided_by"},
		{"not JSON", "POST", post, reviewerTok, "application/json", `{"decision":`, nil, 400, ""},
		{"a bad event id", "POST", "/v1/events/XYZ/dispositions", reviewerTok, "application/json", good, nil, 404, ""},
		{"a text body", "POST", post, reviewerTok, "text/plain", good, nil, 415, ""},
		{"a queue limit of 0", "GET", "/v1/review?limit=0", reviewerTok, "", "", nil, 400, "limit"},
		{"a queue of no type", "GET", "/v1/review?type=bogus", reviewerTok, "", "", nil, 400, "type"},
		{"a queue since when", "GET", "/v1/review?since=yesterday", reviewerTok, "", "", nil, 400, "since"},
		{"outcomes until when", "GET", "/v1/outcomes?until=soon", reviewerTok, "", "", nil, 400, "until"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, hs.URL+tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := hs.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.field != "" {
				var e struct{ Field string }
				if json.Unmarshal(body, &e) != nil || e.Field != tc.field {
					t.Errorf("the answer %s does not name the field %s", body, tc.field)
				}
			}
		})
	}
	if got := len(audit.all()); got != 25 {
		t.Errorf("%d audit rows for 25 requests", got)
	}
}
