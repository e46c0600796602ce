// Package chtest gives tests a real ClickHouse: a private clickhouse-server
// started once per test binary (or the one QFENCE_CLICKHOUSE_ADDR names),
// a fresh database per test, and the queries the tests check it with.
// make test never skips these tests: no server is a failure.
package chtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	qch "github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/edge"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/goleak"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/sinks/local"
)

// Addr is the native address of the test binary's server, and Server the
// server itself (to stop or signal it), both set by Main.
var (
	Addr   string
	Server *local.ClickHouseServer
)

// Main starts the server, runs the tests, stops it and checks that no test
// left a goroutine behind; it is a whole TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(chtest.Main(m)) }
//
// ignore names goroutines that are not qfence's (a test library's).
func Main(m *testing.M, ignore ...goleak.Option) int {
	srv, err := local.StartClickHouseServer(context.Background(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if errors.Is(err, local.ErrNoClickHouse) && os.Getenv(RequireEnv) != "1" {
		// A contributor's quick loop: skip, and say how to run them. make
		// test (hence CI) sets RequireEnv, so nothing is skipped there.
		fmt.Fprintf(os.Stderr, "skipping these tests: they need a ClickHouse server (%v); make test runs them\n", err)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "these tests need a ClickHouse server and none could be had: %v\n", err)
		return 1
	}
	Addr, Server = srv.Addr, srv
	code := m.Run()
	srv.Stop()
	if code == 0 {
		// Every goroutine qfence starts has an owner that waits for it.
		if err := goleak.Find(ignore...); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
			code = 1
		}
	}
	return code
}

// RequireEnv, set to 1, makes a missing ClickHouse server an error instead
// of a skip (make test sets it).
const RequireEnv = "QFENCE_REQUIRE_CLICKHOUSE"

// DB is a ClickHouse config for a fresh database named after the test, on
// the server at addr.
func DB(t testing.TB, addr string) config.ClickHouse {
	t.Helper()
	cfg := config.Default().ClickHouse
	cfg.Addr = addr
	cfg.Database = "t_" + strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "_"))
	cfg.FlushInterval = 200 * time.Millisecond
	cfg.Timeout = 5 * time.Second
	if err := Conn(t, addr).Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Conn is a plain connection to addr, closed when the test ends.
func Conn(t testing.TB, addr string) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Count runs a query that returns one count.
func Count(t testing.TB, conn driver.Conn, query string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// OpenSink migrates and opens a sink whose Run is stopped at cleanup;
// set changes it before it runs.
func OpenSink(t testing.TB, cfg config.ClickHouse, key config.Secret, set ...func(*qch.Sink)) *qch.Sink {
	t.Helper()
	ctx := context.Background()
	if err := qch.Migrate(ctx, cfg, local.TestLog()); err != nil {
		t.Fatal(err)
	}
	c, err := qch.Open(ctx, cfg, key, edge.NewMetrics(prometheus.NewRegistry()), local.TestLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range set {
		f(c)
	}
	// Stopped as the daemon stops it: the last flush gets a few seconds
	// (shutdown_timeout), then gives up, so a test whose inserts fail ends.
	runCtx, stop := context.WithCancel(ctx)
	flushCtx, giveUp := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = c.Run(runCtx, flushCtx); close(done) }()
	t.Cleanup(func() {
		defer giveUp()
		stop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			giveUp()
			<-done
		}
	})
	return c
}

// Write hands rows and events to the sink and waits for the acknowledgement.
func Write(t testing.TB, c *qch.Sink, rows []processor.Track, events []processor.Event) {
	t.Helper()
	WriteOutput(t, c, &pipeline.Output{Rows: rows, Events: events})
}

// WriteOutput hands a batch's output to the sink and waits for the
// acknowledgement.
func WriteOutput(t testing.TB, c *qch.Sink, out *pipeline.Output) {
	t.Helper()
	ack := make(chan error, 1)
	c.Write(context.Background(), out, func(err error) { ack <- err })
	select {
	case err := <-ack:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no acknowledgement within a minute")
	}
}

// Rows reads the pings table under FINAL in the form of kafkatest.RowOf,
// by patient|ts: what the tests compare with the rows replay stores.
// state and flag are read as their Enum8 numbers, which are the Go
// constants.
func Rows(t testing.TB, conn driver.Conn, db string) map[string]string {
	t.Helper()
	ms := "toUInt64(toUnixTimestamp(ts)) * 1000 + ts_ms"
	if v, err := conn.ServerVersion(); err == nil && qch.FeaturesOf(qch.Version{Major: int(v.Version.Major), Minor: int(v.Version.Minor)}).DateTime64 {
		ms = "toUInt64(toUnixTimestamp64Milli(ts))"
	}
	rows, err := conn.Query(context.Background(), fmt.Sprintf(
		"SELECT patient_id, %s, distance_m, in_breach, CAST(flag AS Int8), zone, CAST(state AS Int8) FROM %s.pings FINAL", ms, db))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var tr processor.Track
		var ts uint64
		var inBreach uint8
		var flag, state int8
		if err := rows.Scan(&tr.PatientID, &ts, &tr.Distance, &inBreach, &flag, &tr.Zone, &state); err != nil {
			t.Fatal(err)
		}
		tr.TS, tr.InBreach, tr.Flag, tr.State = int64(ts), inBreach == 1, processor.Flag(flag), processor.PingState(state)
		out[tr.PatientID+"|"+strconv.FormatInt(tr.TS, 10)] = kafkatest.RowOf(&tr)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Cluster starts a cluster of n private servers (n shards, one replica
// each, named local.ClusterName), stopped when the test ends.
func Cluster(t testing.TB, n int) []*local.ClickHouseServer {
	t.Helper()
	servers, err := local.StartClickHouseCluster(context.Background(), local.TestLog(), n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Stop()
		}
	})
	return servers
}
