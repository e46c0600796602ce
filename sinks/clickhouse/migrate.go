package clickhouse

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/qfence/qfence/config"
)

// Migrate creates or upgrades the schema; running it again changes nothing.
func Migrate(ctx context.Context, cfg config.ClickHouse, log *slog.Logger) error {
	conn, v, err := dialClickHouse(ctx, cfg, &conns{})
	if err != nil {
		return err
	}
	defer conn.Close()
	s := Schema{DB: cfg.Database, F: FeaturesOf(v), RetentionDays: cfg.RetentionDays}
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
				err = send(b, 1, "schema_migrations")
			}
		}
		if err != nil {
			return fmt.Errorf("record migration %d: %w", ver, err)
		}
		log.Info("schema migrated", "database", cfg.Database, "version", ver, "server", fmt.Sprintf("%d.%d", v.Major, v.Minor))
	}
	return nil
}

// alreadyAdded reports an ADD COLUMN that failed because the column is
// there: a migration interrupted after it, run again on a server without
// ADD COLUMN IF NOT EXISTS.
func alreadyAdded(stmt string, err error) bool {
	return strings.Contains(stmt, " ADD COLUMN ") && strings.Contains(err.Error(), "already exists")
}
