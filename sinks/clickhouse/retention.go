package clickhouse

import (
	"context"
	"fmt"
	"time"
)

// dropExpired is retention for servers without TTL: it drops every day
// partition older than clickhouse.retention_days.
func (c *Sink) dropExpired(ctx context.Context) {
	cutoff := time.Now().UTC().AddDate(0, 0, -c.cfg.RetentionDays).Format("20060102")
	for _, t := range Tables {
		rows, err := c.conn.Query(ctx, fmt.Sprintf(
			"SELECT DISTINCT partition FROM system.parts WHERE database = '%s' AND table = '%s' AND active AND partition < '%s'",
			c.cfg.Database, t.Name, cutoff))
		if err != nil {
			c.log.Warn("retention: list partitions failed", "table", t.Name, "err", err)
			continue
		}
		var parts []string
		for rows.Next() {
			var p string
			if rows.Scan(&p) == nil {
				parts = append(parts, p)
			}
		}
		rows.Close()
		for _, p := range parts {
			if err := c.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION %s", c.cfg.Database, t.Name, p)); err != nil {
				c.log.Warn("retention: drop partition failed", "table", t.Name, "partition", p, "err", err)
				continue
			}
			c.log.Info("retention: partition dropped", "table", t.Name, "partition", p, "retention_days", c.cfg.RetentionDays)
		}
	}
}

// DropExpired runs retention now (for tests and operators).
func (c *Sink) DropExpired(ctx context.Context) { c.dropExpired(ctx) }
