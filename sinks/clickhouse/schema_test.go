package clickhouse_test

import (
	"strings"
	"testing"

	qch "github.com/qfence/qfence/sinks/clickhouse"
)

// TestSchemaIsGatedByServerVersion pins the DDL for the oldest server qfence
// supports (18.16, Debian's package) and for a current release.
func TestSchemaIsGatedByServerVersion(t *testing.T) {
	tests := []struct {
		name       string
		v          qch.Version
		want, deny []string
	}{
		{"ClickHouse 18.16 gets plain DateTime with a millisecond column, no TTL, no codecs, no LowCardinality",
			qch.Version{18, 16},
			[]string{"ts DateTime('UTC'),\n  ts_ms UInt16", "ORDER BY (patient_id, ts, ts_ms)", "district String", "ENGINE = ReplacingMergeTree(inserted_at)", "PARTITION BY toYYYYMMDD(ts)"},
			[]string{"DateTime64", "TTL", "CODEC", "LowCardinality"}},
		{"ClickHouse 24.8 gets DateTime64, TTL, codecs and LowCardinality",
			qch.Version{24, 8},
			[]string{"ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD)", "ORDER BY (patient_id, ts)\nTTL toDateTime(ts) + INTERVAL 28 DAY", "district LowCardinality(String)"},
			[]string{"ts_ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := qch.Schema{DB: "qfence", F: qch.FeaturesOf(tt.v), RetentionDays: 28}
			var ddl strings.Builder
			for _, m := range s.Migrations() {
				for _, stmt := range m {
					ddl.WriteString(stmt + "\n")
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(ddl.String(), w) {
					t.Errorf("DDL lacks %q", w)
				}
			}
			for _, d := range tt.deny {
				if strings.Contains(ddl.String(), d) {
					t.Errorf("DDL has %q, which this server does not support", d)
				}
			}
			for _, table := range []string{"pings", "events", "orders", "passes", "api_audit"} {
				for _, col := range s.Columns(table) {
					d := ddl.String()
					if !strings.Contains(d, "  "+col+" ") && !strings.Contains(d, "ADD COLUMN "+col+" ") && !strings.Contains(d, "IF NOT EXISTS "+col+" ") {
						t.Errorf("insert column %s.%s is not in the DDL", table, col)
					}
				}
			}
		})
	}
}
