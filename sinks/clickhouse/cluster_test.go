package clickhouse_test

import (
	"context"
	"fmt"
	"github.com/qfence/qfence/processor"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/qfence/qfence/config"
	qch "github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/local"
)

// The schema on a two-shard cluster: migrate is idempotent on every shard;
// rows written through the Distributed tables land each patient on one
// shard, and twice-written rows collapse under FINAL; the README's analyst
// queries give the same answers as on one server holding the same rows.
func TestACluster(t *testing.T) {
	servers := chtest.Cluster(t, 2)
	cfg := config.Default().ClickHouse
	cfg.Addr, cfg.Cluster, cfg.Database, cfg.RetentionDays = servers[0].Addr, local.ClusterName, "qfence_cluster", 3650
	ctx := context.Background()
	ddl := func() string {
		var b strings.Builder
		for _, s := range servers {
			conn := chtest.Conn(t, s.Addr)
			for _, table := range []string{"pings", "pings_local", "events", "events_local", "notifications_local", "district_daily"} {
				var q string
				if err := conn.QueryRow(ctx, fmt.Sprintf("SHOW CREATE TABLE %s.%s", cfg.Database, table)).Scan(&q); err != nil {
					t.Fatalf("%s on %s: %v", table, s.Addr, err)
				}
				b.WriteString(q + "\n")
			}
		}
		return b.String()
	}
	if err := qch.Migrate(ctx, cfg, local.TestLog()); err != nil {
		t.Fatal(err)
	}
	first := ddl()
	if err := qch.Migrate(ctx, cfg, local.TestLog()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if ddl() != first {
		t.Error("the schema changed on the second migrate")
	}
	want := uint64(len(qch.Schema{DB: cfg.Database}.Migrations()))
	for _, s := range servers {
		if n := chtest.Count(t, chtest.Conn(t, s.Addr), "SELECT count() FROM "+cfg.Database+".schema_migrations"); n != want {
			t.Errorf("%s: %d migrations recorded, want %d", s.Addr, n, want)
		}
	}

	_, tracks, events := tracksFor(11, 2000, 60_000)
	single := chtest.DB(t, chtest.Addr)
	single.RetentionDays = 3650
	for _, c := range []config.ClickHouse{cfg, single} {
		sink := chtest.OpenSink(t, c, "")
		for range 2 { // a replay writes everything again
			chtest.Write(t, sink, tracks, events)
		}
		// Decisions about escalations, for rule_outcomes: its join must find
		// an event's dispositions on whichever shard holds them.
		var ds []processor.Disposition
		for i := range events {
			if e := &events[i]; (e.Type == processor.BreachEscalated || e.Type == processor.BreachStarted) && len(ds) < 20 {
				ds = append(ds, processor.Disposition{DispositionID: fmt.Sprintf("D-%d", i), EventID: e.IDString(), Decision: "dismissed",
					Reason: "false_location", DecidedBy: "judge", DecidedAt: e.At + 60_000, Channel: "review"})
			}
		}
		if err := sink.StoreDispositions(ctx, ds); err != nil || len(ds) == 0 {
			t.Fatalf("%d dispositions: %v", len(ds), err)
		}
	}
	conn := chtest.Conn(t, servers[0].Addr)
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings FINAL"); n != uint64(len(tracks)) {
		t.Errorf("pings FINAL through the Distributed table = %d, want %d", n, len(tracks))
	}
	var onShard [2]uint64
	patients := map[string]int{}
	for i, s := range servers {
		c := chtest.Conn(t, s.Addr)
		onShard[i] = chtest.Count(t, c, "SELECT count() FROM "+cfg.Database+".pings_local FINAL")
		rows, err := c.Query(ctx, "SELECT DISTINCT patient_id FROM "+cfg.Database+".pings_local")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			patients[id]++
		}
		rows.Close()
	}
	if onShard[0] == 0 || onShard[1] == 0 || onShard[0]+onShard[1] != uint64(len(tracks)) {
		t.Errorf("rows per shard %v, want both non-empty and %d in all", onShard, len(tracks))
	}
	for id, n := range patients {
		if n != 1 {
			t.Fatalf("patient %s has rows on %d shards", id, n)
		}
	}
	answered := 0
	for _, q := range readmeQueries(t, tracks[0].PatientID) {
		a, b := answer(t, conn, strings.ReplaceAll(q, "qfence.", cfg.Database+".")), answer(t, chtest.Conn(t, chtest.Addr), strings.ReplaceAll(q, "qfence.", single.Database+"."))
		if a != b {
			t.Errorf("%s\ncluster: %.300s\none server: %.300s", q, a, b)
		}
		if a != "" {
			answered++
		}
	}
	if answered < 5 { // the data has no signal lost now: that one answers nothing on both
		t.Errorf("only %d of the README's queries found rows", answered)
	}
	t.Logf("rows per shard %v, %d patients, one shard each", onShard, len(patients))

	// Retention on a server without TTL drops the old days on every shard.
	short := cfg
	short.RetentionDays = 30 // the rows are from April
	chtest.OpenSink(t, short, "").DropExpired(ctx)
	for _, s := range servers {
		if n := chtest.Count(t, chtest.Conn(t, s.Addr), "SELECT count() FROM "+cfg.Database+".pings_local"); n != 0 {
			t.Errorf("%s: %d rows older than the retention left", s.Addr, n)
		}
	}
}

// A dossier reads what the shards that answer hold (on a cluster the
// reader skips unavailable shards): with the second shard down, an event
// whose patient lives on the first still renders.
func TestADossierWithAShardDown(t *testing.T) {
	servers := chtest.Cluster(t, 2)
	cfg := config.Default().ClickHouse
	cfg.Addr, cfg.Cluster, cfg.Database, cfg.RetentionDays = servers[0].Addr, local.ClusterName, "qfence_shard_down", 3650
	ctx := context.Background()
	if err := qch.Migrate(ctx, cfg, local.TestLog()); err != nil {
		t.Fatal(err)
	}
	_, tracks, events := tracksFor(12, 200, 6_000)
	chtest.Write(t, chtest.OpenSink(t, cfg, ""), tracks, events)
	var eventID string
	if err := chtest.Conn(t, servers[0].Addr).QueryRow(ctx, "SELECT event_id FROM "+cfg.Database+".events_local LIMIT 1").Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	reader, err := qch.NewReader(ctx, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	servers[1].Stop()
	start := time.Now()
	c, err := reader.Case(ctx, eventID)
	took := time.Since(start)
	if err != nil || c == nil || len(c.Pings) == 0 || took > 20*time.Second {
		t.Errorf("a dossier with one shard down: %v after %s", err, took.Round(time.Millisecond))
	}
	t.Logf("a dossier with one shard down: %d pings in %s", len(c.Pings), took.Round(time.Millisecond))

}

// readmeQueries are the analyst queries of README.md, for patient id.
func readmeQueries(t *testing.T, id string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)questions analysts ask.*?```sql\n(.*?)```").FindSubmatch(b)
	if block == nil {
		t.Fatal("no analyst queries in README.md")
	}
	var out []string
	for _, q := range strings.Split(string(block[1]), ";") {
		var lines []string
		for _, l := range strings.Split(q, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "--") {
				lines = append(lines, l)
			}
		}
		if q := strings.TrimSpace(strings.Join(lines, "\n")); q != "" {
			out = append(out, strings.ReplaceAll(q, "p-000123", id))
		}
	}
	if len(out) < 6 {
		t.Fatalf("%d analyst queries in README.md, want 6", len(out))
	}
	return out
}

// answer runs a query and renders its rows, sorted, as text.
func answer(t *testing.T, conn driver.Conn, q string) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	cols := rows.ColumnTypes()
	for rows.Next() {
		vals := make([]any, len(cols))
		for i, c := range cols {
			vals[i] = newOf(c.ScanType())
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, v := range vals {
			parts = append(parts, fmt.Sprint(deref(v)))
		}
		out = append(out, strings.Join(parts, " "))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func newOf(typ reflect.Type) any { return reflect.New(typ).Interface() }

func deref(v any) any { return reflect.ValueOf(v).Elem().Interface() }
