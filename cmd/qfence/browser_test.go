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
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
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

// testDossierInABrowser opens an event's dossier from the running daemon's
// API with a reviewer token in headless Chromium: no console error, as many
// ping marks in the map as rows in the table, a screenshot that is not
// blank, and a print on A4 of one or two pages. It keeps the screenshot in
// shot, when set.
func testDossierInABrowser(t *testing.T, url, token, shot string) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("ignore-certificate-errors", true), chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1200, 1600), chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()
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
	mu.Lock()
	if len(problems) > 0 {
		t.Errorf("the page had problems: %v", problems)
	}
	mu.Unlock()
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
