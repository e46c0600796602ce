package clickhouse

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// dropExpired is retention for servers without TTL: it drops every day
// partition older than clickhouse.retention_days, on every shard of a
// cluster.
func (c *Sink) dropExpired(ctx context.Context) {
	if c.cfg.Cluster == "" {
		c.dropExpiredOn(ctx, c.conn)
		return
	}
	addrs, err := Servers(ctx, c.cfg)
	if err != nil {
		c.log.Warn("retention: list the cluster's servers failed", "err", err)
		return
	}
	for _, a := range addrs {
		one := c.cfg
		one.Addr = a
		conn, _, err := dialClickHouse(ctx, one, &conns{}, distributedSync(one))
		if err != nil {
			c.log.Warn("retention: connect to a shard failed", "addr", a, "err", err)
			continue
		}
		c.dropExpiredOn(ctx, conn)
		conn.Close()
	}
}

func (c *Sink) dropExpiredOn(ctx context.Context, conn driver.Conn) {
	cutoff := time.Now().UTC().AddDate(0, 0, -c.cfg.RetentionDays).Format("20060102")
	for _, t := range Tables {
		local := c.schema.Local(t.Name)
		rows, err := conn.Query(ctx, fmt.Sprintf(
			"SELECT DISTINCT partition FROM system.parts WHERE database = '%s' AND table = '%s' AND active AND partition < '%s'",
			c.cfg.Database, local, cutoff))
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
			if err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION %s", c.cfg.Database, local, p)); err != nil {
				c.log.Warn("retention: drop partition failed", "table", t.Name, "partition", p, "err", err)
				continue
			}
			c.log.Info("retention: partition dropped", "table", t.Name, "partition", p, "retention_days", c.cfg.RetentionDays)
		}
	}
}

// DropExpired runs retention now (for tests and operators).
func (c *Sink) DropExpired(ctx context.Context) { c.dropExpired(ctx) }
