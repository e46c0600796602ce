package dossier

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html"
	"html/template"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/qfence/qfence/processor"
)

// Disposition is a decision recorded about an event (contract 1.5).
type Disposition struct {
	ID        string `json:"disposition_id"`
	EventID   string `json:"event_id"`
	Decision  string `json:"decision"`
	Reason    string `json:"reason"`
	Comment   string `json:"comment,omitempty"`
	DecidedBy string `json:"decided_by"`
	DecidedAt int64  `json:"-"`
	Channel   string `json:"channel,omitempty"`
}

// Form is the disposition form a page served by the API carries: where it
// posts, the CSRF token bound to the reader's bearer token, and the page
// to return to. A page without one (a saved dossier) has no form.
type Form struct {
	CSRF   string
	Return string
}

// QueueFilter selects the review queue.
type QueueFilter struct {
	District string
	Type     string // the event type waiting; breach_escalated by default
	Since    int64  // Unix ms; 0: any
	Limit    int
}

// QueueItem is an event waiting for a decision.
type QueueItem struct {
	EventID      string  `json:"event_id"`
	Type         string  `json:"type"`
	At           int64   `json:"-"`
	StartedAt    int64   `json:"-"`
	District     string  `json:"district"`
	DistanceM    float64 `json:"distance_m"`
	MaxDistanceM float64 `json:"max_distance_m"`
	OutsidePings int     `json:"outside_pings"`
	NetworkPings int     `json:"network_pings"`
	MinMarginM   float64 `json:"min_margin_m"`
	DwellS       int64   `json:"dwell_s"`
	// Checkin is how the check-ins asked during the episode ended:
	// "" none asked, else verified, failed, missed, rejected or open.
	Checkin string `json:"checkin"`
}

// DistrictCount is how many events wait in a district.
type DistrictCount struct {
	District string `json:"district"`
	Waiting  int    `json:"waiting"`
}

// Queue is the review queue: what waits, oldest first, and the counts.
type Queue struct {
	Filter   QueueFilter
	Items    []QueueItem
	Counts   []DistrictCount // every district with something waiting (under the type filter)
	Total    int
	Form     *Form
	Database string
	Now      time.Time
}

// The review page's stylesheet, allowed by hash as the dossier's is.
const queueStyle = `
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;margin:24px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ccc}.note{color:#555;font-size:12px}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;vertical-align:top;white-space:nowrap}th{background:#f4f4f4}
td.l{text-align:left}td.w{white-space:normal;min-width:14em}.net{color:#b7791f;font-weight:600}form.decide{display:flex;gap:4px;margin:0}
form.decide input[type=text]{width:8em}form.decide select,form.decide input,form.decide button{font-size:11px}button{cursor:pointer}.counts span{display:inline-block;margin-right:14px}
`

// QueueCSP is the review page's Content-Security-Policy: its stylesheet by
// hash, no script, forms posting to this origin only.
var QueueCSP = cspWith(queueStyle, "'self'")

func cspWith(style, formAction string) string {
	sum := sha256.Sum256([]byte(style))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; img-src data:; base-uri 'none'; form-action " +
		formAction
}

type queueRow struct {
	QueueItem
	N                      int
	AtText, Dwell, Network string
	Distance, Margin       string
	NetworkOnly            bool
	Dossier, Action        string
}

// formFields are the inputs of every row's form, the same on each row:
// escaped once (a page of ten thousand rows took 480 ms to render with
// them in the template, row by row).
var formFields = template.Must(template.New("fields").Parse(`<input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="return" value="{{.Return}}">` +
	`<select name="decision" aria-label="decision">{{range .Decisions}}<option>{{.}}</option>{{end}}</select>` +
	`<select name="reason" aria-label="reason">{{range .Reasons}}<option>{{.}}</option>{{end}}</select>` +
	`<input type="text" name="comment" maxlength="1000" placeholder="comment" aria-label="comment">` +
	`<button type="submit">Record</button>`))

// RenderQueue makes the review page: one server-rendered page with no
// script, a decision form on each row.
func RenderQueue(q *Queue) ([]byte, error) {
	p := struct {
		Q         *Queue
		Style     template.CSS
		CSP       string
		Rows      []queueRow
		Decisions []string
		Reasons   []string
		Types     []string
		Districts []string
		Generated string
		Fields    template.HTML
		Table     template.HTML
	}{Q: q, Style: template.CSS(queueStyle), CSP: QueueCSP, Decisions: processor.Decisions, Reasons: processor.DecisionReasons,
		Types:     []string{"breach_escalated", "breach_started", "checkin_missed", "checkin_failed", "device_mismatch", "implausible_location", "signal_lost"},
		Generated: q.Now.UTC().Format(time.RFC3339)}
	for _, c := range q.Counts {
		p.Districts = append(p.Districts, c.District)
	}
	if q.Form != nil {
		var f bytes.Buffer
		if err := formFields.Execute(&f, struct {
			*Form
			Decisions, Reasons []string
		}{q.Form, p.Decisions, p.Reasons}); err != nil {
			return nil, err
		}
		p.Fields = template.HTML(f.String()) // escaped by its own template
	}
	sort.Strings(p.Districts)
	for i, it := range q.Items {
		r := queueRow{QueueItem: it, N: i + 1, AtText: time.UnixMilli(it.At).UTC().Format("2006-01-02 15:04:05"), Dwell: (time.Duration(it.DwellS) * time.Second).String(),
			Distance: fmt.Sprintf("%.0f", it.DistanceM), Margin: fmt.Sprintf("%.0f", it.MinMarginM),
			Dossier: "/v1/events/" + url.PathEscape(it.EventID) + "/dossier", Action: "/v1/events/" + url.PathEscape(it.EventID) + "/dispositions"}
		if it.OutsidePings > 0 {
			r.Network = fmt.Sprintf("%d of %d", it.NetworkPings, it.OutsidePings)
			r.NetworkOnly = it.NetworkPings == it.OutsidePings
		}
		p.Rows = append(p.Rows, r)
	}
	p.Table = queueRows(p.Rows, p.Fields)
	var out bytes.Buffer
	if err := queueTmpl.Execute(&out, p); err != nil {
		return nil, fmt.Errorf("render the review queue: %w", err)
	}
	return out.Bytes(), nil
}

// queueRows writes the rows of the queue's table, every text escaped for
// HTML (html/template took 300 ms for the rows of a page of ten thousand;
// this takes a tenth of it: BENCHMARKS.md).
func queueRows(rows []queueRow, fields template.HTML) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * (700 + len(fields)))
	e := html.EscapeString
	for _, r := range rows {
		b.WriteString(`<tr data-event="` + e(r.EventID) + `"><td>` + strconv.Itoa(r.N) + `</td><td>` + r.AtText + `</td><td class="l">` + e(r.District) +
			`</td><td>` + r.Distance + "</td>\n" + `<td class="l" title="outside pings, their span, and how far beyond r + m the least certain was, allowing for its accuracy">` +
			strconv.Itoa(r.OutsidePings) + ` pings, ` + r.Dwell + `, ≥ ` + r.Margin + " m out</td>\n")
		switch {
		case r.Network == "":
			b.WriteString("<td>—</td>\n")
		case r.NetworkOnly:
			b.WriteString(`<td class="net" title="every outside ping was a network fix">` + r.Network + "</td>\n")
		default:
			b.WriteString("<td>" + r.Network + "</td>\n")
		}
		checkin := r.Checkin
		if checkin == "" {
			checkin = "none asked"
		}
		b.WriteString(`<td class="l">` + e(checkin) + "</td>\n" + `<td class="l"><a class="dossier" href="` + e(r.Dossier) + `">dossier</a></td>` + "\n" + `<td class="l">`)
		if fields != "" {
			b.WriteString(`<form class="decide" method="post" action="` + e(r.Action) + `">` + string(fields) + `</form>`)
		}
		b.WriteString("</td></tr>\n")
	}
	return template.HTML(b.String()) // every text in it escaped above
}

var queueTmpl = template.Must(template.New("queue").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{.CSP}}">
<title>qfence review queue</title>
<style>{{.Style}}</style></head><body>
<h1>Review queue: {{.Q.Total}} {{.Q.Filter.Type}} waiting for a decision</h1>
<p class="note">oldest first · made {{.Generated}} from ClickHouse database {{.Q.Database}} · a decision is recorded beside the event, never in place of it; a later one supersedes it and both are kept</p>
<p class="counts" id="counts">{{range .Q.Counts}}<span>{{if .District}}{{.District}}{{else}}(no district){{end}}: <strong>{{.Waiting}}</strong></span>{{else}}<span>Nothing waits.</span>{{end}}</p>
<form method="get" action="/v1/review" id="filter">
<label>district <select name="district"><option value="">all</option>{{range .Districts}}<option{{if eq . $.Q.Filter.District}} selected{{end}}>{{.}}</option>{{end}}</select></label>
<label>type <select name="type">{{range .Types}}<option{{if eq . $.Q.Filter.Type}} selected{{end}}>{{.}}</option>{{end}}</select></label>
<button type="submit">Filter</button></form>
<h2>Waiting</h2>
{{if .Rows}}<table id="queue"><tr><th>#</th><th>at (UTC)</th><th class="l">district</th><th>distance m</th><th class="l">confidence</th><th>network fixes</th><th class="l">check-in</th><th class="l">dossier</th><th class="l">decision</th></tr>
{{.Table}}</table>{{if lt (len .Rows) .Q.Total}}<p class="note">{{len .Rows}} of {{.Q.Total}} shown (limit={{.Q.Filter.Limit}}).</p>{{end}}
{{else}}<p>Nothing waits for a decision under this filter.</p>{{end}}
</body></html>
`))
