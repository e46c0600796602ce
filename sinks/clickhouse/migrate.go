package clickhouse

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/qfence/qfence/config"
)

// Migrate creates or upgrades the schema; running it again changes
// nothing. On a cluster (clickhouse.cluster) it migrates every server of
// it in turn: without a coordinator (ZooKeeper) there is no ON CLUSTER, so
// it connects to each as system.clusters lists them.
func Migrate(ctx context.Context, cfg config.ClickHouse, log *slog.Logger) error {
	addrs := []string{cfg.Addr}
	if cfg.Cluster != "" {
		var err error
		if addrs, err = Servers(ctx, cfg); err != nil {
			return err
		}
	}
	for _, a := range addrs {
		one := cfg
		one.Addr = a
		if err := migrateServer(ctx, one, log); err != nil {
			if cfg.Cluster != "" {
				return fmt.Errorf("server %s of cluster %s: %w", a, cfg.Cluster, err)
			}
			return err
		}
	}
	return nil
}

// Servers lists every server of clickhouse.cluster (each replica of each
// shard) as host:port of its native protocol, as the server at
// clickhouse.addr knows them.
func Servers(ctx context.Context, cfg config.ClickHouse) ([]string, error) {
	conn, _, err := dialClickHouse(ctx, cfg, &conns{}, distributedSync(cfg))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, "SELECT host_address, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", cfg.Cluster)
	if err != nil {
		return nil, fmt.Errorf("read system.clusters: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var host string
		var port uint16
		if err := rows.Scan(&host, &port); err != nil {
			return nil, fmt.Errorf("read system.clusters: %w", err)
		}
		out = append(out, net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("clickhouse.cluster %q is not among the remote_servers of the server at %s (see SELECT cluster FROM system.clusters)", cfg.Cluster, cfg.Addr)
	}
	return out, rows.Err()
}

func migrateServer(ctx context.Context, cfg config.ClickHouse, log *slog.Logger) error {
	conn, v, err := dialClickHouse(ctx, cfg, &conns{}, distributedSync(cfg))
	if err != nil {
		return err
	}
	defer conn.Close()
	s := Schema{DB: cfg.Database, F: FeaturesOf(v), RetentionDays: cfg.RetentionDays, Cluster: cfg.Cluster}
	applied := map[uint32]bool{}
	if rows, err := conn.Query(ctx, fmt.Sprintf("SELECT version FROM %s.schema_migrations", cfg.Database)); err == nil {
		for rows.Next() {
			var ver uint32
			if err := rows.Scan(&ver); err != nil {
				rows.Close()
				return fmt.Errorf("read schema_migrations: %w", err)
			}
			applied[ver] = true
		}
		rows.Close()
	}
	for i, stmts := range s.Migrations() {
		ver := uint32(i + 1)
		if applied[ver] {
			continue
		}
		for _, stmt := range stmts {
			if err := conn.Exec(ctx, stmt); err != nil && !alreadyAdded(stmt, err) {
				return fmt.Errorf("migration %d: %w\n%s", ver, err, stmt)
			}
		}
		// A batch, not INSERT … VALUES through Exec: the latter hangs on 18.16.
		b, err := conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.schema_migrations (version, applied_at)", cfg.Database))
		if err == nil {
			if err = b.Append(ver, time.Now().UTC()); err == nil {
				if err = flushBlock(b, 1, "schema_migrations"); err == nil {
					err = b.Send()
				}
			}
		}
		if err != nil {
			return fmt.Errorf("record migration %d: %w", ver, err)
		}
		log.Info("schema migrated", "database", cfg.Database, "version", ver, "server", fmt.Sprintf("%d.%d", v.Major, v.Minor), "addr", cfg.Addr)
	}
	return nil
}

// alreadyAdded reports an ADD COLUMN that failed because the column is
// there: a migration interrupted after it, run again on a server without
// ADD COLUMN IF NOT EXISTS.
func alreadyAdded(stmt string, err error) bool {
	return strings.Contains(stmt, " ADD COLUMN ") && strings.Contains(err.Error(), "already exists")
}
