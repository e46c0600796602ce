package dossier_test

import (
	"html"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/qfence/qfence/processor/dossier"
)

// The distance-over-time chart places each ping where its time and
// distance say, within 1 % of the plot: the pixels are worked out here
// from the chart's size (720 × 260, plot 64–704 across and 16–224 down),
// not from the code that draws it.
func TestChartGeometry(t *testing.T) {
	c, zones := overrunCase(t)
	page, err := dossier.Render(c, zones)
	if err != nil {
		t.Fatal(err)
	}
	svg := string(page[strings.Index(string(page), `<svg xmlns="http://www.w3.org/2000/svg" id="chart"`):])
	svg = svg[:strings.Index(svg, "</svg>")]
	top := c.RadiusM + c.Rules.MarginM
	for _, p := range c.Pings {
		top = math.Max(top, p.DistanceM+p.AccuracyM)
	}
	top *= 1.1
	x := func(ms int64) float64 { return 64 + float64(ms-c.WindowFrom)/float64(c.WindowTo-c.WindowFrom)*640 }
	y := func(m float64) float64 { return 224 - m/top*208 }
	pts := regexp.MustCompile(`<g class="pt state-(\w+)" data-n="(\d+)" data-x="([\d.]+)" data-y="([\d.]+)">`).FindAllStringSubmatch(svg, -1)
	if len(pts) != len(c.Pings) || len(pts) == 0 {
		t.Fatalf("%d points on the chart, %d pings", len(pts), len(c.Pings))
	}
	for _, m := range pts {
		n, _ := strconv.Atoi(m[2])
		gx, _ := strconv.ParseFloat(m[3], 64)
		gy, _ := strconv.ParseFloat(m[4], 64)
		p := c.Pings[n-1]
		if m[1] != p.State || math.Abs(gx-x(p.TS)) > 6.4 || math.Abs(gy-y(p.DistanceM)) > 2.08 {
			t.Errorf("ping %d (%s, %.0f m) drawn at (%.1f, %.1f), want (%.1f, %.1f)", n, p.State, p.DistanceM, gx, gy, x(p.TS), y(p.DistanceM))
		}
	}
	// The r and r + m lines, and the episode's span from its start.
	for id, m := range map[string]float64{"line-r": c.RadiusM, "line-rm": c.RadiusM + c.Rules.MarginM} {
		got := regexp.MustCompile(`id="` + id + `" class="[\w-]+" d="M64 ([\d.]+) `).FindStringSubmatch(svg)
		if got == nil {
			t.Fatalf("no %s line", id)
		}
		if gy, _ := strconv.ParseFloat(got[1], 64); math.Abs(gy-y(m)) > 2.08 {
			t.Errorf("%s at y %.1f, want %.1f", id, gy, y(m))
		}
	}
	span := regexp.MustCompile(`id="span" class="span" x="([\d.]+)"`).FindStringSubmatch(svg)
	if span == nil {
		t.Fatal("no shaded span")
	}
	if sx, _ := strconv.ParseFloat(span[1], 64); math.Abs(sx-x(c.StartedAt)) > 6.4 {
		t.Errorf("the span starts at x %.1f, want %.1f", sx, x(c.StartedAt))
	}
	if marks := strings.Count(svg, `class="checkin"`); marks != len(c.Checkins) || marks == 0 {
		t.Errorf("%d check-in marks, %d check-ins", marks, len(c.Checkins))
	}
}

// A saved dossier has no form and posts nowhere; one the API serves has
// the form with its CSRF token, and its CSP lets it post to its origin.
func TestDossierFormAndDispositions(t *testing.T) {
	c, zones := overrunCase(t)
	saved, err := dossier.Render(c, zones)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(saved), "<form") || !strings.Contains(html.UnescapeString(string(saved)), "form-action 'none'") {
		t.Error("a saved dossier has a form, or may post")
	}
	c.Form = &dossier.Form{CSRF: "tok<en>", Return: "/v1/review"}
	c.Dispositions = []dossier.Disposition{
		{ID: "D-1", Decision: "confirmed", Reason: "confirmed_absence", DecidedBy: "judge-2", DecidedAt: c.At + 60_000, Channel: "review"},
		{ID: "D-2", Decision: "dismissed", Reason: "false_location", Comment: "<b>wifi</b>", DecidedBy: "judge-3", DecidedAt: c.At + 120_000, Channel: "review"},
	}
	served, err := dossier.Render(c, zones)
	if err != nil {
		t.Fatal(err)
	}
	page := html.UnescapeString(string(served))
	for _, want := range []string{`<form class="decide" id="decide" method="post" action="/v1/events/` + c.EventID + `/dispositions">`,
		"form-action 'self'", "Current decision: <strong>dismissed (false_location)</strong>",
		"D-1", "judge-3"} {
		if !strings.Contains(page, want) {
			t.Errorf("the served dossier lacks %q", want)
		}
	}
	if c.CSP() == dossier.CSP {
		t.Error("the served page's CSP is the saved one's")
	}
	if !strings.Contains(string(served), "&lt;b&gt;wifi&lt;/b&gt;") || !strings.Contains(string(served), `value="tok&lt;en&gt;"`) {
		t.Error("a comment or the token is not escaped")
	}
}

// The review page: a row per waiting event with its dossier link and a
// form, network-only breaches marked, the counts per district, no script.
func TestRenderQueue(t *testing.T) {
	q := &dossier.Queue{Filter: dossier.QueueFilter{Type: "breach_escalated", District: "CAO", Limit: 2}, Total: 3, Database: "qfence",
		Counts: []dossier.DistrictCount{{District: "CAO", Waiting: 2}, {District: "<x>", Waiting: 1}}, Form: &dossier.Form{CSRF: "c", Return: "/v1/review"},
		Items: []dossier.QueueItem{{EventID: "0123456789abcdef0123456789abcdef", Type: "breach_escalated", District: "CAO", DistanceM: 900,
			OutsidePings: 4, NetworkPings: 4, Checkin: "missed"},
			{EventID: "1123456789abcdef0123456789abcdef", District: `"><script>alert(1)</script>`, Checkin: `<i>`}}}
	page, err := dossier.RenderQueue(q)
	if err != nil {
		t.Fatal(err)
	}
	s := html.UnescapeString(string(page))
	for _, want := range []string{`href="/v1/events/0123456789abcdef0123456789abcdef/dossier"`, `action="/v1/events/0123456789abcdef0123456789abcdef/dispositions"`,
		`class="net"`, "4 of 4", "missed", "CAO: <strong>2</strong>", "<x>:", "2 of 3 shown", `<option selected>CAO</option>`, dossier.QueueCSP} {
		if !strings.Contains(s, want) {
			t.Errorf("the queue page lacks %q", want)
		}
	}
	if strings.Contains(string(page), "<script") || !strings.Contains(string(page), "&#34;&gt;&lt;script&gt;") || strings.Contains(string(page), "<i>") {
		t.Error("a row's text is not escaped")
	}
}
