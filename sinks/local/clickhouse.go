package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/qfence/qfence/sinks/edge"
)

// ClickHouseServer is a private clickhouse-server for the tests and the
// demo: its own temporary data directory and free ports, stopped (and its
// directory removed) by Stop. With QFENCE_CLICKHOUSE_ADDR set, it is that
// server instead, and Stop leaves it alone.
type ClickHouseServer struct {
	Addr string
	// SecureAddr is the TLS native port, when the server was started with
	// a certificate.
	SecureAddr string
	dir        string
	cfg        string
	cmd        *exec.Cmd
	log        *slog.Logger
}

// StartClickHouseServer starts a private server from Debian's
// clickhouse-server package (make clickhouse installs it), or uses the
// one QFENCE_CLICKHOUSE_ADDR names.
func StartClickHouseServer(ctx context.Context, log *slog.Logger) (*ClickHouseServer, error) {
	if addr := os.Getenv("QFENCE_CLICKHOUSE_ADDR"); addr != "" {
		return &ClickHouseServer{Addr: addr, log: log}, nil
	}
	return StartClickHouseServerWith(ctx, log, ClickHouseOptions{})
}

// ClickHouseOptions add to a private server what the security tests need.
type ClickHouseOptions struct {
	CertFile, KeyFile string // PEM files: a TLS native port (SecureAddr)
	User, Password    string // a user with a password, besides default
	// Ports are the native, HTTP and TLS ports to use (nil: free ones).
	Ports []int
	// Config is more server configuration, inside <yandex>.
	Config string
}

// StartClickHouseServerWith starts a private server with opts, whatever
// QFENCE_CLICKHOUSE_ADDR says.
func StartClickHouseServerWith(ctx context.Context, log *slog.Logger, opts ClickHouseOptions) (*ClickHouseServer, error) {
	bin, err := clickHouseBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "qfence-clickhouse-")
	if err != nil {
		return nil, fmt.Errorf("clickhouse data dir: %w", err)
	}
	ports := opts.Ports
	if len(ports) < 3 {
		if ports, err = FreePorts(3); err != nil {
			return nil, err
		}
	}
	s := &ClickHouseServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), dir: dir, log: log,
		cfg: filepath.Join(dir, "config.xml")}
	users := filepath.Join(dir, "users.xml")
	secure, extraUser := "", ""
	if opts.CertFile != "" {
		s.SecureAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
		secure = fmt.Sprintf(`  <tcp_port_secure>%d</tcp_port_secure>
  <openSSL><server><certificateFile>%s</certificateFile><privateKeyFile>%s</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
    <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols></server></openSSL>
`, ports[2], opts.CertFile, opts.KeyFile)
	}
	if opts.User != "" {
		extraUser = fmt.Sprintf(`<%[1]s><password>%[2]s</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></%[1]s>`,
			opts.User, opts.Password)
	}
	config := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>%[1]s/server.log</log><errorlog>%[1]s/error.log</errorlog><console>0</console></logger>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>%[4]s</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
%[5]s%[6]s</yandex>
`, dir, ports[0], ports[1], users, secure, opts.Config)
	usersXML := `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>` + extraUser + `</users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`
	if err := os.WriteFile(s.cfg, []byte(config), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(users, []byte(usersXML), 0o644); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "--config-file="+s.cfg)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test or the demo
	if err := s.start(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// ClusterName is the cluster StartClickHouseCluster defines.
const ClusterName = "qfence_local"

// StartClickHouseCluster starts n private servers that form one cluster of
// n shards (one replica each, no ZooKeeper): each server's
// remote_servers names them all, as ClusterName.
func StartClickHouseCluster(ctx context.Context, log *slog.Logger, n int) ([]*ClickHouseServer, error) {
	ports, err := FreePorts(3 * n)
	if err != nil {
		return nil, err
	}
	remote := "  <remote_servers><" + ClusterName + ">\n"
	for i := range n {
		remote += fmt.Sprintf("    <shard><replica><host>127.0.0.1</host><port>%d</port></replica></shard>\n", ports[3*i])
	}
	remote += "  </" + ClusterName + "></remote_servers>\n"
	var out []*ClickHouseServer
	for i := range n {
		s, err := StartClickHouseServerWith(ctx, log, ClickHouseOptions{Ports: ports[3*i : 3*i+3], Config: remote})
		if err != nil {
			for _, o := range out {
				o.Stop()
			}
			return nil, fmt.Errorf("shard %d of %d: %w", i+1, n, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func (s *ClickHouseServer) start(ctx context.Context) error {
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start clickhouse-server: %w", err)
	}
	if err := WaitClickHouse(ctx, s.Addr, time.Minute); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "error.log"))
		return fmt.Errorf("clickhouse-server did not answer on %s: %w\n%s", s.Addr, err, tail(log, 2000))
	}
	s.log.Info("clickhouse-server started", "addr", s.Addr, "dir", s.dir)
	return nil
}

// Signal sends sig to a private server (SIGSTOP and SIGCONT make an outage).
func (s *ClickHouseServer) Signal(sig syscall.Signal) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("not a private server")
	}
	return s.cmd.Process.Signal(sig)
}

// Stop stops a private server and removes its data.
func (s *ClickHouseServer) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// WaitClickHouse waits until a server answers a query at addr.
func WaitClickHouse(ctx context.Context, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: time.Second})
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = conn.Ping(pctx)
			cancel()
			conn.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		if err := edge.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return last
}

// clickHouseBinary finds clickhouse-server (ErrNoClickHouse when it is
// missing).
func clickHouseBinary() (string, error) {
	find := func() string {
		for _, p := range []string{"clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
			if path, err := exec.LookPath(p); err == nil {
				return path
			}
		}
		return ""
	}
	if bin := find(); bin != "" {
		return bin, nil
	}
	return "", ErrNoClickHouse
}

// ErrNoClickHouse says that no clickhouse-server binary is here. Installing
// packages is the Makefile's job, not a test binary's.
var ErrNoClickHouse = errors.New("clickhouse-server is not installed: run make clickhouse (Debian's package), or set QFENCE_CLICKHOUSE_ADDR to a running server")

// FreePorts asks the kernel for n free loopback ports.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
