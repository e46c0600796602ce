package clickhouse_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/paulmach/orb"
	qch "github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/local"

	"github.com/qfence/qfence/processor/pipeline"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/geo/synth"
	"github.com/qfence/qfence/processor"
)

func TestMigrateTwiceChangesNothing(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	conn := chtest.Conn(t, chtest.Addr)
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
	if err := qch.Migrate(context.Background(), cfg, local.TestLog()); err != nil {
		t.Fatal(err)
	}
	first := schema()
	if err := qch.Migrate(context.Background(), cfg, local.TestLog()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if second := schema(); second != first {
		t.Errorf("the schema changed on the second migrate:\n%s\n%s", first, second)
	}
	want := len(qch.Schema{DB: cfg.Database}.Migrations())
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".schema_migrations"); n != uint64(want) {
		t.Errorf("%d migrations recorded, want %d", n, want)
	}
}

// serverSchema is the schema of database db as Migrate writes it for the
// server behind conn.
func serverSchema(conn driver.Conn, db string) qch.Schema {
	s := qch.Schema{DB: db, F: qch.FeaturesOf(qch.Version{Major: 18, Minor: 16})}
	if v, err := conn.ServerVersion(); err == nil {
		s.F = qch.FeaturesOf(qch.Version{Major: int(v.Version.Major), Minor: int(v.Version.Minor)})
	}
	return s
}

// A database made by the first release (migration 1 only, with rows in it)
// is upgraded in place: the pass columns and tables appear, the rows stay,
// and an interrupted upgrade can run again.
func TestMigrateUpgradesInPlace(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	conn := chtest.Conn(t, chtest.Addr)
	ctx := context.Background()
	s := serverSchema(conn, cfg.Database)
	for _, stmt := range s.Migrations()[0] {
		if err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	insert := func(query string, vals ...any) { t.Helper(); insertRow(t, conn, query, vals...) }
	insert("INSERT INTO "+cfg.Database+".schema_migrations (version, applied_at)", uint32(1), time.Now().UTC())
	insert("INSERT INTO "+cfg.Database+".pings (patient_id, ts, lat)", "old-row", time.Now().UTC(), 55.75)
	if err := conn.Exec(ctx, s.Migrations()[1][0]); err != nil { // the upgrade's first ALTER alone: interrupted
		t.Fatal(err)
	}
	for range 2 {
		if err := qch.Migrate(ctx, cfg, local.TestLog()); err != nil {
			t.Fatal(err)
		}
	}
	_, tracks, _ := tracksFor(3, 10, 100)
	chtest.Write(t, chtest.OpenSink(t, cfg, ""), tracks, nil)
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings WHERE pass_id = ''"); n != uint64(len(tracks)+1) {
		t.Errorf("%d rows with an empty pass_id, want %d (the old row and the new ones)", n, len(tracks)+1)
	}
	for _, table := range []string{"passes", "api_audit"} {
		chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+"."+table)
	}
}

// Migration 4 upgrades a database at migration 3 that holds rows: the old
// rows read as unknown source, no flags and no counted check-in; the new
// event types and the foreign_device flag can be written beside them.
func TestMigrationFourUpgradesRowsOfThree(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	conn := chtest.Conn(t, chtest.Addr)
	ctx := context.Background()
	s := serverSchema(conn, cfg.Database)
	for _, m := range s.Migrations()[:3] {
		for _, stmt := range m {
			if err := conn.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert := func(query string, vals ...any) { t.Helper(); insertRow(t, conn, query, vals...) }
	for v := uint32(1); v <= 3; v++ {
		insert("INSERT INTO "+cfg.Database+".schema_migrations (version, applied_at)", v, time.Now().UTC())
	}
	one := uint8(1)
	insert("INSERT INTO "+cfg.Database+".pings (patient_id, ts, lat, flag, checkin_verified)", "old-row", time.Now().UTC(), 55.75, int8(1), &one)
	if err := qch.Migrate(ctx, cfg, local.TestLog()); err != nil {
		t.Fatal(err)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings WHERE patient_id = 'old-row' AND source_class = 'unknown' "+
		"AND empty(flags) AND isNull(checkin_counted) AND flag = 'late'"); n != 1 {
		t.Fatalf("the old row reads as %d rows of unknown source, no flags, no counted check-in", n)
	}
	tr := processor.Track{PatientID: "new-row", Flag: processor.FlagForeign, Source: []byte("WiFi"),
		Checkin: processor.Checkin{Present: true, Verified: true}}
	tr.TS, tr.State = dataStart.UnixMilli(), processor.Uncertain
	book := processor.NewOrderBook()
	o := &processor.Order{PatientID: "new-row", Home: [2]float64{37.6, 55.7}, RadiusM: 50, StartsAt: 0, EndsAt: math.MaxInt64}
	o.EnrolDevice("phone")
	book.Put(o)
	ev := processor.Event{Type: processor.CheckinRejected, PatientID: "new-row", At: tr.TS, StartedAt: tr.TS, Reason: "mismatch",
		Evidence: []processor.Evidence{tr.Evidence}}
	mismatch := processor.Event{Type: processor.DeviceMismatch, PatientID: "new-row", At: tr.TS + 1, StartedAt: tr.TS + 1,
		Device: &processor.DeviceSeen{Enrolled: "phone"}, Evidence: []processor.Evidence{}}
	learned := processor.Event{Type: processor.MislocationLearned, PatientID: "new-row", At: tr.TS + 2, StartedAt: tr.TS,
		Mislocation: &processor.MislocationRef{RadiusM: 180, ValidTo: tr.TS + 14*24*3600_000}, Evidence: []processor.Evidence{}}
	known := tr
	known.TS, known.Flag = tr.TS+3, processor.FlagKnownMislocation
	chtest.Write(t, chtest.OpenSink(t, cfg, ""), []processor.Track{tr, known}, []processor.Event{ev, mismatch, learned})
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings WHERE patient_id = 'new-row' "+
		"AND flags = ['known_mislocation'] AND flag = 'known_mislocation'"); n != 1 {
		t.Errorf("the known_mislocation row reads as %d rows with its flag", n)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".events WHERE type = 'mislocation_learned' "+
		"AND mislocation_radius_m = 180 AND toUnixTimestamp(expires_at) = "+fmt.Sprint((tr.TS+14*24*3600_000)/1000)); n != 1 {
		t.Errorf("mislocation_learned stored as %d rows with its circle", n)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings WHERE patient_id = 'new-row' AND source_class = 'network' "+
		"AND flags = ['foreign_device'] AND checkin_counted = 0 AND flag = 'foreign_device'"); n != 1 {
		t.Errorf("the new row reads as %d rows with its source, flags and uncounted check-in", n)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".events WHERE type IN ('checkin_rejected', 'device_mismatch')"); n != 2 {
		t.Errorf("%d of the new events stored, want 2", n)
	}
}

// insertRow inserts one row by hand, as an older qfence would have.
func insertRow(t *testing.T, conn driver.Conn, query string, vals ...any) {
	t.Helper()
	b, err := conn.PrepareBatch(context.Background(), query)
	if err == nil {
		if err = b.Append(vals...); err == nil {
			err = b.Send()
		}
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// dataStart is when the test pings begin.
var dataStart = time.Date(2026, 4, 2, 8, 0, 0, 0, time.UTC)

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
			if i%10 == 0 && k%60 >= 5 && k%60 < 30 { // 25 minutes out: breaches, and escalations in a long enough run
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
	cfg := chtest.DB(t, chtest.Addr)
	cfg.BatchRows = 30000
	c := chtest.OpenSink(t, cfg, "")
	_, tracks, events := tracksFor(1, 2000, 100_000) // 50 rounds: long enough to escalate
	for round := 0; round < 2; round++ {
		for start := 0; start < len(tracks); start += 25000 {
			chtest.Write(t, c, tracks[start:min(len(tracks), start+25000)], nil)
		}
		chtest.Write(t, c, nil, events)
	}
	conn := chtest.Conn(t, chtest.Addr)
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings FINAL"); n != uint64(len(tracks)) {
		t.Errorf("pings FINAL = %d, want %d", n, len(tracks))
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings"); n < uint64(len(tracks)) {
		t.Errorf("pings = %d, fewer than the %d written", n, len(tracks))
	}
	if len(events) < 100 {
		t.Fatalf("only %d events to check", len(events))
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".events FINAL"); n != uint64(len(events)) {
		t.Errorf("events FINAL = %d, want %d", n, len(events))
	}
	if n := chtest.Count(t, conn, "SELECT uniqExact(event_id) FROM "+cfg.Database+".events"); n != uint64(len(events)) {
		t.Errorf("%d distinct event ids, want %d", n, len(events))
	}
	// Every event type the engine has is a value of the events.type Enum8.
	types := map[processor.EventType]int{}
	for _, e := range events {
		types[e.Type]++
	}
	for _, typ := range processor.EventTypes {
		want := types[typ]
		if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".events FINAL WHERE type = '"+typ.String()+"'"); n != uint64(want) {
			t.Errorf("%d %s rows, want %d", n, typ, want)
		}
	}
	if types[processor.BreachEscalated] == 0 {
		t.Error("the data has no breach_escalated to store")
	}
}

// TestRetentionDropsOldDays: on a server without TTL (18.16), qfence drops
// day partitions older than retention_days itself.
func TestRetentionDropsOldDays(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	cfg.RetentionDays = 28
	c := chtest.OpenSink(t, cfg, "")
	old := processor.Track{PatientID: "old", Evidence: processor.Evidence{TS: time.Now().AddDate(0, 0, -40).UnixMilli(), State: processor.Inside}}
	recent := processor.Track{PatientID: "recent", Evidence: processor.Evidence{TS: time.Now().UnixMilli(), State: processor.Inside}}
	chtest.Write(t, c, []processor.Track{old, recent}, nil)
	c.DropExpired(context.Background())
	conn := chtest.Conn(t, chtest.Addr)
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings WHERE patient_id = 'old'"); n != 0 {
		t.Errorf("a 40-day-old ping survived retention of 28 days")
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings WHERE patient_id = 'recent'"); n != 1 {
		t.Errorf("today's ping was dropped")
	}
}

// TestPseudonymizationHidesEveryPatientID: with a key, no real id reaches
// any table, and a patient has one pseudonym across the three.
func TestPseudonymizationHidesEveryPatientID(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	const key = "a secret of the health ministry"
	c := chtest.OpenSink(t, cfg, key)
	book, tracks, events := tracksFor(2, 200, 4000)
	var orders []pipeline.OrderRow
	for i := 0; i < 200; i++ {
		orders = append(orders, pipeline.OrderRow{Order: book.Lookup(fmt.Sprintf("p-%05d", i)), Received: time.Now()})
	}
	c.WriteOrders(orders)
	chtest.Write(t, c, tracks, events)
	conn := chtest.Conn(t, chtest.Addr)
	for _, table := range []string{"pings", "events", "orders"} {
		if n := chtest.Count(t, conn, fmt.Sprintf("SELECT count() FROM %s.%s WHERE patient_id LIKE 'p-%%'", cfg.Database, table)); n != 0 {
			t.Errorf("%s holds %d real patient ids", table, n)
		}
		if n := chtest.Count(t, conn, fmt.Sprintf("SELECT count() FROM %s.%s", cfg.Database, table)); n == 0 {
			t.Errorf("%s is empty: nothing was checked", table)
		}
	}
	want := processor.Pseudonym(key, "p-00000")
	for _, table := range []string{"pings", "events", "orders"} {
		if n := chtest.Count(t, conn, fmt.Sprintf("SELECT count() FROM %s.%s WHERE patient_id = '%s'", cfg.Database, table, want)); n == 0 {
			t.Errorf("%s has no row under p-00000's pseudonym %s", table, want)
		}
	}
}

// With pseudonymisation on, nothing stored can be matched against a list
// of guessed patient ids: event and notification ids are hashed from the
// pseudonym (the unkeyed ids of the same events are nowhere), a template
// that prints the id url-escaped stores the pseudonym (rendered again, not
// replaced), and device ids are pseudonymised too; Kafka's copies keep the
// real id.
func TestPseudonymizedRowsCannotBeReidentified(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	const key = "a secret of the health ministry, 32+ bytes"
	const patient, device = "p:000042", "356938035643809"
	book := processor.NewOrderBook()
	o, err := processor.DecodeOrder(nil, []byte(`{"patient_id":"`+patient+`","home":{"lat":55.75,"lon":37.61},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	book.Put(o)
	notifier, err := processor.NewNotifier(`Patient {{urlquery .PatientID}}: you left home at {{.StartedAt.Format "15:04"}}.`, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	run := func(pseudonymKey string) *pipeline.Output {
		rules := processor.DefaultRules()
		rules.PseudonymKey = pseudonymKey
		eng := processor.NewEngine(rules, book)
		out := &pipeline.Output{}
		t0 := time.Date(2026, 4, 2, 10, 0, 0, 0, time.UTC).UnixMilli()
		for i := range 12 {
			p := processor.Ping{PatientID: []byte(patient), TS: t0 + int64(i)*60_000, Lat: 55.76, Lon: 37.61, Accuracy: 10, DeviceID: []byte(device)}
			var row processor.Track
			var evs []processor.Event
			evs, _, row = eng.Process(&p, nil, nil)
			out.Rows = append(out.Rows, row)
			for i := range evs {
				out.Notifications = notifier.For(&evs[i], out.Notifications)
			}
			out.Events = append(out.Events, evs...)
		}
		return out
	}
	plain, keyed := run(""), run(key)
	if len(keyed.Events) == 0 || len(keyed.Notifications) == 0 || keyed.Events[0].PatientID != patient {
		t.Fatalf("%d events, %d notifications: no breach to store", len(keyed.Events), len(keyed.Notifications))
	}
	chtest.WriteOutput(t, chtest.OpenSink(t, cfg, key), keyed)
	conn := chtest.Conn(t, chtest.Addr)
	for _, e := range plain.Events {
		if n := chtest.Count(t, conn, fmt.Sprintf("SELECT count() FROM %s.events WHERE event_id = '%s'", cfg.Database, e.IDString())); n != 0 {
			t.Errorf("the unkeyed id of %s (what a list of guessed ids gives) is stored", e.Type)
		}
	}
	if n := chtest.Count(t, conn, fmt.Sprintf("SELECT count() FROM %s.events", cfg.Database)); n != uint64(len(keyed.Events)) {
		t.Errorf("%d events stored, want %d", n, len(keyed.Events))
	}
	for _, q := range []string{
		"SELECT count() FROM %s.notifications WHERE position(text, 'p:000042') > 0 OR position(text, 'p%%3A000042') > 0",
		"SELECT count() FROM %s.pings WHERE device_id = '356938035643809'",
	} {
		if n := chtest.Count(t, conn, fmt.Sprintf(q, cfg.Database)); n != 0 {
			t.Errorf("%s: %d rows hold the real id", q, n)
		}
	}
	warnings := 0
	for _, n := range keyed.Notifications {
		warnings += b2i(n.Kind == processor.Warning)
	}
	if n := chtest.Count(t, conn, fmt.Sprintf("SELECT count() FROM %s.notifications WHERE position(text, '%s') > 0", cfg.Database,
		processor.Pseudonym(key, patient))); n != uint64(warnings) || warnings == 0 {
		t.Errorf("%d stored texts show the pseudonym, want the %d warnings'", n, warnings)
	}
	if !strings.Contains(keyed.Notifications[0].Text, "p%3A000042") {
		t.Errorf("the patient's own text lost the id: %q", keyed.Notifications[0].Text)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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
		if got := qch.Compression(cfg); got != want {
			t.Errorf("auto to %s: %v, want %v", addr, got, want)
		}
	}
	cfg := config.Default().ClickHouse
	for _, m := range []string{"lz4", "zstd", "none"} {
		cfg.Compression = m
		if got := qch.Compression(cfg).String(); got != m {
			t.Errorf("compression %s: %s", m, got)
		}
	}
}

// Every compression method writes every row to the real server.
func TestEveryCompressionMethodWrites(t *testing.T) {
	_, tracks, events := tracksFor(8, 500, 30_000)
	for _, m := range []string{"lz4", "zstd", "none"} {
		t.Run(m, func(t *testing.T) {
			cfg := chtest.DB(t, chtest.Addr)
			cfg.Compression = m
			chtest.Write(t, chtest.OpenSink(t, cfg, ""), tracks, events)
			conn := chtest.Conn(t, chtest.Addr)
			if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings"); n != uint64(len(tracks)) {
				t.Fatalf("%d ping rows with %s, want %d", n, m, len(tracks))
			}
			if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".events"); n != uint64(len(events)) {
				t.Fatalf("%d events with %s, want %d", n, m, len(events))
			}
		})
	}
}

// Check-ins and notifications reach ClickHouse: the pings' check-in
// columns, the events' request_id and expires_at, the notifications table
// (collapsing when written twice), and district_daily's missed check-ins.
func TestCheckinsAndNotificationsAreStored(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	c := chtest.OpenSink(t, cfg, "")
	home := orb.Point{37.62, 55.75}
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p-1", Home: home, RadiusM: 50, StartsAt: dataStart.Add(-time.Hour).UnixMilli(), EndsAt: math.MaxInt64, District: "CAO"})
	eng := processor.NewEngine(processor.DefaultRules(), book)
	notifier, err := processor.NewNotifier("", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	out := &pipeline.Output{}
	far := synth.Offset([2]float64(home), 900, 0)
	for i, min := range []int{0, 5, 10, 40} { // a breach at 5, a failed check-in at 10, escalated at 20
		p := processor.Ping{PatientID: []byte("p-1"), TS: dataStart.Add(time.Duration(min) * time.Minute).UnixMilli(), Lat: far[1], Lon: far[0], Accuracy: 10}
		if i == 2 {
			p.Checkin = processor.Checkin{Present: true, Method: []byte("selfie")}
		}
		var tr processor.Track
		var events []processor.Event
		events, _, tr = eng.Process(&p, nil, nil)
		out.Rows = append(out.Rows, tr)
		out.Events = append(out.Events, events...)
		for j := range events {
			out.Notifications = notifier.For(&events[j], out.Notifications)
		}
	}
	// Then silence: signal_lost asks, and nobody answers.
	ev := eng.Advance(dataStart.Add(3*time.Hour).UnixMilli(), nil)
	out.Events = append(out.Events, ev...)
	if len(out.Notifications) != 2 {
		t.Fatalf("%d notifications, want a warning and a checkin_request", len(out.Notifications))
	}
	chtest.WriteOutput(t, c, out)
	chtest.WriteOutput(t, c, &pipeline.Output{Notifications: out.Notifications}) // again: collapses
	conn := chtest.Conn(t, chtest.Addr)
	db := cfg.Database
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".notifications FINAL"); n != 2 {
		t.Errorf("notifications FINAL = %d, want 2", n)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".notifications WHERE kind = 'checkin_request' AND expires_at IS NOT NULL AND text LIKE 'Please open the app%'"); n < 1 {
		t.Error("no checkin_request row with its expiry and text")
	}
	var reqID string
	if err := conn.QueryRow(context.Background(), "SELECT request_id FROM "+db+".events FINAL WHERE type = 'checkin_requested' AND expires_at IS NOT NULL").Scan(&reqID); err != nil {
		t.Fatal(err)
	}
	var pingReq, method string
	var verified *uint8
	if err := conn.QueryRow(context.Background(), "SELECT checkin_request_id, checkin_verified, checkin_method FROM "+db+".pings FINAL WHERE checkin_verified IS NOT NULL").Scan(&pingReq, &verified, &method); err != nil {
		t.Fatal(err)
	}
	if pingReq != reqID || verified == nil || *verified != 0 || method != "selfie" {
		t.Errorf("the check-in ping: request %q verified %v method %q; the request was %q", pingReq, verified, method, reqID)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".pings FINAL WHERE checkin_verified IS NULL"); n != 3 {
		t.Errorf("%d pings without a check-in, want 3", n)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".events FINAL WHERE type = 'checkin_failed' AND request_id = '"+reqID+"'"); n != 1 {
		t.Errorf("%d checkin_failed naming the request, want 1", n)
	}
	if n := chtest.Count(t, conn, "SELECT toUInt64(sum(escalations)) FROM "+db+".district_daily"); n != 1 {
		t.Errorf("district_daily escalations = %d, want 1", n)
	}
	if n := chtest.Count(t, conn, "SELECT toUInt64(sum(missed_checkins)) FROM "+db+".district_daily"); n != 1 {
		t.Errorf("district_daily missed_checkins = %d, want 1", n)
	}
}

// The sink keeps its pace between inserts until half the in-flight budget
// waits for it; then it inserts at once, even within the gap (it slept the
// gap out, and the pipeline, stopped at the budget, waited with it).
func TestHalfTheBudgetInsertsAtOnce(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	cfg.BatchRows, cfg.FlushInterval = 10_000, time.Hour
	_, tracks, _ := tracksFor(3, 1000, 60_000)
	c := chtest.OpenSink(t, cfg, "", func(c *qch.Sink) { c.Budget, c.Gap = 100_000, time.Hour })
	write := func(rows []processor.Track) chan error {
		acked := make(chan error, 1)
		c.Write(context.Background(), &pipeline.Output{Rows: rows}, func(err error) { acked <- err })
		return acked
	}
	wait := func(what string, acked chan error, within time.Duration) {
		t.Helper()
		select {
		case err := <-acked:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(within):
			t.Fatalf("%s: not inserted within %s", what, within)
		}
	}
	// The first insert has no gap before it.
	wait("the first rows", write(tracks[:10_000]), time.Minute)
	// More than batch_rows, less than half the budget: the sink waits out
	// its gap (an hour).
	second := write(tracks[10_000:30_000])
	select {
	case err := <-second:
		t.Fatalf("20k rows (a fifth of the budget) inserted within the gap (err %v)", err)
	case <-time.After(2 * time.Second):
	}
	// Half the budget now waits: inserted at once, the earlier rows with it.
	third := write(tracks[30_000:60_000])
	wait("half the budget", third, time.Minute)
	wait("the rows before it", second, time.Second)
	conn := chtest.Conn(t, chtest.Addr)
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+".pings"); n != 60_000 {
		t.Errorf("%d rows stored, want 60000", n)
	}
}

// Every column of every ping row reads back as written, over more rows
// than a chunk holds: a chunk keeps its rows' strings back to back and
// finds them by offset, so one off-by-one would shift them all.
func TestEveryPingColumnReadsBackAsWritten(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	c := chtest.OpenSink(t, cfg, "")
	r := rand.New(rand.NewPCG(7, 7))
	str := func(max int) string { // empty sometimes, multibyte sometimes, longer than 32 bytes sometimes
		b := make([]rune, r.IntN(max+1))
		for i := range b {
			b[i] = []rune("ab7-Жё€ ")[r.IntN(8)]
		}
		return string(b)
	}
	want := map[string]string{}
	var tracks []processor.Track
	for i := range 16384 + 1000 { // more than one chunk
		t := processor.Track{PatientID: fmt.Sprintf("p-%d-%s", i, str(30)), District: str(20), Zone: str(12), PassID: str(40),
			DeviceID: []byte(str(45)), Source: []byte(str(6)), InBreach: r.IntN(2) == 0, Mock: r.IntN(3) == 0, Flag: processor.Flag(r.IntN(int(processor.FlagKnownMislocation) + 1)),
		}
		if r.IntN(2) == 0 {
			t.Source = []byte([]string{"gps", "Fused-Network", "cell"}[r.IntN(3)])
		}
		t.TS = dataStart.Add(time.Duration(i)*time.Second).UnixMilli() + int64(r.IntN(1000))
		t.Lat, t.Lon, t.Accuracy, t.Distance, t.State = 55+r.Float64(), 37+r.Float64(), float32(r.IntN(100)), float32(r.IntN(5000)), processor.PingState(1+r.IntN(3))
		verified, counted := "NULL", "NULL"
		if k := r.IntN(4); k > 0 {
			t.Checkin = processor.Checkin{Present: true, Verified: k == 1, Method: []byte(str(8)), HasRequestID: k < 3, Counted: r.IntN(2) == 0}
			counted = fmt.Sprint(b2u(t.Checkin.Counted))
			for j := range t.Checkin.RequestID {
				t.Checkin.RequestID[j] = byte(r.Uint32())
			}
			verified = fmt.Sprint(b2u(t.Checkin.Verified))
		}
		req := ""
		if t.Checkin.HasRequestID {
			req = fmt.Sprintf("%x", t.Checkin.RequestID)
		}
		flags := "[]"
		if t.Flag != processor.FlagNone {
			flags = "['" + t.Flag.String() + "']"
		}
		want[t.PatientID] = fmt.Sprintf("%d %.6f %.6f %g %g %d %s|%s|%s|%s|%s %d %d %d|%s|%s|%s|%s|%s|%s", t.TS, t.Lat, t.Lon, t.Accuracy, t.Distance, t.State,
			t.District, t.Zone, t.PassID, t.DeviceID, t.Source, b2u(t.InBreach), t.Flag, b2u(t.Mock), req, verified, t.Checkin.Method,
			processor.ClassOf(t.Source), flags, counted)
		tracks = append(tracks, t)
	}
	chtest.Write(t, c, tracks, nil)
	conn := chtest.Conn(t, chtest.Addr)
	ms := "toUInt64(toUnixTimestamp(ts)) * 1000 + ts_ms"
	if v, err := conn.ServerVersion(); err == nil && qch.FeaturesOf(qch.Version{Major: int(v.Version.Major), Minor: int(v.Version.Minor)}).DateTime64 {
		ms = "toUInt64(toUnixTimestamp64Milli(ts))"
	}
	rows, err := conn.Query(context.Background(), "SELECT patient_id, concat(toString("+ms+"), ' ', toString(lat), ' ', toString(lon), ' ', toString(accuracy_m), ' ', "+
		"toString(distance_m), ' ', toString(CAST(state AS Int8)), ' ', district, '|', zone, '|', pass_id, '|', device_id, '|', source, ' ', "+
		"toString(in_breach), ' ', toString(CAST(flag AS Int8)), ' ', toString(mock), '|', checkin_request_id, '|', "+
		"ifNull(toString(checkin_verified), 'NULL'), '|', checkin_method, '|', toString(source_class), '|', toString(flags), '|', "+
		"ifNull(toString(checkin_counted), 'NULL')), lat, lon FROM "+cfg.Database+".pings")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id, got string
		var lat, lon float64
		if err := rows.Scan(&id, &got, &lat, &lon); err != nil {
			t.Fatal(err)
		}
		n++
		// ClickHouse prints floats its own way: compare them as numbers.
		f := strings.SplitN(got, " ", 4)
		got = fmt.Sprintf("%s %.6f %.6f %s", f[0], lat, lon, f[3])
		if got != want[id] {
			t.Errorf("row of %q:\n got %s\nwant %s", id, got, want[id])
			if n > 5 {
				t.FailNow()
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Errorf("%d rows read back, want %d", n, len(want))
	}
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Every table's insert goes in blocks of at most a chunk: more rows than a
// chunk holds, of pings, events and orders in one flush, all arrive.
func TestAFlushLargerThanABlock(t *testing.T) {
	cfg := chtest.DB(t, chtest.Addr)
	c := chtest.OpenSink(t, cfg, "")
	const n = 16384*2 + 7
	var orders []pipeline.OrderRow
	var events []processor.Event
	var tracks []processor.Track
	for i := range n {
		id := fmt.Sprintf("p-%d", i)
		orders = append(orders, pipeline.OrderRow{Order: &processor.Order{PatientID: id, Home: orb.Point{37.6, 55.7}, RadiusM: 50,
			StartsAt: dataStart.UnixMilli(), EndsAt: math.MaxInt64}, Received: dataStart})
		events = append(events, processor.Event{Type: processor.SignalLost, PatientID: id, At: dataStart.UnixMilli(), StartedAt: dataStart.UnixMilli()})
		tracks = append(tracks, processor.Track{PatientID: id, Evidence: processor.Evidence{TS: dataStart.UnixMilli(), State: processor.Inside}})
	}
	c.WriteOrders(orders)
	chtest.Write(t, c, tracks, events)
	conn := chtest.Conn(t, chtest.Addr)
	for _, table := range []string{"orders", "events", "pings"} {
		if got := chtest.Count(t, conn, "SELECT count() FROM "+cfg.Database+"."+table); got != n {
			t.Errorf("%s holds %d rows, want %d", table, got, n)
		}
	}
}

// At most 20,000 audit rows wait for ClickHouse; the rest are dropped and
// counted (a flood of requests while ClickHouse is down once held 4.8 GB).
func TestTheAuditBufferIsBounded(t *testing.T) {
	var s qch.Sink
	for range 20_005 {
		s.Audit(pipeline.AuditRow{At: time.Now(), Method: "GET", Path: "/v1/passes/x", Status: 401})
	}
	if n := s.AuditDropped.Load(); n != 5 {
		t.Errorf("%d audit rows dropped, want 5", n)
	}
}
