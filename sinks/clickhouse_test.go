package sinks

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/geo/synth"
	"github.com/qfence/qfence/processor"
)

// chConfig is a ClickHouse config for a fresh database named after the test.
func chConfig(t testing.TB, addr string) config.ClickHouse {
	cfg := config.Default().ClickHouse
	cfg.Addr = addr
	cfg.Database = "t_" + strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "_"))
	cfg.FlushInterval = 200 * time.Millisecond
	cfg.Timeout = 5 * time.Second
	conn := chConn(t, addr)
	if err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func chConn(t testing.TB, addr string) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func count(t testing.TB, conn driver.Conn, query string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// openSink migrates and opens a sink whose Run is stopped at cleanup.
func openSink(t testing.TB, cfg config.ClickHouse, key config.Secret) *ClickHouse {
	t.Helper()
	ctx := context.Background()
	if err := Migrate(ctx, cfg, testLog(t)); err != nil {
		t.Fatal(err)
	}
	c, err := OpenClickHouse(ctx, cfg, key, NewMetrics(prometheus.NewRegistry()), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = c.Run(runCtx, ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return c
}

// write hands rows and events to the sink and waits for the acknowledgement.
func write(t testing.TB, c *ClickHouse, rows []processor.Track, events []processor.Event) {
	t.Helper()
	ack := make(chan error, 1)
	c.Write(context.Background(), rows, events, func(err error) { ack <- err })
	select {
	case err := <-ack:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no acknowledgement within a minute")
	}
}

func TestMigrateTwiceChangesNothing(t *testing.T) {
	cfg := chConfig(t, chAddr)
	conn := chConn(t, chAddr)
	schema := func() string {
		var b strings.Builder
		for _, table := range []string{"pings", "events", "orders", "district_daily", "schema_migrations"} {
			var ddl string
			if err := conn.QueryRow(context.Background(), fmt.Sprintf("SHOW CREATE TABLE %s.%s", cfg.Database, table)).Scan(&ddl); err != nil {
				t.Fatal(err)
			}
			b.WriteString(ddl + "\n")
		}
		return b.String()
	}
	if err := Migrate(context.Background(), cfg, testLog(t)); err != nil {
		t.Fatal(err)
	}
	first := schema()
	if err := Migrate(context.Background(), cfg, testLog(t)); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if second := schema(); second != first {
		t.Errorf("the schema changed on the second migrate:\n%s\n%s", first, second)
	}
	if n := count(t, conn, "SELECT count() FROM "+cfg.Database+".schema_migrations"); n != 1 {
		t.Errorf("%d migrations recorded, want 1", n)
	}
}

// tracksFor runs n pings of p patients through an engine and returns the
// rows and events it stored and emitted.
func tracksFor(seed uint64, patients, n int) (*processor.OrderBook, []processor.Track, []processor.Event) {
	r := rand.New(rand.NewPCG(seed, 5))
	book := processor.NewOrderBook()
	homes := make([][2]float64, patients)
	for i := range homes {
		homes[i] = synth.Point(r, synth.Moscow)
		book.Put(&processor.Order{PatientID: fmt.Sprintf("p-%05d", i), Home: homes[i], RadiusM: 50,
			StartsAt: dataStart.Add(-24 * time.Hour).UnixMilli(), EndsAt: math.MaxInt64, District: "CAO"})
	}
	eng := processor.NewEngine(processor.DefaultRules(), book)
	var tracks []processor.Track
	var events []processor.Event
	for k := 0; len(tracks) < n; k++ {
		for i := 0; i < patients && len(tracks) < n; i++ {
			away := r.NormFloat64() * 8
			if i%10 == 0 && k%20 > 10 {
				away = 700
			}
			p := synth.Offset(homes[i], away, 0)
			ping := processor.Ping{PatientID: []byte(fmt.Sprintf("p-%05d", i)), TS: dataStart.Add(time.Duration(k)*time.Minute + time.Duration(i)*time.Millisecond).UnixMilli(),
				Lat: p[1], Lon: p[0], Accuracy: 10, DeviceID: []byte("dev"), Source: []byte("gps")}
			var out processor.Outcome
			var tr processor.Track
			events, out, tr = eng.Process(&ping, nil, events)
			if out == processor.Accepted {
				tracks = append(tracks, tr)
			}
		}
	}
	return book, tracks, events
}

// TestReplayingTwiceCollapses: the same 100k pings and their events written
// twice show once each under FINAL.
func TestReplayingTwiceCollapses(t *testing.T) {
	cfg := chConfig(t, chAddr)
	cfg.BatchRows = 30000
	c := openSink(t, cfg, "")
	_, tracks, events := tracksFor(1, 5000, 100_000)
	for round := 0; round < 2; round++ {
		for start := 0; start < len(tracks); start += 25000 {
			write(t, c, tracks[start:min(len(tracks), start+25000)], nil)
		}
		write(t, c, nil, events)
	}
	conn := chConn(t, chAddr)
	if n := count(t, conn, "SELECT count() FROM "+cfg.Database+".pings FINAL"); n != uint64(len(tracks)) {
		t.Errorf("pings FINAL = %d, want %d", n, len(tracks))
	}
	if n := count(t, conn, "SELECT count() FROM "+cfg.Database+".pings"); n < uint64(len(tracks)) {
		t.Errorf("pings = %d, fewer than the %d written", n, len(tracks))
	}
	if len(events) < 100 {
		t.Fatalf("only %d events to check", len(events))
	}
	if n := count(t, conn, "SELECT count() FROM "+cfg.Database+".events FINAL"); n != uint64(len(events)) {
		t.Errorf("events FINAL = %d, want %d", n, len(events))
	}
	if n := count(t, conn, "SELECT uniqExact(event_id) FROM "+cfg.Database+".events"); n != uint64(len(events)) {
		t.Errorf("%d distinct event ids, want %d", n, len(events))
	}
}

// TestRetentionDropsOldDays: on a server without TTL (18.16), qfence drops
// day partitions older than retention_days itself.
func TestRetentionDropsOldDays(t *testing.T) {
	cfg := chConfig(t, chAddr)
	cfg.RetentionDays = 28
	c := openSink(t, cfg, "")
	if c.schema.F.TTL {
		t.Log("this server has TTL: the drop path is exercised anyway")
	}
	old := processor.Track{PatientID: "old", Evidence: processor.Evidence{TS: time.Now().AddDate(0, 0, -40).UnixMilli(), State: processor.Inside}}
	recent := processor.Track{PatientID: "recent", Evidence: processor.Evidence{TS: time.Now().UnixMilli(), State: processor.Inside}}
	write(t, c, []processor.Track{old, recent}, nil)
	c.DropExpired(context.Background())
	conn := chConn(t, chAddr)
	if n := count(t, conn, "SELECT count() FROM "+cfg.Database+".pings WHERE patient_id = 'old'"); n != 0 {
		t.Errorf("a 40-day-old ping survived retention of 28 days")
	}
	if n := count(t, conn, "SELECT count() FROM "+cfg.Database+".pings WHERE patient_id = 'recent'"); n != 1 {
		t.Errorf("today's ping was dropped")
	}
}

// TestPseudonymizationHidesEveryPatientID: with a key, no real id reaches
// any table, and a patient has one pseudonym across the three.
func TestPseudonymizationHidesEveryPatientID(t *testing.T) {
	cfg := chConfig(t, chAddr)
	const key = "a secret of the health ministry"
	c := openSink(t, cfg, key)
	book, tracks, events := tracksFor(2, 200, 4000)
	var orders []OrderRow
	for i := 0; i < 200; i++ {
		orders = append(orders, OrderRow{Order: *book.Lookup(fmt.Sprintf("p-%05d", i)), Received: time.Now()})
	}
	c.WriteOrders(orders)
	write(t, c, tracks, events)
	conn := chConn(t, chAddr)
	for _, table := range []string{"pings", "events", "orders"} {
		if n := count(t, conn, fmt.Sprintf("SELECT count() FROM %s.%s WHERE patient_id LIKE 'p-%%'", cfg.Database, table)); n != 0 {
			t.Errorf("%s holds %d real patient ids", table, n)
		}
		if n := count(t, conn, fmt.Sprintf("SELECT count() FROM %s.%s", cfg.Database, table)); n == 0 {
			t.Errorf("%s is empty: nothing was checked", table)
		}
	}
	want := Pseudonym([]byte(key), "p-00000")
	for _, table := range []string{"pings", "events", "orders"} {
		if n := count(t, conn, fmt.Sprintf("SELECT count() FROM %s.%s WHERE patient_id = '%s'", cfg.Database, table, want)); n == 0 {
			t.Errorf("%s has no row under p-00000's pseudonym %s", table, want)
		}
	}
}

// TestNoOrderNoRow: pings of a patient without an active order never reach
// ClickHouse, through the whole pipeline.
func TestNoOrderNoRow(t *testing.T) {
	_, k, d := setup(t)
	d.Config.ClickHouse = chConfig(t, chAddr)
	d.Config.ClickHouse.RetentionDays = 3650
	produce(t, d.Config.Kafka.Brokers, d.Config.Kafka.Topics.Orders, []kafka.Message{{Key: []byte("ordered"), Value: []byte(
		`{"patient_id":"ordered","home":{"lat":55.7512,"lon":37.6184},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`)}})
	sink := openSink(t, d.Config.ClickHouse, "")
	d.Sink, d.Now = sink, func() time.Time { return dataStart.Add(time.Hour) }
	svc := runServiceWith(t, *d)
	var pings []kafka.Message
	for i := 0; i < 10; i++ {
		for _, id := range []string{"ordered", "stranger"} {
			pings = append(pings, kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"patient_id":%q,"ts":%q,"lat":55.76,"lon":37.6184,"accuracy_m":5}`,
				id, dataStart.Add(time.Duration(i)*time.Minute).Format(time.RFC3339))})
		}
	}
	produce(t, d.Config.Kafka.Brokers, d.Config.Kafka.Topics.Pings, pings)
	waitFor(t, time.Minute, "every ping committed", func() bool { return caughtUp(t, k, d.Config.Kafka.Topics.Pings) })
	svc.stop(t)
	conn := chConn(t, chAddr)
	db := d.Config.ClickHouse.Database
	if n := count(t, conn, "SELECT count() FROM "+db+".pings WHERE patient_id = 'ordered'"); n != 10 {
		t.Errorf("%d rows of the patient with an order, want 10", n)
	}
	for _, table := range []string{"pings", "events"} {
		if n := count(t, conn, "SELECT count() FROM "+db+"."+table+" WHERE patient_id = 'stranger'"); n != 0 {
			t.Errorf("%s holds %d rows of a patient without an order", table, n)
		}
	}
}

// clickhouse.compression: auto leaves a loopback server uncompressed (as
// clickhouse-client does since 21.4) and compresses with LZ4 elsewhere.
func TestCompressionAutoIsOffOnLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]clickhouse.CompressionMethod{
		"127.0.0.1:9000": clickhouse.CompressionNone, "[::1]:9000": clickhouse.CompressionNone,
		"localhost:9000": clickhouse.CompressionNone, "127.0.0.2:9000": clickhouse.CompressionNone,
		"10.0.0.5:9000": clickhouse.CompressionLZ4, "ch.example.org:9000": clickhouse.CompressionLZ4,
	} {
		cfg := config.Default().ClickHouse
		cfg.Addr = addr
		if got := compressionOf(cfg); got != want {
			t.Errorf("auto to %s: %v, want %v", addr, got, want)
		}
	}
	cfg := config.Default().ClickHouse
	for _, m := range []string{"lz4", "zstd", "none"} {
		cfg.Compression = m
		if got := compressionOf(cfg).String(); got != m {
			t.Errorf("compression %s: %s", m, got)
		}
	}
}

// Every compression method writes every row to the real server.
func TestEveryCompressionMethodWrites(t *testing.T) {
	_, tracks, events := tracksFor(8, 500, 30_000)
	for _, m := range []string{"lz4", "zstd", "none"} {
		t.Run(m, func(t *testing.T) {
			cfg := chConfig(t, chAddr)
			cfg.Compression = m
			write(t, openSink(t, cfg, ""), tracks, events)
			conn := chConn(t, chAddr)
			if n := count(t, conn, "SELECT count() FROM "+cfg.Database+".pings"); n != uint64(len(tracks)) {
				t.Fatalf("%d ping rows with %s, want %d", n, m, len(tracks))
			}
			if n := count(t, conn, "SELECT count() FROM "+cfg.Database+".events"); n != uint64(len(events)) {
				t.Fatalf("%d events with %s, want %d", n, m, len(events))
			}
		})
	}
}
