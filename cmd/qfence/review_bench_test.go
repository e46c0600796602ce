package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/cmd/internal/daemon"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
	"github.com/qfence/qfence/sinks/local"
)

// BenchmarkDispositionPost is the round trip of a reviewer's decision:
// POST /v1/events/{id}/dispositions against the running daemon (the event
// looked up in ClickHouse, the disposition produced to the embedded broker
// and acknowledged, then stored), 500 requests paced at 50 a second over
// 50 events. It reports the p50 and p99 latency.
//
//	go test -run '^$' -bench DispositionPost -benchtime 1x ./cmd/qfence/
func BenchmarkDispositionPost(b *testing.B) {
	addr := kafkatest.StartBroker(b)
	cfg := kafkatest.Config(addr)
	cfg.ClickHouse = chtest.DB(b, chtest.Addr)
	cfg.ClickHouse.RetentionDays = 3650
	cfg.Metrics.Listen, cfg.API.Listen = freeAddr(b), freeAddr(b)
	cfg.API.TokensFile = filepath.Join(b.TempDir(), "tokens")
	const token = "bench-reviewer-token-0123"
	if err := os.WriteFile(cfg.API.TokensFile, []byte("reviewer:bench:"+token+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	sink := chtest.OpenSink(b, cfg.ClickHouse, "")
	var events []processor.Event
	for i := range 50 {
		events = append(events, processor.Event{Type: processor.BreachEscalated, PatientID: fmt.Sprintf("p-%d", i), At: 1775127720000, StartedAt: 1775126000000 + int64(i)})
	}
	chtest.Write(b, sink, nil, events)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, cfg, local.TestLog(), nil) }()
	defer func() { stop(); <-done }()
	kafkatest.WaitFor(b, time.Minute, "the daemon ready", func() bool { return httpOK("http://" + cfg.Metrics.Listen + "/readyz") })
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	post := func(i int) time.Duration {
		id := events[i%len(events)].IDString()
		req, _ := http.NewRequest(http.MethodPost, "http://"+cfg.API.Listen+"/v1/events/"+id+"/dispositions",
			strings.NewReader(`{"decision":"confirmed","reason":"confirmed_absence","comment":"bench"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("POST answered %s", resp.Status)
		}
		return time.Since(start)
	}
	post(0) // the first connection, the topic's metadata
	var lat []time.Duration
	const n, rate = 500, 50
	for b.Loop() {
		lat = lat[:0]
		start := time.Now()
		for i := range n {
			if ahead := time.Duration(i)*time.Second/rate - time.Since(start); ahead > 0 {
				time.Sleep(ahead) // pacing: the next request's slot
			}
			lat = append(lat, post(i))
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "p99-ms")
}
