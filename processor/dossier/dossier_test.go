package dossier_test

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/dossier"
)

var update = flag.Bool("update", false, "rewrite testdata/dossier/*.html")

const scenarios = "../../testdata/scenarios"

// overrunCase replays testdata/scenarios/pass.ndjson and makes the case of
// its first breach: a grocery trip that outlasted its pass.
func overrunCase(t *testing.T) (*dossier.Case, *geo.Zones) {
	t.Helper()
	zdata, err := os.ReadFile(filepath.Join(scenarios, "zones.geojson"))
	if err != nil {
		t.Fatal(err)
	}
	zones, err := geo.ParseZones(zdata)
	if err != nil {
		t.Fatal(err)
	}
	book := processor.NewOrderBook()
	for _, l := range readLines(t, filepath.Join(scenarios, "orders.ndjson")) {
		if o, err := processor.DecodeOrder(nil, l, 0, zones); err == nil {
			book.Put(o)
		}
	}
	passes := processor.NewPassBook()
	var held []*processor.Pass
	for _, l := range readLines(t, filepath.Join(scenarios, "passes.ndjson")) {
		if p, err := (&processor.PassDecoder{}).Decode(nil, l); err == nil && p.ID != "PX-p-pass-3" { // the third is forged
			passes.Put(p)
			held = append(held, p)
		}
	}
	rules := processor.DefaultRules()
	eng := processor.NewEngine(rules, book)
	eng.UsePasses(passes)
	dec := processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50}
	var events []processor.Event
	var tracks []processor.Track
	var p processor.Ping
	for _, l := range readLines(t, filepath.Join(scenarios, "pass.ndjson")) {
		if err := dec.Decode(l, 0, &p); err != nil {
			t.Fatal(err)
		}
		var out processor.Outcome
		var tr processor.Track
		events, out, tr = eng.Process(&p, zones, events)
		if out == processor.Accepted || out == processor.Late {
			tracks = append(tracks, tr)
		}
	}
	var e *processor.Event
	for i := range events {
		if events[i].Type == processor.BreachStarted {
			e = &events[i]
			break
		}
	}
	if e == nil || e.Pass == nil {
		t.Fatal("the scenario gave no breach under a pass")
	}
	c := &dossier.Case{EventID: e.IDString(), Type: e.Type.String(), PatientID: e.PatientID, At: e.At, StartedAt: e.StartedAt,
		EndedAt: e.EndedAt, DurationS: e.DurationS, Reason: e.Reason, Home: orb.Point(e.Home), RadiusM: e.RadiusM, District: e.District,
		PassID: e.Pass.ID, Rules: dossier.Rules{MarginM: rules.MarginM, BreachAfterS: rules.BreachAfter.Seconds(), BreachMinPings: rules.BreachMinPings},
		Evidence: map[int64]bool{}, Database: "qfence", GeneratedAt: time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC)}
	for _, ev := range e.Evidence {
		c.Evidence[ev.TS] = true
	}
	if e.Confidence != nil {
		c.Confidence = &dossier.Confidence{OutsidePings: int(e.Confidence.OutsidePings), MinMarginM: float64(e.Confidence.MinMarginM), DwellS: e.Confidence.DwellS}
	}
	c.WindowFrom, c.WindowTo = dossier.Window(c.StartedAt, c.At, c.EndedAt)
	for _, tr := range tracks {
		if tr.TS >= c.WindowFrom && tr.TS <= c.WindowTo {
			c.Pings = append(c.Pings, dossier.Ping{TS: tr.TS, Lat: tr.Lat, Lon: tr.Lon, AccuracyM: float64(tr.Accuracy), DistanceM: float64(tr.Distance),
				State: tr.State.String(), Flag: tr.Flag.String(), Source: processor.ClassOf(tr.Source).String(), PassID: tr.PassID, Zone: tr.Zone})
		}
	}
	notifier, err := processor.NewNotifier("", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range events { // the breach's check-in request, unanswered, and its notifications
		ev := &events[i]
		if ev.At < c.WindowFrom || ev.At > c.WindowTo {
			continue
		}
		switch ev.Type {
		case processor.CheckinRequested:
			c.Checkins = append(c.Checkins, dossier.Checkin{RequestID: ev.IDString(), Trigger: ev.Reason, At: ev.At, ExpiresAt: ev.ExpiresAt})
		case processor.CheckinMissed:
			c.Checkins[len(c.Checkins)-1].Outcome = "missed"
		}
		for _, n := range notifier.For(ev, nil) {
			c.Notifications = append(c.Notifications, dossier.Notification{At: n.At, Kind: n.Kind.String(), Text: n.Text})
		}
	}
	for _, ps := range held {
		if ps.ValidFrom <= c.WindowTo && ps.ValidTo >= c.WindowFrom {
			c.Passes = append(c.Passes, dossier.Pass{ID: ps.ID, Purpose: ps.Purpose.String(), ValidFrom: ps.ValidFrom, ValidTo: ps.ValidTo, MaxDistanceM: ps.MaxDistanceM})
		}
	}
	return c, zones
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			out = append(out, bytes.Clone(sc.Bytes()))
		}
	}
	return out
}

// The dossier of a pass overrun, byte for byte (go test ./processor/dossier -update).
func TestDossierGolden(t *testing.T) {
	c, zones := overrunCase(t)
	page, err := dossier.Render(c, zones)
	if err != nil {
		t.Fatal(err)
	}
	golden := "../../testdata/dossier/pass-overrun.html"
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, page, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./processor/dossier -update makes it)", err)
	}
	if !bytes.Equal(page, want) {
		t.Errorf("the dossier differs from %s (if intended: go test ./processor/dossier -update)", golden)
	}
	for _, banned := range []string{"<script", "http://", "https://", "src=", "@import"} {
		if strings.Contains(strings.ReplaceAll(string(page), `xmlns="http://www.w3.org/2000/svg"`, ""), banned) {
			t.Errorf("the page holds %q: it must be self-contained", banned)
		}
	}
	if len(page) > 1<<20 {
		t.Errorf("the page is %d bytes, over 1 MB", len(page))
	}
}

var (
	attr = func(name string) *regexp.Regexp { return regexp.MustCompile(name + `="([^"]+)"`) }
	num  = func(t *testing.T, s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
)

// The map is to scale: the home circle's drawn radius is the order's
// radius, a ping is drawn at its distance from home, and the scale bar is
// as long as it says, each within 1 %.
func TestDossierMapIsToScale(t *testing.T) {
	c, zones := overrunCase(t)
	page, err := dossier.Render(c, zones)
	if err != nil {
		t.Fatal(err)
	}
	s := string(page)
	mpp := num(t, attr("data-m-per-px").FindStringSubmatch(s)[1])
	home := regexp.MustCompile(`<circle id="home-r"[^>]*>`).FindString(s)
	r := num(t, attr(` r`).FindStringSubmatch(home)[1]) * mpp
	if math.Abs(r-c.RadiusM)/c.RadiusM > 0.01 {
		t.Errorf("the home circle is drawn %.2f m wide, the order says %g m", r, c.RadiusM)
	}
	hx, hy := num(t, attr(`cx`).FindStringSubmatch(home)[1]), num(t, attr(`cy`).FindStringSubmatch(home)[1])
	pings := regexp.MustCompile(`<g class="ping[^"]*" data-n="(\d+)" data-x="([^"]+)" data-y="([^"]+)"`).FindAllStringSubmatch(s, -1)
	if len(pings) != len(c.Pings) || len(pings) < 5 {
		t.Fatalf("%d ping marks for %d pings", len(pings), len(c.Pings))
	}
	checked := 0
	for i, m := range pings {
		want := c.Pings[i].DistanceM
		if want < 100 {
			continue // at home the 0.1 m rounding of the distance dominates
		}
		got := math.Hypot(num(t, m[2])-hx, num(t, m[3])-hy) * mpp
		if math.Abs(got-want)/want > 0.01 {
			t.Errorf("ping %s is drawn %.1f m from home, its distance is %.1f m", m[1], got, want)
		}
		checked++
	}
	if checked == 0 {
		t.Error("no ping away from home to check")
	}
	bar := regexp.MustCompile(`<g id="scalebar"[^>]*>`).FindString(s)
	if m, px := num(t, attr("data-m").FindStringSubmatch(bar)[1]), num(t, attr("data-px").FindStringSubmatch(bar)[1]); math.Abs(px*mpp-m)/m > 0.01 {
		t.Errorf("the scale bar says %g m and is %.1f px at %g m/px", m, px, mpp)
	}
	// Table rows: one per ping, pass, check-in and notification, and a
	// header row per table.
	if rows, want := strings.Count(s, "<tr"), 4+len(c.Pings)+len(c.Passes)+len(c.Checkins)+len(c.Notifications); rows != want || len(c.Checkins) == 0 {
		t.Errorf("%d table rows for %d pings, %d passes, %d check-ins, %d notifications and 4 headers", rows, len(c.Pings), len(c.Passes), len(c.Checkins), len(c.Notifications))
	}
}

// An event with nothing to map still gives a page that says so.
func TestDossierWithoutPings(t *testing.T) {
	c := &dossier.Case{EventID: "00000000000000000000000000000000", Type: "signal_lost", PatientID: "p-x", Home: orb.Point{37.6, 55.7}, RadiusM: 50,
		Rules: dossier.Rules{MarginM: 25}, Evidence: map[int64]bool{}, At: 1775124000000, StartedAt: 1775122200000}
	page, err := dossier.Render(c, nil)
	if err != nil || !strings.Contains(string(page), "nothing to map but the home") {
		t.Errorf("got %v, a page without the sentence", err)
	}
}

// Each ping shows its source class and flag, and a check-in that did not
// count says why.
func TestDossierShowsWhoseWordCounted(t *testing.T) {
	c, zones := overrunCase(t)
	c.Pings = append(c.Pings[:0:0], c.Pings...)
	c.Pings[0].Source, c.Pings[0].Flag = "network", "foreign_device"
	c.Pings[1].Checkin, c.Pings[1].Rejected = "verified", "mismatch"
	zones.Version = "0123456789ab"
	page, err := dossier.Render(c, zones)
	zones.Version = ""
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<td class="l">network</td><td class="l">foreign_device</td>`, "check-in verified, not counted: mismatch",
		"zones file in force when this page was made (version 0123456789ab, "} {
		if !strings.Contains(string(page), want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// hostile is markup in every string a dossier draws that comes from a
// file or a topic: a zone id, a pass id, a district, a flag.
const hostile = `"><script>window.pwned=1</script><style>svg{display:none}</style><a href="https://x.example/">CLEARED BY REVIEW</a>`

// Every string drawn is escaped, in the map's titles and in the tables, and
// the page carries its own CSP (a saved file has no header to fall back
// on) that allows its one stylesheet by hash and no inline anything.
func TestDossierEscapesEverythingDrawn(t *testing.T) {
	c, zones := overrunCase(t)
	c.Pings = append(c.Pings[:0:0], c.Pings...)
	for i := range c.Pings {
		c.Pings[i].Zone, c.Pings[i].PassID, c.Pings[i].Rejected = hostile, hostile, hostile
		c.Pings[i].Checkin = "verified"
	}
	c.PassID, c.District, c.Reason = hostile, hostile, hostile
	page, err := dossier.Render(c, zones)
	if err != nil {
		t.Fatal(err)
	}
	s := string(page)
	if n := strings.Count(s, "<script"); n != 0 {
		t.Errorf("%d script elements in the page", n)
	}
	if n := strings.Count(s, "<style"); n != 1 {
		t.Errorf("%d style elements, want the page's own one", n)
	}
	if strings.Contains(s, "<a ") || strings.Contains(s, "unsafe-inline") || strings.Contains(s, ` style="`) {
		t.Error("a link, an unsafe-inline policy or an inline style attribute in the page")
	}
	if !strings.Contains(s, `<meta http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;; style-src &#39;sha256-`) {
		t.Error("the page has no CSP of its own allowing its stylesheet by hash")
	}
	if !strings.Contains(s, "in zone &#34;&gt;&lt;script&gt;") {
		t.Error("the hostile zone id is not shown, escaped, in the ping's title")
	}
}

// A window of more pings than a page draws is thinned, and the page says
// so: every ping the event quotes, the first and the last, the departure
// and the return stay, and the rest is an even share; the page is within
// its bound.
func TestALongBreachIsThinnedNotCut(t *testing.T) {
	const n = 6483
	start := int64(1775124000000)
	c := &dossier.Case{EventID: "00000000000000000000000000000000", Type: "breach_started", PatientID: "p-x", Home: orb.Point{37.6, 55.7},
		RadiusM: 50, Rules: dossier.Rules{MarginM: 25}, Evidence: map[int64]bool{}, StartedAt: start + 30*60_000, At: start + 35*60_000}
	for i := range n {
		ts := start + int64(i)*15_000
		c.Pings = append(c.Pings, dossier.Ping{TS: ts, Lat: 55.7 + float64(i%100)*1e-5, Lon: 37.6, AccuracyM: 10, DistanceM: 500, State: "outside"})
	}
	c.EndedAt = c.Pings[n-120].TS // the return, half an hour before the window ends
	for i := 120; i < 140; i++ {
		c.Evidence[c.Pings[i].TS] = true
	}
	last := c.Pings[n-1].TS
	dossier.Thin(c, dossier.MaxPings)
	if len(c.Pings) > dossier.MaxPings || len(c.Pings) < dossier.MaxPings-10 || c.TotalPings != n {
		t.Fatalf("%d pings kept of %d (total %d)", len(c.Pings), n, c.TotalPings)
	}
	kept := map[int64]bool{}
	for i, p := range c.Pings {
		kept[p.TS] = true
		if i > 0 && p.TS <= c.Pings[i-1].TS {
			t.Fatal("the pings are no longer in time order")
		}
	}
	for ts := range c.Evidence {
		if !kept[ts] {
			t.Errorf("the evidence ping at %d was dropped", ts)
		}
	}
	if !kept[last] || !kept[c.EndedAt] || !kept[c.EndedAt+120_000] {
		t.Error("the return or the last ping was dropped")
	}
	page, err := dossier.Render(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d of the %d pings in the window shown", len(c.Pings), n); !strings.Contains(string(page), want) {
		t.Errorf("the page does not say %q", want)
	}
}

// A known mislocation in force is drawn as a hatched circle to scale, listed
// with what the rule trades, and each ping it made uncertain says so.
func TestDossierShowsKnownMislocations(t *testing.T) {
	c, zones := overrunCase(t)
	c.Pings = append(c.Pings[:0:0], c.Pings...)
	far := c.Pings[len(c.Pings)/2]
	c.Pings[len(c.Pings)/2].State, c.Pings[len(c.Pings)/2].Flag, c.Pings[len(c.Pings)/2].Source = "uncertain", "known_mislocation", "network"
	c.Mislocations = []dossier.Mislocation{{EventID: "0123456789abcdef0123456789abcdef", LearnedAt: c.StartedAt - 86400_000,
		ValidTo: c.StartedAt + 13*86400_000, Lat: far.Lat, Lon: far.Lon, RadiusM: 150}}
	page, err := dossier.Render(c, zones)
	if err != nil {
		t.Fatal(err)
	}
	s := string(page)
	circle := regexp.MustCompile(`<circle class="mislocation" fill="url\(#hatch\)"[^>]*>`).FindString(s)
	if circle == "" || !strings.Contains(s, `<pattern id="hatch"`) {
		t.Fatal("no hatched circle drawn")
	}
	mpp := num(t, attr("data-m-per-px").FindStringSubmatch(s)[1])
	if r := num(t, attr(` r`).FindStringSubmatch(circle)[1]) * mpp; math.Abs(r-150)/150 > 0.01 {
		t.Errorf("the circle is drawn %.1f m wide, it is 150 m", r)
	}
	for _, want := range []string{"A learned circle made pings of this window uncertain.", "0123456789abcdef0123456789abcdef", "150 m",
		"would not be flagged by them", "known mislocation: inside a circle learned from an earlier answer"} {
		if !strings.Contains(s, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	c.Mislocations = nil
	page, _ = dossier.Render(c, zones)
	if !strings.Contains(string(page), "No known mislocation of this patient's phone was in force in the window.") {
		t.Error("a page without circles does not say so")
	}
}

// A circle is in force in the window when it was valid (as learned) at its
// start, or when a ping of the window it made uncertain extended it; an
// older one that nothing extended is left out.
func TestOnlyTheMislocationsInForceAreShown(t *testing.T) {
	at := orb.Point{37.62, 55.76}
	c := &dossier.Case{WindowFrom: 10_000_000, WindowTo: 20_000_000,
		Pings: []dossier.Ping{{TS: 15_000_000, Lat: at[1], Lon: at[0], Flag: "known_mislocation"}},
		Mislocations: []dossier.Mislocation{
			{EventID: "valid", LearnedAt: 1, ValidTo: 12_000_000, Lat: 55.0, Lon: 37.0, RadiusM: 100},
			{EventID: "extended", LearnedAt: 1, ValidTo: 5_000_000, Lat: at[1], Lon: at[0], RadiusM: 100},
			{EventID: "expired", LearnedAt: 1, ValidTo: 5_000_000, Lat: 55.0, Lon: 37.0, RadiusM: 100},
		}}
	dossier.KeepInForce(c)
	var got []string
	for _, m := range c.Mislocations {
		got = append(got, m.EventID)
	}
	if strings.Join(got, " ") != "valid extended" {
		t.Errorf("kept %v, want valid and extended", got)
	}
}
