package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/geo/synth"
)

// BenchmarkReplay runs qfence replay end to end (read, decode, decide,
// encode events) over a file of a million pings for 10k patients, 10% of
// whom take a trip. Run it with -benchtime 3x; it reports lines/s.
//
//	go test -run '^$' -bench Replay -benchtime 3x ./cmd/qfence/
func BenchmarkReplay(b *testing.B) {
	dir := b.TempDir()
	orders, pings := filepath.Join(dir, "orders.ndjson"), filepath.Join(dir, "pings.ndjson")
	const patients, lines = 10_000, 1_000_000
	writeReplayInput(b, orders, pings, patients, lines)
	cfg := config.Default()
	b.ReportAllocs()
	for b.Loop() {
		in, err := os.Open(pings)
		if err != nil {
			b.Fatal(err)
		}
		if err := replay(&cfg, replayInputs{orders: orders}, in, io.Discard, nil, io.Discard); err != nil {
			b.Fatal(err)
		}
		in.Close()
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

func writeReplayInput(b *testing.B, ordersPath, pingsPath string, patients, lines int) {
	r := rand.New(rand.NewPCG(11, 12))
	of, err := os.Create(ordersPath)
	if err != nil {
		b.Fatal(err)
	}
	defer of.Close()
	homes := make([][2]float64, patients)
	for i := range homes {
		h := synth.Point(r, synth.Moscow)
		homes[i] = h
		fmt.Fprintf(of, `{"patient_id":"p-%06d","home":{"lat":%.6f,"lon":%.6f},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`+"\n", i, h[1], h[0])
	}
	pf, err := os.Create(pingsPath)
	if err != nil {
		b.Fatal(err)
	}
	defer pf.Close()
	w := bufio.NewWriter(pf)
	t := time.Date(2026, 4, 2, 8, 0, 0, 0, time.UTC)
	rounds := lines / patients
	for k := 0; k < rounds; k++ {
		ts := t.Add(time.Duration(k) * 30 * time.Second)
		for i := 0; i < patients; i++ {
			away := r.NormFloat64() * 10
			if i%10 == 0 && k > rounds/3 && k < rounds/2 {
				away = 800 // a trip
			}
			p := synth.Offset(homes[i], away, r.NormFloat64()*10)
			fmt.Fprintf(w, `{"patient_id":"p-%06d","ts":"%s","lat":%.6f,"lon":%.6f,"accuracy_m":%d}`+"\n",
				i, ts.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), p[1], p[0], 5+r.IntN(20))
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
}
