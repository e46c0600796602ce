package main

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/paulmach/orb"

	"github.com/qfence/qfence/processor/dossier"
)

// chromium is Debian's browser (make test installs it when missing).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium: install Debian's chromium package (make test does it)")
	return ""
}

// headless starts a headless Chromium for the test, with a minute to do
// its work; problems returns the console errors (a CSP violation is one)
// and exceptions so far.
func headless(t *testing.T) (context.Context, func() []string) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("ignore-certificate-errors", true), chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1200, 1600), chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelA)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelT)
	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				problems = append(problems, "console error")
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Text)
		}
	}); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(problems)
	}
}

// TestSavedDossierIsInertInABrowser opens a dossier saved to a file (as
// `qfence dossier --out` writes it, with no CSP header to guard it), drawn
// from a case whose every string is markup, in Chromium: no script runs,
// no link of the markup appears, the page's own stylesheet applies (its
// CSP allows it by hash) and the browser reports nothing.
func TestSavedDossierIsInertInABrowser(t *testing.T) {
	const hostile = `"><script>window.pwned=1</script><style>body{max-width:1px}</style><a id="fake" href="https://x.example/">CLEARED BY REVIEW</a>`
	c := &dossier.Case{EventID: "00000000000000000000000000000000", Type: "breach_started", PatientID: "p-x", Home: orb.Point{37.6, 55.7},
		RadiusM: 50, Rules: dossier.Rules{MarginM: 25}, Evidence: map[int64]bool{}, At: 1775124000000, StartedAt: 1775122200000,
		District: hostile, PassID: hostile, Reason: hostile}
	for i := range 4 {
		c.Pings = append(c.Pings, dossier.Ping{TS: c.StartedAt + int64(i)*60_000, Lat: 55.7 + float64(i)*0.002, Lon: 37.6, AccuracyM: 10,
			DistanceM: float64(i) * 222, State: "outside", Zone: hostile, PassID: hostile, Checkin: "verified", Rejected: hostile})
	}
	page, err := dossier.Render(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dossier.html")
	if err := os.WriteFile(file, page, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, problems := headless(t)
	if _, err := chromedp.Run(ctx, chromedp.NavigateResponse("file://"+file)); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	pwned, err1 := chromedp.Run(ctx, chromedp.Evaluate[string](`typeof window.pwned`))
	links, err2 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('a, script').length`))
	width, err3 := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).maxWidth`))
	marks, err4 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('svg#map g.ping').length`))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if pwned != "undefined" || links != 0 {
		t.Errorf("the markup took effect: window.pwned is %s, %d links or scripts in the page", pwned, links)
	}
	if width != "1100px" || marks != 4 {
		t.Errorf("the page's own stylesheet is not applied (body max-width %s) or its map lacks pings (%d of 4)", width, marks)
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the browser reported: %v", p)
	}
}

// testDossierInABrowser opens an event's dossier from the running daemon's
// API with a reviewer token in headless Chromium: no console error, as many
// ping marks in the map as rows in the table, a screenshot that is not
// blank, and a print on A4 of one or two pages. It keeps the screenshot in
// shot, when set.
func testDossierInABrowser(t *testing.T, url, token, shot string) {
	ctx, problemsSoFar := headless(t)
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": "Bearer " + token}}); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	status := resp.Status
	marks, err1 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('svg#map g.ping').length`))
	rows, err2 := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('table')[0].rows.length - 1`))
	shotPNG, err3 := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	pdf, err4 := chromedp.Run(ctx, chromedp.PrintToPDF(chromedp.PDFPaper(chromedp.PaperA4)))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if status != 200 {
		t.Fatalf("the dossier answered %d", status)
	}
	if problems := problemsSoFar(); len(problems) > 0 {
		t.Errorf("the page had problems: %v", problems)
	}
	if marks == 0 || marks != rows {
		t.Errorf("%d ping marks on the map, %d rows in the table", marks, rows)
	}
	img, err := png.Decode(bytes.NewReader(shotPNG))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	colours := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[r>>12<<8|g>>12<<4|bl>>12] = true
		}
	}
	if len(colours) < 8 {
		t.Errorf("the screenshot is nearly blank (%d colours)", len(colours))
	}
	pages := len(regexp.MustCompile(`/Type\s*/Page[^s]`).FindAll(pdf, -1))
	if pages < 1 || pages > 2 {
		t.Errorf("the page prints on %d A4 pages, want one or two", pages)
	}
	t.Logf("the dossier: %d pings mapped and tabled, %d A4 pages", marks, pages)
	if shot != "" {
		if err := os.MkdirAll(filepath.Dir(shot), 0o755); err == nil {
			_ = os.WriteFile(shot, shotPNG, 0o644)
		}
	}
}
