package clickhouse

import (
	"fmt"
	"strings"
)

// Version is a ClickHouse server version.
type Version struct{ Major, Minor int }

func (v Version) atLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

// Features are the parts of the schema that differ between ClickHouse 18.16
// (Debian's package, the oldest server qfence supports) and current
// releases.
type Features struct {
	DateTime64     bool // 20.1: millisecond times in one column
	LowCardinality bool // 19.0: dictionary-encoded strings
	TTL            bool // 19.6: the server expires rows itself
	// AddColumnIfNotExists: ALTER … ADD COLUMN IF NOT EXISTS (19.1; on
	// 18.16 Migrate treats "already exists" as done instead).
	AddColumnIfNotExists bool
	Codecs               bool // 20.1: per-column compression codecs
}

// FeaturesOf says what a server version supports.
func FeaturesOf(v Version) Features {
	return Features{DateTime64: v.atLeast(20, 1), LowCardinality: v.atLeast(19, 0), TTL: v.atLeast(19, 6), Codecs: v.atLeast(20, 1),
		AddColumnIfNotExists: v.atLeast(19, 1)}
}

// Schema generates qfence's DDL for one server.
type Schema struct {
	DB            string
	F             Features
	RetentionDays int
	// Cluster, when set, is a cluster of the servers' remote_servers: each
	// table's rows live in NAME_local on every shard, and NAME is a
	// Distributed table over them (what qfence inserts into and analysts
	// query), sharded by a hash of patient_id so that a patient's rows,
	// and the FINAL that collapses their replays, stay on one shard.
	Cluster string
}

// Local is the table that holds a table's rows on a server: the table
// itself on one server, NAME_local on a cluster.
func (s Schema) Local(table string) string {
	if s.Cluster == "" {
		return table
	}
	return table + "_local"
}

// timeCol is a millisecond time column: DateTime64(3) where the server has
// it, else DateTime (seconds) plus a NAME_ms UInt16 column.
func (s Schema) timeCol(name string, nullable bool) string {
	if s.F.DateTime64 {
		if nullable {
			return fmt.Sprintf("%s Nullable(DateTime64(3, 'UTC'))", name)
		}
		return fmt.Sprintf("%s DateTime64(3, 'UTC')%s", name, s.codec("Delta, ZSTD"))
	}
	if nullable {
		return fmt.Sprintf("%s Nullable(DateTime('UTC'))", name)
	}
	return fmt.Sprintf("%s DateTime('UTC'),\n  %s_ms UInt16", name, name)
}

func (s Schema) lowCard() string {
	if s.F.LowCardinality {
		return "LowCardinality(String)"
	}
	return "String"
}

func (s Schema) codec(c string) string {
	if s.F.Codecs {
		return " CODEC(" + c + ")"
	}
	return ""
}

func (s Schema) ttl(col string) string {
	if !s.F.TTL {
		return ""
	}
	return fmt.Sprintf("\nTTL toDateTime(%s) + INTERVAL %d DAY", col, s.RetentionDays)
}

// Tables lists the tables retention applies to, with their time column.
var Tables = []struct{ Name, TimeCol string }{{"pings", "ts"}, {"events", "at"}, {"orders", "starts_at"},
	{"passes", "valid_from"}, {"api_audit", "at"}, {"notifications", "at"}, {"dispositions", "decided_at"}}

// Migrations are the schema's versions, in order. Each statement is
// idempotent, so a migration interrupted half-way can simply run again.
// On a cluster they are run on every shard (Migrate does), each table made
// twice (local and Distributed) and each ALTER applied to both.
func (s Schema) Migrations() [][]string {
	m := s.migrations()
	if s.Cluster == "" {
		return m
	}
	for i := range m {
		var out []string
		for _, stmt := range m[i] {
			out = append(out, s.distribute(stmt)...)
		}
		m[i] = out
	}
	return m
}

// distribute turns one statement of the one-server schema into the
// statements of a shard of the cluster.
func (s Schema) distribute(stmt string) []string {
	for _, t := range Tables {
		name := s.DB + "." + t.Name
		create, alter := "CREATE TABLE IF NOT EXISTS "+name+" (", "ALTER TABLE "+name+" "
		key := "cityHash64(patient_id)"
		switch t.Name {
		case "api_audit":
			key = "rand()"
		case "dispositions": // no patient: an event's dispositions together, for FINAL
			key = "cityHash64(event_id)"
		}
		switch {
		case strings.HasPrefix(stmt, create):
			return []string{
				strings.Replace(stmt, create, "CREATE TABLE IF NOT EXISTS "+name+"_local (", 1),
				fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s AS %s_local ENGINE = Distributed(%s, %s, %s_local, %s)", name, name, s.Cluster, s.DB, t.Name, key),
			}
		case strings.HasPrefix(stmt, alter):
			return []string{strings.Replace(stmt, alter, "ALTER TABLE "+name+"_local ", 1), stmt}
		}
	}
	return []string{stmt}
}

func (s Schema) migrations() [][]string {
	db := s.DB
	return [][]string{{
		fmt.Sprintf("CREATE DATABASE IF NOT EXISTS %s", db),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.schema_migrations (
  version UInt32,
  applied_at DateTime('UTC')
) ENGINE = MergeTree() ORDER BY version`, db),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.pings (
  patient_id String,
  %s,
  lat Float64,
  lon Float64,
  accuracy_m Float32,
  state Enum8('inside' = 1, 'outside' = 2, 'excused' = 3, 'uncertain' = 4),
  distance_m Float32,
  district %s,
  zone %s,
  in_breach UInt8,
  flag Enum8('' = 0, 'late' = 1, 'speed' = 2, 'mock_provider' = 3),
  mock UInt8,
  device_id String,
  source String,
  inserted_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (patient_id, ts%s)%s`, db, s.timeCol("ts", false), s.lowCard(), s.lowCard(), s.msKey("ts"), s.ttl("ts")),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.events (
  event_id FixedString(32),
  type Enum8('breach_started' = 1, 'breach_ended' = 2, 'signal_lost' = 3, 'signal_restored' = 4, 'implausible_location' = 5),
  patient_id String,
  %s,
  %s,
  %s,
  duration_s Int64,
  reason %s,
  location_lat Float64,
  location_lon Float64,
  location_accuracy_m Float32,
  distance_m Float32,
  max_distance_m Float32,
  home_lat Float64,
  home_lon Float64,
  home_radius_m Float64,
  district %s,
  zone %s,
  evidence String,
  inserted_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMMDD(at)
ORDER BY (patient_id, event_id)%s`, db, s.timeCol("at", false), s.timeCol("started_at", false), s.timeCol("ended_at", true),
			s.lowCard(), s.lowCard(), s.lowCard(), s.ttl("at")),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.orders (
  patient_id String,
  version UInt64,
  revoked UInt8,
  home_lat Float64,
  home_lon Float64,
  radius_m Float64,
  starts_at DateTime('UTC'),
  ends_at Nullable(DateTime('UTC')),
  district %s,
  received_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMMDD(starts_at)
ORDER BY (patient_id, version)%s`, db, s.lowCard(), s.ttl("starts_at")),
		s.districtDaily(""),
	}, {
		// 2: QR passes: the pass that excused a ping or a breach's trip, the
		// passes table, and the API's audit trail.
		s.addColumn("pings", "pass_id String DEFAULT ''"),
		s.addColumn("events", "pass_id String DEFAULT ''"),
		// The rule values an event was decided by, for its dossier.
		s.addColumn("events", "rule_margin_m Float64 DEFAULT 0"),
		s.addColumn("events", "rule_breach_after_s Float64 DEFAULT 0"),
		s.addColumn("events", "rule_breach_min_pings UInt16 DEFAULT 0"),
		// breach_escalated, and the view that counts escalations.
		fmt.Sprintf("ALTER TABLE %s.events MODIFY COLUMN type Enum8('breach_started' = 1, 'breach_ended' = 2, 'signal_lost' = 3, 'signal_restored' = 4, 'implausible_location' = 5, 'breach_escalated' = 6)", db),
		fmt.Sprintf("DROP TABLE IF EXISTS %s.district_daily", db),
		s.districtDaily(",\n  countIf(type = 'breach_escalated') AS escalations"),
		// A breach's confidence (0 where the event has none).
		s.addColumn("events", "confidence_outside_pings UInt32 DEFAULT 0"),
		s.addColumn("events", "confidence_min_margin_m Float32 DEFAULT 0"),
		s.addColumn("events", "confidence_dwell_s Int64 DEFAULT 0"),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.passes (
  pass_id String,
  version UInt64,
  deleted UInt8,
  patient_id String,
  purpose Enum8('grocery' = 1, 'pharmacy' = 2, 'medical' = 3, 'trash' = 4, 'pet' = 5, 'work' = 6, 'other' = 7),
  valid_from DateTime('UTC'),
  valid_to DateTime('UTC'),
  max_distance_m Float64,
  revoked_at Nullable(DateTime('UTC')),
  issued_at Nullable(DateTime('UTC')),
  received_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMMDD(valid_from)
ORDER BY (patient_id, pass_id, version)%s`, db, s.ttl("valid_from")),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.api_audit (
  at DateTime('UTC'),
  role %s,
  token_name String,
  method %s,
  path String,
  status UInt16,
  remote String
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(at)
ORDER BY at%s`, db, s.lowCard(), s.lowCard(), s.ttl("at")),
	}, {
		// 3: check-ins and notifications (contract 2.2, 3.3).
		s.addColumn("pings", "checkin_request_id String DEFAULT ''"),
		s.addColumn("pings", "checkin_verified Nullable(UInt8)"),
		s.addColumn("pings", "checkin_method String DEFAULT ''"),
		fmt.Sprintf("ALTER TABLE %s.events MODIFY COLUMN type Enum8('breach_started' = 1, 'breach_ended' = 2, 'signal_lost' = 3, 'signal_restored' = 4, "+
			"'implausible_location' = 5, 'breach_escalated' = 6, 'checkin_requested' = 7, 'checkin_missed' = 8, 'checkin_failed' = 9)", db),
		s.addColumn("events", "request_id String DEFAULT ''"),
		s.addColumn("events", s.timeCol("expires_at", true)),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.notifications (
  notification_id FixedString(32),
  patient_id String,
  kind Enum8('warning' = 1, 'checkin_request' = 2),
  %s,
  event_id FixedString(32),
  %s,
  text String,
  inserted_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMMDD(at)
ORDER BY (patient_id, notification_id)%s`, db, s.timeCol("at", false), s.timeCol("expires_at", true), s.ttl("at")),
		fmt.Sprintf("DROP TABLE IF EXISTS %s.district_daily", db),
		s.districtDaily(",\n  countIf(type = 'breach_escalated') AS escalations,\n  countIf(type = 'checkin_missed') AS missed_checkins"),
	}, {
		// 4: whose word counts (contract 2.3): the fix's source class, the
		// flags as an array, whether a check-in counted; the new events.
		s.addColumn("pings", "source_class Enum8('unknown' = 0, 'gnss' = 1, 'network' = 2) DEFAULT 'unknown'"),
		s.addColumn("pings", "flags Array("+s.lowCard()+")"),
		s.addColumn("pings", "checkin_counted Nullable(UInt8)"),
		fmt.Sprintf("ALTER TABLE %s.pings MODIFY COLUMN flag Enum8('' = 0, 'late' = 1, 'speed' = 2, 'mock_provider' = 3, 'foreign_device' = 4)", db),
		fmt.Sprintf("ALTER TABLE %s.events MODIFY COLUMN type Enum8('breach_started' = 1, 'breach_ended' = 2, 'signal_lost' = 3, 'signal_restored' = 4, "+
			"'implausible_location' = 5, 'breach_escalated' = 6, 'checkin_requested' = 7, 'checkin_missed' = 8, 'checkin_failed' = 9, "+
			"'checkin_rejected' = 10, 'device_mismatch' = 11, 'mislocation_learned' = 12)", db),
	}, {
		// 5: known mislocations (contract 2.4): the flag of the pings they made
		// uncertain, and the circle of mislocation_learned (its valid_to in
		// expires_at).
		fmt.Sprintf("ALTER TABLE %s.pings MODIFY COLUMN flag Enum8('' = 0, 'late' = 1, 'speed' = 2, 'mock_provider' = 3, 'foreign_device' = 4, "+
			"'known_mislocation' = 5)", db),
		s.addColumn("events", "mislocation_radius_m Float32 DEFAULT 0"),
	}, {
		// 6: what people decided (contract 1.5, 3.2): the dispositions, how
		// many of a breach's outside pings were network fixes, and the view
		// that counts decisions against the rules that made the events.
		s.addColumn("events", "confidence_network_pings UInt32 DEFAULT 0"),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.dispositions (
  disposition_id String,
  event_id FixedString(32),
  decision Enum8('confirmed' = 1, 'dismissed' = 2, 'contested' = 3),
  reason Enum8('confirmed_absence' = 1, 'false_location' = 2, 'permitted_trip' = 3, 'medical' = 4, 'device_fault' = 5, 'signal_only' = 6, 'other' = 7),
  comment String,
  decided_by String,
  %s,
  channel Enum8('' = 0, 'review' = 1, 'enforcement' = 2, 'patient' = 3, 'other' = 4),
  inserted_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMMDD(decided_at)
ORDER BY (event_id, disposition_id)%s`, db, s.timeCol("decided_at", false), s.ttl("decided_at")),
		s.ruleOutcomes(),
	}}
}

// ruleOutcomes is the view of contract 3.2: per day, district, event type
// and current decision (the newest disposition of each event; ” while it
// waits) the count of events, and for breach events how many of them
// rested on network fixes alone. GLOBAL: on a cluster the dispositions of
// an event may live on another shard than the event.
func (s Schema) ruleOutcomes() string {
	return fmt.Sprintf(`CREATE VIEW IF NOT EXISTS %s.rule_outcomes AS
SELECT day, district, type, decision, reason, count() AS events,
  sum(network_only) AS network_only_events,
  if(countIf(breach) = 0, 0, sumIf(network_only, breach) / countIf(breach)) AS network_only_share
FROM (
  SELECT event_id, toDate(at) AS day, district, toString(type) AS type,
    type IN ('breach_started', 'breach_ended', 'breach_escalated') AS breach,
    breach AND confidence_outside_pings > 0 AND confidence_network_pings = confidence_outside_pings AS network_only
  FROM %s.events FINAL
) GLOBAL ANY LEFT JOIN (
  SELECT event_id, argMax(toString(decision), %s) AS decision, argMax(toString(reason), %s) AS reason
  FROM %s.dispositions FINAL
  GROUP BY event_id
) USING event_id
GROUP BY day, district, type, decision, reason`, s.DB, s.DB, s.msOf("decided_at"), s.msOf("decided_at"), s.DB)
}

// msOf is a time column as Unix milliseconds, on either kind of server.
func (s Schema) msOf(col string) string {
	if s.F.DateTime64 {
		return fmt.Sprintf("toUnixTimestamp64Milli(%s)", col)
	}
	return fmt.Sprintf("toUInt64(toUnixTimestamp(%s)) * 1000 + %s_ms", col, col)
}

// districtDaily is the view of events by district and day; more adds
// columns (each migration's version of the view is kept as it was).
func (s Schema) districtDaily(more string) string {
	return fmt.Sprintf(`CREATE VIEW IF NOT EXISTS %s.district_daily AS
SELECT toDate(at) AS day, district,
  countIf(type = 'breach_started') AS breaches,
  sumIf(duration_s, type = 'breach_ended') AS seconds_outside,
  countIf(type = 'signal_lost') AS signal_losses,
  countIf(type = 'implausible_location') AS implausible%s
FROM %s.events FINAL
GROUP BY day, district`, s.DB, more, s.DB)
}

// addColumn is an idempotent ALTER … ADD COLUMN (see Features).
func (s Schema) addColumn(table, column string) string {
	ifNot := ""
	if s.F.AddColumnIfNotExists {
		ifNot = "IF NOT EXISTS "
	}
	return fmt.Sprintf("ALTER TABLE %s.%s ADD COLUMN %s%s", s.DB, table, ifNot, column)
}

func (s Schema) msKey(col string) string {
	if s.F.DateTime64 {
		return ""
	}
	return ", " + col + "_ms"
}

// Columns lists the insert columns of a table, in the order the sink
// appends them. ClickHouse 18.16 needs the explicit list: an INSERT without
// one gives a batch that silently inserts nothing.
func (s Schema) Columns(table string) []string {
	t := func(name string) []string {
		if s.F.DateTime64 {
			return []string{name}
		}
		return []string{name, name + "_ms"}
	}
	switch table {
	case "pings":
		return concat([]string{"patient_id"}, t("ts"), []string{"lat", "lon", "accuracy_m", "state", "distance_m", "district", "zone",
			"in_breach", "flag", "mock", "device_id", "source", "inserted_at", "pass_id",
			"checkin_request_id", "checkin_verified", "checkin_method", "source_class", "flags", "checkin_counted"})
	case "events":
		return concat([]string{"event_id", "type", "patient_id"}, t("at"), t("started_at"), []string{"ended_at", "duration_s", "reason",
			"location_lat", "location_lon", "location_accuracy_m", "distance_m", "max_distance_m", "home_lat", "home_lon", "home_radius_m",
			"district", "zone", "evidence", "inserted_at", "pass_id", "rule_margin_m", "rule_breach_after_s", "rule_breach_min_pings",
			"confidence_outside_pings", "confidence_min_margin_m", "confidence_dwell_s", "request_id", "expires_at", "mislocation_radius_m",
			"confidence_network_pings"})
	case "notifications":
		return concat([]string{"notification_id", "patient_id", "kind"}, t("at"), []string{"event_id", "expires_at", "text", "inserted_at"})
	case "orders":
		return []string{"patient_id", "version", "revoked", "home_lat", "home_lon", "radius_m", "starts_at", "ends_at", "district", "received_at"}
	case "passes":
		return []string{"pass_id", "version", "deleted", "patient_id", "purpose", "valid_from", "valid_to", "max_distance_m", "revoked_at", "issued_at", "received_at"}
	case "api_audit":
		return []string{"at", "role", "token_name", "method", "path", "status", "remote"}
	case "dispositions":
		return concat([]string{"disposition_id", "event_id", "decision", "reason", "comment", "decided_by"}, t("decided_at"),
			[]string{"channel", "inserted_at"})
	}
	panic("BUG: unknown table " + table)
}

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Insert is the INSERT statement of a table with its explicit column list.
func (s Schema) Insert(table string) string {
	return fmt.Sprintf("INSERT INTO %s.%s (%s)", s.DB, table, strings.Join(s.Columns(table), ", "))
}
