// Package dossier renders the page a person judges an event from: what was
// decided and by which rule values, a map of the home and the pings drawn
// to scale, the same pings as a table, the passes in force, and how to
// reproduce the decision. It is pure: the caller reads the data (from
// ClickHouse) and the zones; Render only draws. The page is one HTML file
// with no script and nothing fetched when viewed, and prints on A4.
package dossier

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
)

// Ping is one stored ping of the patient.
type Ping struct {
	TS        int64 // Unix ms
	Lat, Lon  float64
	AccuracyM float64
	DistanceM float64
	State     string // inside, outside, excused, uncertain
	Flag      string // "", late, speed, mock_provider, foreign_device, known_mislocation
	Source    string // the fix's source class: gnss, network, unknown (contract 2.3)
	PassID    string
	Zone      string
	// Checkin is the ping's check-in: "" none, "verified" or "failed";
	// CheckinRequest the request it answered.
	Checkin, CheckinRequest string
	// Rejected is why the check-in did not count (the reason of its
	// checkin_rejected; "" when it counted or there was none).
	Rejected string
}

// Checkin is a check-in request around the event and what came of it.
type Checkin struct {
	RequestID     string
	Trigger       string // breach_started, signal_lost, random
	At, ExpiresAt int64
	// Outcome is verified, failed, missed, or "" (no answer recorded in the
	// window: still open, or answered after it).
	Outcome    string
	AnsweredAt int64
}

// Notification is a message sent to the patient around the event.
type Notification struct {
	At         int64
	Kind, Text string
}

// Pass is a pass of the patient in force around the event.
type Pass struct {
	ID, Purpose        string
	ValidFrom, ValidTo int64
	RevokedAt          int64
	MaxDistanceM       float64
}

// Mislocation is a known mislocation of the patient's phone in force in
// the window (contract 2.4): a circle learned from an answer, where its
// network fixes are not believed.
type Mislocation struct {
	EventID            string // its mislocation_learned
	LearnedAt, ValidTo int64  // ValidTo as learned (each fix inside extends it)
	Lat, Lon, RadiusM  float64
}

// KeepInForce keeps of c.Mislocations those in force in the window: valid
// (as learned) at its start, or holding a ping of the window they made
// uncertain (each such fix extended the circle).
func KeepInForce(c *Case) {
	kept := c.Mislocations[:0]
	for _, m := range c.Mislocations {
		inForce := m.ValidTo >= c.WindowFrom
		for _, p := range c.Pings {
			if !inForce && p.Flag == "known_mislocation" && p.TS >= m.LearnedAt &&
				geo.Distance(orb.Point{m.Lon, m.Lat}, orb.Point{p.Lon, p.Lat}) <= m.RadiusM {
				inForce = true
			}
		}
		if inForce {
			kept = append(kept, m)
		}
	}
	c.Mislocations = kept
}

// Rules are the rule values the event was decided by.
type Rules struct {
	MarginM        float64
	BreachAfterS   float64
	BreachMinPings int
}

// Confidence is a breach's: the run's outside pings, the smallest margin
// by which one was out, the run's span.
type Confidence struct {
	OutsidePings int
	MinMarginM   float64
	DwellS       int64
}

// Case is everything the page shows.
type Case struct {
	EventID, Type string
	PatientID     string
	// Pseudonymized: PatientID is the stored pseudonym, not the real id.
	Pseudonymized          bool
	At, StartedAt, EndedAt int64 // EndedAt 0: open
	DurationS              int64
	Reason                 string
	Home                   orb.Point // [lon, lat]
	RadiusM                float64
	District, Zone, PassID string
	Rules                  Rules
	Confidence             *Confidence    // breaches only
	Evidence               map[int64]bool // ts of the pings the event quotes
	Pings                  []Ping         // in time order, the window's (or a thinned set of them: Thin)
	// TotalPings is how many pings the window holds when Pings shows fewer
	// (0: Pings is all of them).
	TotalPings           int
	Passes               []Pass
	Mislocations         []Mislocation  // in force in the window, in the order learned
	Checkins             []Checkin      // in time order
	Notifications        []Notification // in time order
	WindowFrom, WindowTo int64
	Database             string
	GeneratedAt          time.Time
	// Dispositions are what people decided about the event, oldest first
	// (the newest is its current decision).
	Dispositions []Disposition
	// Form, when set, puts the disposition form on the page (the API's
	// pages; a saved dossier has none).
	Form *Form
}

// CSP is the page's Content-Security-Policy: with a form, it may post to
// its own origin; without, nowhere.
func (c *Case) CSP() string {
	if c.Form != nil {
		return cspWith(stylesheet, "'self'")
	}
	return CSP
}

// MaxPings is how many pings a page draws at most: a larger window is
// thinned (Thin).
const MaxPings = 5000

// Thin keeps at most limit of c's pings, and says so (TotalPings): every one
// the event quotes, the first and the last, those within two minutes of
// the episode's start and of its end (the departure and the return), and
// an even share of the rest. A 6,483-ping breach once lost its last two
// hours and its return to a plain LIMIT.
func Thin(c *Case, limit int) {
	n := len(c.Pings)
	if n <= limit {
		return
	}
	near := func(ts, at int64) bool { return at != 0 && ts >= at-120_000 && ts <= at+120_000 }
	must := make([]bool, n)
	m := 0
	for i, p := range c.Pings {
		if i == 0 || i == n-1 || c.Evidence[p.TS] || near(p.TS, c.StartedAt) || near(p.TS, c.EndedAt) {
			must[i], m = true, m+1
		}
	}
	rest, budget := n-m, limit-m
	kept := c.Pings[:0:0]
	seen := 0
	for i, p := range c.Pings {
		switch {
		case must[i]:
			kept = append(kept, p)
		case budget > 0:
			// The j-th of the rest is kept when it crosses a multiple of
			// rest/budget: an even share, budget of them.
			if (seen+1)*budget/rest > seen*budget/rest {
				kept = append(kept, p)
			}
			seen++
		}
	}
	c.TotalPings = max(c.TotalPings, n)
	c.Pings = kept
}

// Window is the span of pings a dossier shows: from 30 minutes before the
// episode began to 30 minutes after it ended (or after the event).
func Window(startedAt, at, endedAt int64) (from, to int64) {
	end := max(at, endedAt)
	return startedAt - 30*60_000, end + 30*60_000
}

// Map dimensions, in SVG pixels.
const (
	mapW, mapH = 720.0, 520.0
	pad        = 28.0
)

// Frame is the map's projection: a local equirectangular projection about
// the home (exact to a few parts in a million over a city), north up.
type Frame struct {
	Home       orb.Point
	MPerPx     float64 // metres per SVG pixel
	cosLat     float64
	cx, cy     float64 // the home's pixel
	minX, minY float64 // metres of the frame's top-left corner, from home
}

const earthR = 6371008.8 // metres, the mean radius geo.Distance uses

// metres is p's offset from home in metres (east, north).
func (f *Frame) metres(p orb.Point) (x, y float64) {
	return (p[0] - f.Home[0]) * math.Pi / 180 * earthR * f.cosLat, (p[1] - f.Home[1]) * math.Pi / 180 * earthR
}

// Px is p's pixel.
func (f *Frame) Px(p orb.Point) (x, y float64) {
	mx, my := f.metres(p)
	return f.cx + mx/f.MPerPx, f.cy - my/f.MPerPx
}

// NewFrame fits the home circle (radius + margin) and every ping, with a
// margin of a tenth of the span.
func NewFrame(c *Case) *Frame {
	f := &Frame{Home: c.Home, cosLat: math.Cos(c.Home[1] * math.Pi / 180)}
	rm := c.RadiusM + c.Rules.MarginM
	minX, maxX, minY, maxY := -rm, rm, -rm, rm
	for _, p := range c.Pings {
		x, y := f.metres(orb.Point{p.Lon, p.Lat})
		minX, maxX, minY, maxY = min(minX, x), max(maxX, x), min(minY, y), max(maxY, y)
	}
	spanX, spanY := maxX-minX, maxY-minY
	minX, maxX = minX-spanX/10, maxX+spanX/10
	minY, maxY = minY-spanY/10, maxY+spanY/10
	f.MPerPx = max((maxX-minX)/(mapW-2*pad), (maxY-minY)/(mapH-2*pad))
	// Centre the content in the frame.
	f.cx = mapW/2 - (minX+maxX)/2/f.MPerPx
	f.cy = mapH/2 + (minY+maxY)/2/f.MPerPx
	f.minX, f.minY = minX, minY
	return f
}

// scaleBar is a round length about a quarter of the map's width.
func scaleBar(mPerPx float64) (metres, px float64) {
	target := mapW / 4 * mPerPx
	p := math.Pow(10, math.Floor(math.Log10(target)))
	for _, m := range []float64{5, 2, 1} {
		if m*p <= target {
			return m * p, m * p / mPerPx
		}
	}
	return p, p / mPerPx
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }

// svg draws the map.
func svg(c *Case, zones *geo.Zones) template.HTML {
	f := NewFrame(c)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" id="map" viewBox="0 0 %g %g" width="%g" height="%g" data-m-per-px="%g" role="img" aria-label="map of the home and the pings">`,
		mapW, mapH, mapW, mapH, f.MPerPx)
	fmt.Fprintf(&b, `<defs><clipPath id="frame"><rect x="0" y="0" width="%g" height="%g"/></clipPath>`+
		`<pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="8" class="hatch"/></pattern></defs>`, mapW, mapH)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%g" height="%g" class="bg"/><g clip-path="url(#frame)">`, mapW, mapH)
	// Zones that cross the frame, clipped to it.
	if zones != nil {
		lo := orb.Point{c.Home[0] + (f.minX)/(earthR*f.cosLat)*180/math.Pi, c.Home[1] + f.minY/earthR*180/math.Pi}
		hi := orb.Point{c.Home[0] + (f.minX+mapW*f.MPerPx)/(earthR*f.cosLat)*180/math.Pi, c.Home[1] + (f.minY+mapH*f.MPerPx)/earthR*180/math.Pi}
		view := orb.Bound{Min: lo, Max: hi}
		for _, z := range zones.All() {
			if !z.Bound().Intersects(view) {
				continue
			}
			class := "zone-" + z.Kind.String()
			rings, center, r := z.Shape()
			title := template.HTMLEscapeString(fmt.Sprintf("%s zone %s", z.Kind, z.ID))
			if rings == nil {
				x, y := f.Px(center)
				fmt.Fprintf(&b, `<circle class="%s" cx="%s" cy="%s" r="%s"><title>%s</title></circle>`, class, f1(x), f1(y), f1(r/f.MPerPx), title)
				continue
			}
			fmt.Fprintf(&b, `<path class="%s" fill-rule="evenodd" d="`, class)
			for _, poly := range rings {
				for _, ring := range poly {
					for i, p := range ring {
						x, y := f.Px(p)
						if i == 0 {
							fmt.Fprintf(&b, "M%s %s", f1(x), f1(y))
						} else {
							fmt.Fprintf(&b, "L%s %s", f1(x), f1(y))
						}
					}
					b.WriteString("Z")
				}
			}
			fmt.Fprintf(&b, `"><title>%s</title></path>`, title)
		}
	}
	// Known mislocations: hatched, where this phone's network fixes are not believed.
	for _, m := range c.Mislocations {
		x, y := f.Px(orb.Point{m.Lon, m.Lat})
		fmt.Fprintf(&b, `<circle class="mislocation" fill="url(#hatch)" cx="%s" cy="%s" r="%s" data-r-m="%g"><title>known mislocation learned %s: network fixes within %g m are uncertain until %s</title></circle>`,
			f1(x), f1(y), f1(m.RadiusM/f.MPerPx), m.RadiusM, tsText(m.LearnedAt), m.RadiusM, tsText(m.ValidTo))
	}
	hx, hy := f.Px(c.Home)
	for _, p := range c.Passes {
		if p.MaxDistanceM > 0 {
			fmt.Fprintf(&b, `<circle class="pass-limit" cx="%s" cy="%s" r="%s"><title>pass %s: no farther than %g m (+ margin)</title></circle>`,
				f1(hx), f1(hy), f1((p.MaxDistanceM+c.Rules.MarginM)/f.MPerPx), template.HTMLEscapeString(p.ID), p.MaxDistanceM)
		}
	}
	fmt.Fprintf(&b, `<circle id="home-rm" class="home-margin" cx="%s" cy="%s" r="%s"><title>radius + margin: %g m</title></circle>`,
		f1(hx), f1(hy), fmt.Sprint(float32((c.RadiusM+c.Rules.MarginM)/f.MPerPx)), c.RadiusM+c.Rules.MarginM)
	fmt.Fprintf(&b, `<circle id="home-r" class="home" cx="%s" cy="%s" r="%s"><title>home, radius %g m</title></circle>`,
		f1(hx), f1(hy), fmt.Sprint(float32(c.RadiusM/f.MPerPx)), c.RadiusM)
	// The track, in time order.
	if len(c.Pings) > 1 {
		b.WriteString(`<polyline class="track" points="`)
		for _, p := range c.Pings {
			x, y := f.Px(orb.Point{p.Lon, p.Lat})
			fmt.Fprintf(&b, "%s,%s ", f1(x), f1(y))
		}
		b.WriteString(`"/>`)
	}
	for i, p := range c.Pings {
		x, y := f.Px(orb.Point{p.Lon, p.Lat})
		class := "ping state-" + p.State
		if p.Flag != "" {
			class += " flag-" + p.Flag
		}
		if c.Evidence[p.TS] {
			class += " evidence"
		}
		// Every string drawn is escaped: a zone or pass id comes from a file
		// or a topic, and the page is also saved where no CSP guards it.
		fmt.Fprintf(&b, `<g class="%s" data-n="%d" data-x="%s" data-y="%s"><title>%d. %s, %s m from home, accuracy %s m, %s</title>`,
			template.HTMLEscapeString(class), i+1, fmt.Sprint(x), fmt.Sprint(y), i+1, tsText(p.TS), f1(p.DistanceM), f1(p.AccuracyM),
			template.HTMLEscapeString(p.State+flagText(p)))
		fmt.Fprintf(&b, `<circle class="acc" cx="%s" cy="%s" r="%s"/><circle class="dot" cx="%s" cy="%s" r="4"/><text x="%s" y="%s">%d</text></g>`,
			f1(x), f1(y), f1(p.AccuracyM/f.MPerPx), f1(x), f1(y), f1(x+6), f1(y-6), i+1)
	}
	b.WriteString(`</g>`)
	// Scale bar and north arrow.
	m, px := scaleBar(f.MPerPx)
	fmt.Fprintf(&b, `<g id="scalebar" data-m="%g" data-px="%s"><rect x="14" y="%g" width="%s" height="6" class="bar"/><text x="14" y="%g">%s</text></g>`,
		m, fmt.Sprint(px), mapH-22, f1(px), mapH-28, lengthText(m))
	fmt.Fprintf(&b, `<g class="north"><path d="M%g 40 L%g 16 L%g 40 Z"/><text x="%g" y="54">N</text></g>`, mapW-30, mapW-22, mapW-14, mapW-27)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func lengthText(m float64) string {
	if m >= 1000 {
		return fmt.Sprintf("%g km", m/1000)
	}
	return fmt.Sprintf("%g m", m)
}

func flagText(p Ping) string {
	s := ""
	switch p.Flag {
	case "":
	case "known_mislocation":
		s += ", known mislocation: inside a circle learned from an earlier answer, so this network fix was taken as uncertain, not outside"
	default:
		s += ", " + p.Flag
	}
	if p.PassID != "" {
		s += ", excused by pass " + p.PassID
	}
	if p.Zone != "" {
		s += ", in zone " + p.Zone
	}
	if p.Checkin != "" {
		s += ", check-in " + p.Checkin
		if p.Rejected != "" {
			s += ", not counted: " + p.Rejected
		}
	}
	return s
}

// detailFlag is the flag the table's detail column explains (the flag
// column names them all; only a learned circle needs a sentence).
func detailFlag(f string) string {
	if f == "known_mislocation" {
		return f
	}
	return ""
}

func tsText(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000Z") }

// Row is a ping as the table shows it.
type Row struct {
	N                   int
	Time                string
	Distance, Accuracy  string
	Margin              string // d - a - (r + m)
	State, Flag, Detail string
	Source              string
	Evidence            bool
}

type page struct {
	C                  *Case
	Map                template.HTML
	Chart              template.HTML
	Disps              []dispRow
	Current            string
	Decisions, Reasons []string
	Action             string
	Style              template.CSS
	CSP                string
	Rows               []Row
	Title              string
	At                 string
	Started            string
	Ended              string
	Duration           string
	Passes             []passRow
	Misloc             []mislocRow
	// MislocUsed: a learned circle made some ping of the window uncertain.
	MislocUsed bool
	Checkins   []checkinRow
	Notes      []noteRow
	Replay     string
	Generated  string
	NoPings    bool
	Thinned    string // "N of M pings shown, …" when the window was thinned
	Zones      string // which zones were drawn
	ScaleNote  string
}

type dispRow struct{ At, Decision, Reason, Comment, By, Channel, ID string }

type checkinRow struct{ At, Trigger, Expires, Outcome, Answered string }

type noteRow struct{ At, Kind, Text string }

type mislocRow struct{ Learned, Centre, Radius, ValidTo, EventID string }

type passRow struct {
	ID, Purpose, From, To, Revoked, Distance string
	Named                                    bool
}

// Render makes the page.
func Render(c *Case, zones *geo.Zones) ([]byte, error) {
	p := page{C: c, Title: fmt.Sprintf("%s of %s", c.Type, c.PatientID), At: tsText(c.At), Started: tsText(c.StartedAt),
		Duration: (time.Duration(c.DurationS) * time.Second).String(), NoPings: len(c.Pings) == 0,
		Generated: c.GeneratedAt.UTC().Format(time.RFC3339)}
	p.Zones = "No zones file was given: no zone is drawn."
	if zones != nil && zones.Len() > 0 {
		version := ""
		if zones.Version != "" {
			version = "version " + zones.Version + ", "
		}
		p.Zones = fmt.Sprintf("The zones drawn are those of the zones file in force when this page was made (%s%d zones); "+
			"the event was decided with the zones in force when its pings were judged, which a reload since may have changed.", version, zones.Len())
	}
	if c.TotalPings > len(c.Pings) {
		p.Thinned = fmt.Sprintf("%d of the %d pings in the window shown, on the map and in the table: every ping the event quotes, "+
			"the first and the last, those within two minutes of the departure and of the return, and an even share of the rest.",
			len(c.Pings), c.TotalPings)
	}
	if c.EndedAt != 0 {
		p.Ended = tsText(c.EndedAt)
	}
	p.Map, p.Chart, p.Style, p.CSP = svg(c, zones), chart(c), template.CSS(stylesheet), c.CSP()
	p.Decisions, p.Reasons, p.Action = processor.Decisions, processor.DecisionReasons, "/v1/events/"+c.EventID+"/dispositions"
	for _, d := range c.Dispositions {
		p.Disps = append(p.Disps, dispRow{At: tsText(d.DecidedAt), Decision: d.Decision, Reason: d.Reason, Comment: d.Comment, By: d.DecidedBy,
			Channel: d.Channel, ID: d.ID})
	}
	if n := len(c.Dispositions); n > 0 {
		d := c.Dispositions[n-1]
		p.Current = d.Decision + " (" + d.Reason + ")"
	}
	limit := c.RadiusM + c.Rules.MarginM
	for i, q := range c.Pings {
		p.Rows = append(p.Rows, Row{N: i + 1, Time: tsText(q.TS), Distance: f1(q.DistanceM), Accuracy: f1(q.AccuracyM),
			Margin: f1(q.DistanceM - q.AccuracyM - limit), State: q.State, Flag: q.Flag, Source: q.Source,
			Detail:   strings.TrimPrefix(flagText(Ping{PassID: q.PassID, Zone: q.Zone, Checkin: q.Checkin, Rejected: q.Rejected, Flag: detailFlag(q.Flag)}), ", "),
			Evidence: c.Evidence[q.TS]})
	}
	for _, ps := range c.Passes {
		r := passRow{ID: ps.ID, Purpose: ps.Purpose, From: tsText(ps.ValidFrom), To: tsText(ps.ValidTo), Distance: "any", Named: ps.ID == c.PassID}
		if ps.RevokedAt != 0 {
			r.Revoked = tsText(ps.RevokedAt)
		}
		if ps.MaxDistanceM > 0 {
			r.Distance = fmt.Sprintf("%g m", ps.MaxDistanceM)
		}
		p.Passes = append(p.Passes, r)
	}
	for _, m := range c.Mislocations {
		p.Misloc = append(p.Misloc, mislocRow{Learned: tsText(m.LearnedAt), Centre: fmt.Sprintf("%.6f, %.6f", m.Lat, m.Lon),
			Radius: fmt.Sprintf("%g m", m.RadiusM), ValidTo: tsText(m.ValidTo), EventID: m.EventID})
	}
	for _, q := range c.Pings {
		p.MislocUsed = p.MislocUsed || q.Flag == "known_mislocation"
	}
	for _, ci := range c.Checkins {
		r := checkinRow{At: tsText(ci.At), Trigger: ci.Trigger, Expires: tsText(ci.ExpiresAt), Outcome: ci.Outcome}
		if r.Outcome == "" {
			r.Outcome = "no answer recorded in the window"
		}
		if ci.AnsweredAt != 0 {
			r.Answered = tsText(ci.AnsweredAt)
		}
		p.Checkins = append(p.Checkins, r)
	}
	for _, n := range c.Notifications {
		p.Notes = append(p.Notes, noteRow{At: tsText(n.At), Kind: n.Kind, Text: n.Text})
	}
	p.Replay = "qfence replay --orders orders.ndjson --zones zones.geojson --passes passes.ndjson pings.ndjson"
	var out bytes.Buffer
	if err := pageTmpl.Execute(&out, p); err != nil {
		return nil, fmt.Errorf("render the dossier of %s: %w", c.EventID, err)
	}
	return out.Bytes(), nil
}

// stylesheet is the page's one stylesheet. The page allows it by its hash
// and nothing else: no script, no other style, nothing fetched.
const stylesheet = `
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;margin:24px;max-width:1100px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px;border-bottom:1px solid #ccc}
.note{color:#555;font-size:12px}.grid{display:flex;gap:24px;flex-wrap:wrap}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:0}dt{color:#555}dd{margin:0}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f4f4f4}
td.l{text-align:left}tr.evidence td{font-weight:600}
svg .bg{fill:#fbfbf8}svg .home{fill:#2b6cb0;fill-opacity:.18;stroke:#2b6cb0;stroke-width:2}
svg .home-margin{fill:none;stroke:#2b6cb0;stroke-dasharray:6 4}
svg .pass-limit{fill:none;stroke:#6b46c1;stroke-dasharray:2 4;stroke-width:1.5}
svg .zone-district{fill:none;stroke:#999;stroke-dasharray:8 4}svg .zone-allowed{fill:#38a169;fill-opacity:.12;stroke:#38a169}
svg .track{fill:none;stroke:#444;stroke-width:1;stroke-opacity:.6}
svg .acc{fill-opacity:.08;stroke-opacity:.5}svg .dot{stroke:#fff;stroke-width:1}
svg .ping text{font-size:10px;fill:#333}
svg .state-inside .dot,svg .state-inside .acc{fill:#2b6cb0;stroke:#2b6cb0}
svg .state-outside .dot,svg .state-outside .acc{fill:#c53030;stroke:#c53030}
svg .state-excused .dot,svg .state-excused .acc{fill:#38a169;stroke:#38a169}
svg .state-uncertain .dot,svg .state-uncertain .acc{fill:#d69e2e;stroke:#d69e2e}
svg .flag-late .dot,svg .flag-speed .dot,svg .flag-mock_provider .dot{stroke:#000;stroke-width:2;stroke-dasharray:2 1}
svg .evidence .dot{r:6;stroke:#000;stroke-width:2}
svg .mislocation{stroke:#805ad5;stroke-width:1.5}svg .hatch{stroke:#805ad5;stroke-width:1.5;stroke-opacity:.45}
svg .bar{fill:#333}svg .north path{fill:#333}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:-1px}
.sw-inside{background:#2b6cb0}.sw-outside{background:#c53030}.sw-excused{background:#38a169}.sw-uncertain{background:#d69e2e}
pre{background:#f4f4f4;padding:8px;white-space:pre-wrap;font-size:12px}
svg .span{fill:#c53030;fill-opacity:.08}svg .axis{fill:none;stroke:#333}svg .grid{fill:none;stroke:#ddd}
svg .tick{font-size:10px;fill:#555;text-anchor:end}svg .tick.t{text-anchor:middle}svg .tick.lbl{fill:#2b6cb0}
svg .err{stroke-width:1.5}svg .pt .dot{stroke:#fff;stroke-width:.5}svg .checkin{stroke:#805ad5;stroke-dasharray:4 3}svg .answer{stroke:#38a169;stroke-dasharray:1 2}
svg .note-mark{fill:#dd6b20}svg path.home{fill:none}svg path.home-margin{fill:none}
svg .state-inside .err{stroke:#2b6cb0}svg .state-outside .err{stroke:#c53030}svg .state-excused .err{stroke:#38a169}svg .state-uncertain .err{stroke:#d69e2e}
form.decide{display:flex;gap:6px;flex-wrap:wrap;align-items:center}form.decide input[type=text]{width:24em}
@media print{form.decide{display:none}@page{size:A4;margin:10mm}body{margin:0;max-width:none;font-size:9px}h1{font-size:14px}h2{font-size:11px;margin:8px 0 3px;break-after:avoid}.grid{gap:12px}dl{gap:0 8px}svg#map{width:100%;height:auto;max-height:78mm}svg#chart{width:100%;height:auto;max-height:40mm}.legend{font-size:7.5px;margin:2px 0}table{font-size:7px}th,td{padding:0 3px;line-height:1.15}tr{break-inside:avoid}pre{font-size:7.5px;padding:3px}}
`

// CSP is the dossier's Content-Security-Policy, in the page's own <meta>
// (so that a saved file is guarded too) and in the API's header.
var CSP = cspWith(stylesheet, "'none'")

var pageTmpl = template.Must(template.New("dossier").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{.CSP}}">
<title>qfence dossier: {{.Title}}</title>
<style>{{.Style}}</style></head><body>
<h1>{{.C.Type}}: {{.C.PatientID}}</h1>
<p class="note">event {{.C.EventID}} · made {{.Generated}} from ClickHouse database {{.C.Database}}{{if .C.Pseudonymized}} · the patient id is the stored pseudonym (privacy.pseudonymize_key is on): the real id is not in ClickHouse{{end}}</p>
<div class="grid"><div>
<h2>What was decided</h2>
<dl><dt>event</dt><dd>{{.C.Type}}{{if .C.Reason}} ({{.C.Reason}}){{end}}</dd>
<dt>at</dt><dd>{{.At}}</dd><dt>started at</dt><dd>{{.Started}}</dd>
<dt>ended at</dt><dd>{{if .Ended}}{{.Ended}}{{else}}open{{end}}</dd><dt>duration</dt><dd>{{.Duration}}</dd>
<dt>home</dt><dd>{{printf "%.6f, %.6f" (index .C.Home 1) (index .C.Home 0)}}, radius {{.C.RadiusM}} m</dd>
<dt>district</dt><dd>{{if .C.District}}{{.C.District}}{{else}}—{{end}}</dd>
<dt>pass</dt><dd>{{if .C.PassID}}{{.C.PassID}} (the trip was taken under it){{else}}none{{end}}</dd>
{{with .C.Confidence}}<dt>confidence</dt><dd>{{.OutsidePings}} outside pings over {{.DwellS}} s; the least certain was {{printf "%.1f" .MinMarginM}} m beyond r + m, even allowing for its accuracy</dd>{{end}}</dl>
</div><div>
<h2>Rule values in force</h2>
<dl><dt>margin m</dt><dd>{{.C.Rules.MarginM}} m</dd><dt>inside when</dt><dd>d ≤ r + m = {{.C.RadiusM}} + {{.C.Rules.MarginM}} m</dd>
<dt>outside when</dt><dd>d − a &gt; r + m (even allowing for the accuracy)</dd>
<dt>breach after</dt><dd>{{.C.Rules.BreachAfterS}} s of consecutive outside pings, at least {{.C.Rules.BreachMinPings}}</dd></dl>
</div></div>
<h2>Map</h2>
{{if .Thinned}}<p class="note"><strong>{{.Thinned}}</strong></p>{{end}}{{if .NoPings}}<p><strong>No stored ping of this patient falls in the window ({{len .C.Pings}} pings from 30 minutes before to 30 minutes after the episode): there is nothing to map but the home.</strong></p>{{end}}
{{.Map}}
<p class="note">{{.Zones}}</p>
<p class="legend"><span><i class="sw sw-inside"></i>inside</span><span><i class="sw sw-outside"></i>outside</span><span><i class="sw sw-excused"></i>excused</span><span><i class="sw sw-uncertain"></i>uncertain</span><span>dashed ring: late, speed or mock</span><span>bold ring: quoted as evidence</span><span>faint disc: reported accuracy, to scale</span><span>blue: home radius, dashed: radius + margin</span><span>purple dotted: a pass's distance limit</span><span>green: allowed zones, grey dashed: districts</span><span>hatched: a known mislocation of this phone</span></p>
<h2>Distance from home over time</h2>
{{.Chart}}
<p class="legend"><span>dot: a ping's distance, bar: ± its accuracy</span><span>blue: r, dashed: r + m</span><span>shaded: the episode</span><span>purple dashed: check-in asked, green dotted: answered</span><span>orange triangle: notification sent</span></p>
<h2>The pings, in time order</h2>
<table><tr><th>#</th><th>time (UTC)</th><th>distance m</th><th>accuracy m</th><th>d − a − (r + m)</th><th class="l">state</th><th class="l">source</th><th class="l">flag</th><th class="l">detail</th></tr>
{{range .Rows}}<tr{{if .Evidence}} class="evidence"{{end}}><td>{{.N}}</td><td>{{.Time}}</td><td>{{.Distance}}</td><td>{{.Accuracy}}</td><td>{{.Margin}}</td><td class="l">{{.State}}</td><td class="l">{{.Source}}</td><td class="l">{{.Flag}}</td><td class="l">{{.Detail}}</td></tr>
{{end}}</table>
<h2>Passes in force</h2>
{{if .Passes}}<table><tr><th class="l">pass</th><th class="l">purpose</th><th>valid from</th><th>valid to</th><th>revoked at</th><th>distance</th></tr>
{{range .Passes}}<tr><td class="l">{{.ID}}{{if .Named}} (named by the event){{end}}</td><td class="l">{{.Purpose}}</td><td>{{.From}}</td><td>{{.To}}</td><td>{{.Revoked}}</td><td>{{.Distance}}</td></tr>
{{end}}</table>{{else}}<p>No pass of this patient was valid in the window.</p>{{end}}
<h2>Known mislocations in force</h2>
{{if .Misloc}}<table><tr><th>learned at</th><th class="l">centre</th><th>radius</th><th>valid to (as learned)</th><th class="l">mislocation_learned</th></tr>
{{range .Misloc}}<tr><td>{{.Learned}}</td><td class="l">{{.Centre}}</td><td>{{.Radius}}</td><td>{{.ValidTo}}</td><td class="l">{{.EventID}}</td></tr>
{{end}}</table>
<p class="note" id="mislocation-trade">{{if .MislocUsed}}<strong>A learned circle made pings of this window uncertain.</strong> {{end}}Each circle was learned from an attested GNSS check-in at home that contradicted a run of network (Wi-Fi, cell) fixes there. Inside it this phone's network fixes no longer flag the patient, so a patient who went exactly there with GNSS off would not be flagged by them; GNSS fixes and fixes of unknown source are judged as always, random check-ins still ask, and the circle expires ({{len .Misloc}} in force here; each fix inside extends it).</p>
{{else}}<p>No known mislocation of this patient's phone was in force in the window.</p>{{end}}
<h2>Check-ins asked and answered</h2>
{{if .Checkins}}<table><tr><th>asked at</th><th class="l">why</th><th>expires at</th><th class="l">outcome</th><th>answered at</th></tr>
{{range .Checkins}}<tr><td>{{.At}}</td><td class="l">{{.Trigger}}</td><td>{{.Expires}}</td><td class="l">{{.Outcome}}</td><td>{{.Answered}}</td></tr>
{{end}}</table>{{else}}<p>No check-in was asked of this patient in the window.</p>{{end}}
<h2>Notifications to the patient</h2>
{{if .Notes}}<table><tr><th>sent at</th><th class="l">kind</th><th class="l">text</th></tr>
{{range .Notes}}<tr><td>{{.At}}</td><td class="l">{{.Kind}}</td><td class="l">{{.Text}}</td></tr>
{{end}}</table>{{else}}<p>No notification was sent to this patient in the window.</p>{{end}}
<h2>Decisions recorded</h2>
{{if .Disps}}<p id="current">Current decision: <strong>{{.Current}}</strong> (the newest; earlier ones are kept, superseded)</p>
<table id="dispositions"><tr><th>decided at</th><th class="l">decision</th><th class="l">reason</th><th class="l">by</th><th class="l">channel</th><th class="l">comment</th><th class="l">disposition</th></tr>
{{range .Disps}}<tr><td>{{.At}}</td><td class="l">{{.Decision}}</td><td class="l">{{.Reason}}</td><td class="l">{{.By}}</td><td class="l">{{.Channel}}</td><td class="l">{{.Comment}}</td><td class="l">{{.ID}}</td></tr>
{{end}}</table>{{else}}<p id="current">No decision has been recorded about this event.</p>{{end}}
{{with .C.Form}}<form class="decide" id="decide" method="post" action="{{$.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="return" value="{{.Return}}">
<label>decision <select name="decision">{{range $.Decisions}}<option>{{.}}</option>{{end}}</select></label>
<label>reason <select name="reason">{{range $.Reasons}}<option>{{.}}</option>{{end}}</select></label>
<input type="text" name="comment" maxlength="1000" placeholder="comment: what you saw" aria-label="comment">
<button type="submit">Record the decision</button></form>{{end}}
<h2>Reproduce the decision</h2>
<p>Export the patient's order, passes and pings (the window above and at least {{.C.Rules.BreachAfterS}} s before it), the zones file in force, and run:</p>
<pre>{{.Replay}}</pre>
<p class="note">qfence replay decides the pings as one partition in time order with the same engine and rules; its events carry the same event_id.</p>
</body></html>
`))
