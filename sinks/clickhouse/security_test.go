package clickhouse_test

import (
	"context"
	"strings"
	"testing"
	"time"

	qch "github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/local"

	"github.com/qfence/qfence/config"
)

// TestClickHouseOverTLSWithPassword: against a private clickhouse-server
// with a TLS native port and a password-protected user, migrations and the
// sink work through clickhouse.tls, clickhouse.username and
// clickhouse.password; a wrong password and an unknown certificate
// authority are refused with errors that say what to check.
func TestClickHouseOverTLSWithPassword(t *testing.T) {
	ca := local.NewTestCA(t.TempDir())
	if ca.Err != nil {
		t.Fatal(ca.Err)
	}
	caFile := ca.CAFile
	ctx := context.Background()
	srv, err := local.StartClickHouseServerWith(ctx, local.TestLog(), local.ClickHouseOptions{CertFile: ca.CertFile, KeyFile: ca.KeyFile, User: "qfence", Password: "s3cret-pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	cfg := config.Default().ClickHouse
	cfg.Addr, cfg.Database, cfg.Username, cfg.Password = srv.SecureAddr, "tls_test", "qfence", "s3cret-pw"
	cfg.TLS = config.TLS{Enabled: true, CAFile: caFile}
	cfg.FlushInterval, cfg.Timeout = 200*time.Millisecond, 10*time.Second
	_, tracks, events := tracksFor(5, 1000, 20_000)
	chtest.Write(t, chtest.OpenSink(t, cfg, ""), tracks, events)
	plain := chtest.Conn(t, srv.Addr) // the default user on the plain port sees what came over TLS
	if n := chtest.Count(t, plain, "SELECT count() FROM tls_test.pings"); n != uint64(len(tracks)) {
		t.Fatalf("%d ping rows over TLS, want %d", n, len(tracks))
	}

	wrong := cfg
	wrong.Password = "not-the-password"
	if err := qch.Migrate(ctx, wrong, local.TestLog()); err == nil || !strings.Contains(err.Error(), "clickhouse.password") {
		t.Fatalf("a wrong password: %v, want a refusal that names clickhouse.password", err)
	}
	untrusted := cfg
	untrusted.TLS.CAFile = "" // the system roots do not know the test CA
	if err := qch.Migrate(ctx, untrusted, local.TestLog()); err == nil || !strings.Contains(err.Error(), "clickhouse.tls") {
		t.Fatalf("an unknown certificate authority: %v, want a refusal that names clickhouse.tls", err)
	}
}
