package clickhouse_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"

	"github.com/qfence/qfence/processor"
)

// BenchmarkSinkThroughput writes 2M ping rows through the ClickHouse sink
// (buffering, batched native inserts, acknowledgements) and, in the same
// run, has clickhouse-client insert the very same rows from a Native file:
// the server's own ceiling. The 18.16 client compresses by default (it
// predates clickhouse-client leaving loopback connections uncompressed; with
// --compression=0 it inserts the same file about 15 % faster), so
// compression=lz4 is the like-for-like comparison; compression=none is what
// qfence's default (auto) does to a server on the same host.
//
//	go test -run '^$' -bench SinkThroughput -benchtime 1x ./sinks/
func BenchmarkSinkThroughput(b *testing.B) {
	const rows = 2_000_000
	_, tracks, _ := tracksFor(11, 100_000, rows)
	for _, m := range []string{"lz4", "none"} {
		b.Run("compression="+m, func(b *testing.B) { sinkThroughput(b, tracks, m) })
	}
}

func sinkThroughput(b *testing.B, tracks []processor.Track, compression string) {
	const rows = 2_000_000
	host, port, _ := net.SplitHostPort(chtest.Addr)
	client := func(query string, stdin, stdout *os.File) error {
		cmd := exec.Command("clickhouse-client", "--host", host, "--port", port, "--query", query)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, os.Stderr
		return cmd.Run()
	}
	for b.Loop() {
		cfg := chtest.DB(b, chtest.Addr)
		cfg.RetentionDays = 3650
		cfg.Compression = compression
		c := chtest.OpenSink(b, cfg, "")
		start := time.Now()
		acks := make(chan error, rows/50_000+1)
		for i := 0; i < rows; i += 50_000 {
			c.Write(context.Background(), &pipeline.Output{Rows: tracks[i:min(rows, i+50_000)]}, func(err error) { acks <- err })
		}
		for i := 0; i < rows; i += 50_000 {
			if err := <-acks; err != nil {
				b.Fatal(err)
			}
		}
		sinkRate := rows / time.Since(start).Seconds()

		file := filepath.Join(b.TempDir(), "pings.native")
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		if err := client("SELECT * FROM "+cfg.Database+".pings FORMAT Native", nil, f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := client("CREATE TABLE "+cfg.Database+".pings_copy AS "+cfg.Database+".pings", nil, nil); err != nil {
			b.Fatal(err)
		}
		in, err := os.Open(file)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if err := client("INSERT INTO "+cfg.Database+".pings_copy FORMAT Native", in, nil); err != nil {
			b.Fatal(err)
		}
		in.Close()
		clientRate := rows / time.Since(start).Seconds()
		if n := chtest.Count(b, chtest.Conn(b, chtest.Addr), "SELECT count() FROM "+cfg.Database+".pings_copy"); n != rows {
			b.Fatalf("clickhouse-client inserted %d rows, want %d", n, rows)
		}
		b.ReportMetric(sinkRate, "sink-rows/s")
		b.ReportMetric(clientRate, "client-rows/s")
		b.ReportMetric(sinkRate/clientRate, "ratio-vs-client")
	}
}
