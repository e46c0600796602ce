package dossier

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
)

// Chart dimensions, in SVG pixels: the plot area is inside the padding.
const (
	chartW, chartH                 = 720.0, 260.0
	chartL, chartR, chartT, chartB = 64.0, 16.0, 16.0, 36.0
)

// ChartFrame places a ping of the distance-over-time chart: time runs
// left to right over the window, distance from home bottom to top from 0
// to MaxM.
type ChartFrame struct {
	From, To int64   // the window, Unix ms
	MaxM     float64 // the top of the distance axis, metres
}

// NewChartFrame fits the window and every ping's distance plus its
// accuracy, and r + m, with a tenth to spare.
func NewChartFrame(c *Case) ChartFrame {
	top := c.RadiusM + c.Rules.MarginM
	for _, p := range c.Pings {
		top = max(top, p.DistanceM+p.AccuracyM)
	}
	from, to := c.WindowFrom, c.WindowTo
	if to <= from {
		to = from + 1
	}
	return ChartFrame{From: from, To: to, MaxM: top * 1.1}
}

// X is the pixel of a time.
func (f ChartFrame) X(ms int64) float64 {
	t := min(max(ms, f.From), f.To)
	return chartL + float64(t-f.From)/float64(f.To-f.From)*(chartW-chartL-chartR)
}

// Y is the pixel of a distance.
func (f ChartFrame) Y(m float64) float64 {
	m = min(max(m, 0), f.MaxM)
	return chartH - chartB - m/f.MaxM*(chartH-chartT-chartB)
}

// chart draws distance from home over time: each ping with its accuracy
// as an error bar, the lines r and r + m, the breach's span shaded, the
// check-ins asked (and answered) and the notifications marked. It shows
// what the map cannot: when the phone left, how sure it was, and when it
// came back.
func chart(c *Case) template.HTML {
	f := NewChartFrame(c)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" id="chart" viewBox="0 0 %g %g" width="%g" height="%g" data-from="%d" data-to="%d" data-max-m="%g" role="img" aria-label="distance from home over time">`,
		chartW, chartH, chartW, chartH, f.From, f.To, f.MaxM)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%g" height="%g" class="bg"/>`, chartW, chartH)
	// The breach's span (or the episode's, for other events).
	if c.StartedAt != 0 {
		end := c.EndedAt
		if end == 0 {
			end = max(c.At, f.To)
		}
		x0, x1 := f.X(c.StartedAt), f.X(end)
		fmt.Fprintf(&b, `<rect id="span" class="span" x="%s" y="%g" width="%s" height="%g"><title>the episode: %s to %s</title></rect>`,
			f1(x0), chartT, f1(x1-x0), chartH-chartT-chartB, tsText(c.StartedAt), endText(c.EndedAt))
	}
	// Axes: distance ticks, and time ticks at round minutes.
	left, bottom := chartL, chartH-chartB
	fmt.Fprintf(&b, `<path class="axis" d="M%g %g V%g H%g"/>`, left, chartT, bottom, chartW-chartR)
	step := niceStep(f.MaxM / 4)
	for m := 0.0; m <= f.MaxM; m += step {
		y := f.Y(m)
		fmt.Fprintf(&b, `<path class="grid" d="M%g %s H%g"/><text class="tick" x="%g" y="%s">%s</text>`, left, f1(y), chartW-chartR, left-6, f1(y+4), lengthText(m))
	}
	minutes := niceMinutes(f.To - f.From)
	first := (f.From/(minutes*60_000) + 1) * minutes * 60_000
	for t := first; t < f.To; t += minutes * 60_000 {
		x := f.X(t)
		fmt.Fprintf(&b, `<path class="grid" d="M%s %g V%g"/><text class="tick t" x="%s" y="%g">%s</text>`, f1(x), chartT, bottom, f1(x), bottom+14,
			time.UnixMilli(t).UTC().Format("15:04"))
	}
	fmt.Fprintf(&b, `<text class="tick t" x="%g" y="%g">UTC</text>`, chartW-chartR-12, bottom+28)
	// r and r + m.
	for _, l := range []struct {
		id, class, label string
		m                float64
	}{{"line-r", "home", "r", c.RadiusM}, {"line-rm", "home-margin", "r + m", c.RadiusM + c.Rules.MarginM}} {
		y := f.Y(l.m)
		fmt.Fprintf(&b, `<path id="%s" class="%s" d="M%g %s H%g" data-m="%g"><title>%s = %g m</title></path><text class="tick lbl" x="%g" y="%s">%s</text>`,
			l.id, l.class, left, f1(y), chartW-chartR, l.m, l.label, l.m, chartW-chartR-2, f1(y-3), l.label)
	}
	// Check-ins asked (and answered), notifications sent.
	for _, ci := range c.Checkins {
		x := f.X(ci.At)
		fmt.Fprintf(&b, `<path class="checkin" d="M%s %g V%g"><title>check-in asked %s (%s): %s</title></path>`, f1(x), chartT, bottom,
			tsText(ci.At), template.HTMLEscapeString(ci.Trigger), template.HTMLEscapeString(outcomeText(ci.Outcome)))
		if ci.AnsweredAt != 0 {
			fmt.Fprintf(&b, `<path class="answer" d="M%s %g V%g"><title>check-in answered %s</title></path>`, f1(f.X(ci.AnsweredAt)), chartT, bottom, tsText(ci.AnsweredAt))
		}
	}
	for _, n := range c.Notifications {
		x := f.X(n.At)
		fmt.Fprintf(&b, `<path class="note-mark" d="M%s %g l-5 -9 h10 Z"><title>%s sent %s</title></path>`, f1(x), chartT+9, template.HTMLEscapeString(n.Kind), tsText(n.At))
	}
	// The pings, each with its accuracy as an error bar.
	for i, p := range c.Pings {
		x, y := f.X(p.TS), f.Y(p.DistanceM)
		lo, hi := f.Y(p.DistanceM-p.AccuracyM), f.Y(p.DistanceM+p.AccuracyM)
		fmt.Fprintf(&b, `<g class="pt state-%s" data-n="%d" data-x="%s" data-y="%s"><title>%d. %s, %s m ± %s m</title><path class="err" d="M%s %s V%s"/><circle class="dot" cx="%s" cy="%s" r="3"/></g>`,
			template.HTMLEscapeString(p.State), i+1, fmt.Sprint(x), fmt.Sprint(y), i+1, tsText(p.TS), f1(p.DistanceM), f1(p.AccuracyM),
			f1(x), f1(lo), f1(hi), f1(x), f1(y))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func endText(ms int64) string {
	if ms == 0 {
		return "still open"
	}
	return tsText(ms)
}

func outcomeText(o string) string {
	if o == "" {
		return "no answer recorded in the window"
	}
	return o
}

// niceStep is a round step (1, 2 or 5 times a power of ten) near v.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// niceMinutes spaces the time ticks: about six over the span.
func niceMinutes(spanMS int64) int64 {
	for _, m := range []int64{1, 2, 5, 10, 15, 30, 60, 120, 240, 480, 1440} {
		if spanMS/(m*60_000) <= 8 {
			return m
		}
	}
	return 2880
}
