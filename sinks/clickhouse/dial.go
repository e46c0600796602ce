package clickhouse

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/sinks/edge"
)

// Connect connects as qfence does (address, credentials, TLS,
// compression, timeouts), for the tools that query what qfence stored.
func Connect(ctx context.Context, cfg config.ClickHouse) (driver.Conn, error) {
	conn, _, err := dialClickHouse(ctx, cfg, &conns{}, distributedSync(cfg))
	return conn, err
}

// distributedSync makes an insert into a Distributed table return only
// once every shard has its rows: an acknowledged batch is durable, as on
// one server (without it the server queues them and acknowledges at once).
func distributedSync(cfg config.ClickHouse) clickhouse.Settings {
	if cfg.Cluster == "" {
		return nil
	}
	return clickhouse.Settings{"insert_distributed_sync": 1}
}

// chDialTimeout bounds a connection and its handshake.
const chDialTimeout = 5 * time.Second

// dialClickHouse connects through dials, which can close every connection
// it made.
func dialClickHouse(ctx context.Context, cfg config.ClickHouse, dials *conns, settings clickhouse.Settings) (driver.Conn, Version, error) {
	tlsCfg, err := edge.TLSConfig(cfg.TLS)
	if err != nil {
		return nil, Version{}, fmt.Errorf("clickhouse.tls: %w", err)
	}
	dials.tls = tlsCfg
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{cfg.Addr}, DialContext: dials.dial,
		Auth:        clickhouse.Auth{Username: cfg.Username, Password: string(cfg.Password)},
		Compression: &clickhouse.Compression{Method: Compression(cfg)},
		DialTimeout: chDialTimeout, ReadTimeout: cfg.Timeout, MaxOpenConns: 4,
		Settings: settings,
	})
	if err != nil {
		return nil, Version{}, fmt.Errorf("clickhouse %s: %w", cfg.Addr, err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		conn.Close()
		var ex *clickhouse.Exception
		if errors.As(err, &ex) { // the server answered and said no
			return nil, Version{}, fmt.Errorf("clickhouse %s refused the connection (check clickhouse.username and clickhouse.password): %w", cfg.Addr, err)
		}
		return nil, Version{}, fmt.Errorf("clickhouse %s does not answer (is it running? check clickhouse.addr and clickhouse.tls): %w", cfg.Addr, err)
	}
	sv, err := conn.ServerVersion()
	if err != nil {
		conn.Close()
		return nil, Version{}, fmt.Errorf("clickhouse server version: %w", err)
	}
	return conn, Version{int(sv.Version.Major), int(sv.Version.Minor)}, nil
}

// conns dials ClickHouse (over TLS when configured) and can close every
// connection it made at once. clickhouse-go's handshake waits for the
// server up to the dial timeout whatever the context says, so with the
// server hung a last flush would hold SIGTERM past shutdown_timeout by that
// much; closing the connections ends the wait.
type conns struct {
	tls  *tls.Config
	mu   sync.Mutex
	open map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	set *conns
}

func (d *conns) dial(ctx context.Context, addr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: chDialTimeout}
	var c net.Conn
	var err error
	if d.tls != nil {
		c, err = (&tls.Dialer{NetDialer: nd, Config: d.tls}).DialContext(ctx, "tcp", addr)
	} else {
		c, err = nd.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	t := &trackedConn{Conn: c, set: d}
	d.mu.Lock()
	if d.open == nil {
		d.open = make(map[*trackedConn]struct{})
	}
	d.open[t] = struct{}{}
	d.mu.Unlock()
	return t, nil
}

func (t *trackedConn) Close() error {
	t.set.mu.Lock()
	delete(t.set.open, t)
	t.set.mu.Unlock()
	return t.Conn.Close()
}

// closeAll closes every open connection: what waits on one fails at once.
func (d *conns) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for t := range d.open {
		_ = t.Conn.Close()
	}
}

// Compression is clickhouse.compression's method. auto follows
// clickhouse-client since ClickHouse 21.4: no compression to a loopback
// address, where it only costs CPU on both ends (LZ4 was 8 % of qfence's
// CPU in the drain benchmark, and the server's to undo), LZ4 elsewhere.
func Compression(cfg config.ClickHouse) clickhouse.CompressionMethod {
	switch cfg.Compression {
	case "none":
		return clickhouse.CompressionNone
	case "zstd":
		return clickhouse.CompressionZSTD
	case "auto":
		host, _, _ := net.SplitHostPort(cfg.Addr)
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return clickhouse.CompressionNone
		}
	}
	return clickhouse.CompressionLZ4
}
