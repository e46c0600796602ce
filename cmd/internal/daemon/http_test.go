package daemon

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/sinks/edge"
	"github.com/qfence/qfence/sinks/local"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T, cfg config.Metrics) string {
	t.Helper()
	ports, err := local.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	srv, served, err := serveHTTP(cfg, prometheus.NewRegistry(), func(context.Context) string { return "" }, local.TestLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	return cfg.Listen
}

func get(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// closedWithin reports whether the server closes conn within d.
func closedWithin(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

// pprof is off by default; on, a profile longer than 30 s is refused.
func TestPprofIsOffByDefaultAndBounded(t *testing.T) {
	off := serve(t, config.Metrics{})
	if code := get(t, "http://"+off+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof off: /debug/pprof/ answered %d, want 404", code)
	}
	if code := get(t, "http://"+off+"/metrics"); code != http.StatusOK {
		t.Errorf("/metrics answered %d", code)
	}
	on := serve(t, config.Metrics{Pprof: true})
	if code := get(t, "http://"+on+"/debug/pprof/"); code != http.StatusOK {
		t.Errorf("pprof on: /debug/pprof/ answered %d, want 200", code)
	}
	if code := get(t, "http://"+on+"/debug/pprof/profile?seconds=86400"); code != http.StatusBadRequest {
		t.Errorf("a day-long profile answered %d, want 400", code)
	}
}

// A client that never finishes its headers, and one that keeps a connection
// silent after a request, are both cut off.
func TestSlowAndIdleConnectionsAreCutOff(t *testing.T) {
	addr := serve(t, config.Metrics{})
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("first request on the kept-alive connection: %v", err)
	}
	resp.Body.Close()
	if !closedWithin(slow, 10*time.Second) {
		t.Error("a client that never finished its headers was kept for 10 s")
	}
	if !closedWithin(idle, edge.IdleTimeout+5*time.Second) {
		t.Errorf("an idle kept-alive connection was kept past %s", edge.IdleTimeout+5*time.Second)
	}
}

// One client holding connections cannot starve the probes: past
// MaxConnsPerAddr connections from one address, the next is closed at once,
// while a client from another address (another loopback address here) is
// served; once the hog's connections go, it is served again.
func TestOneClientCannotStarveTheProbes(t *testing.T) {
	addr := serve(t, config.Metrics{})
	var conns []net.Conn
	for range edge.MaxConnsPerAddr {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// The next connection from the same address is accepted and closed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		extra, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		closed := closedWithin(extra, 500*time.Millisecond)
		extra.Close()
		if closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a connection past the per-address cap was kept open")
		}
	}
	other := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	resp, err := other.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("a probe from another address was starved: %v", err)
	}
	resp.Body.Close()
	for _, c := range conns {
		c.Close()
	}
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline = time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served after the connections closed: %v", err)
		}
	}
}

// A web config file that does not parse is refused with its key; a valid
// one with basic auth keeps /metrics from anonymous callers.
func TestWebConfigFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte("tls_server_config: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := serveHTTP(config.Metrics{Listen: "127.0.0.1:0", WebConfigFile: bad}, prometheus.NewRegistry(), nil, local.TestLog()); err == nil ||
		!strings.Contains(err.Error(), "metrics.web_config_file") {
		t.Fatalf("a broken web config: %v, want a refusal naming metrics.web_config_file", err)
	}
	good := filepath.Join(dir, "web.yml")
	// A user with a bcrypt-hashed password, as the exporter-toolkit wants.
	if err := os.WriteFile(good, []byte("basic_auth_users:\n  prom: $2y$10$X0ZLmBSO.U7PSyVX/qDFDe3TJ.WTm7.Yx8gD7RKKHx9jUeGwk7Kwq\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, config.Metrics{WebConfigFile: good})
	if code := get(t, "http://"+addr+"/metrics"); code != http.StatusUnauthorized {
		t.Errorf("/metrics without credentials answered %d, want 401", code)
	}
}

// metrics.listen on an address that is not loopback, with no web config,
// is served but warned about.
func TestANonLoopbackListenerIsWarnedAbout(t *testing.T) {
	ports, err := local.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	srv, served, err := serveHTTP(config.Metrics{Listen: net.JoinHostPort("0.0.0.0", strconv.Itoa(ports[0]))}, prometheus.NewRegistry(),
		func(context.Context) string { return "" }, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	<-served
	if !strings.Contains(logs.String(), "not a loopback address") {
		t.Errorf("no warning: %s", logs.String())
	}
}

// A configuration that leaves check-ins forgeable or the random schedule
// predictable is warned about; one that closes both is not.
func TestStartUpWarnings(t *testing.T) {
	cfg := config.Default()
	cfg.Checkins.RandomPerDay = 2
	if w := Warnings(&cfg); len(w) != 2 || !strings.Contains(w[0], "checkins.schedule_key is not set") || !strings.Contains(w[1], "phone's word") {
		t.Errorf("warnings %q", w)
	}
	cfg.Checkins.ScheduleKey = "k3y-of-32-bytes-or-more-0123456789abcdef"
	keys := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(keys, []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cfg.UseCheckinKeys(keys); err != nil {
		t.Fatal(err)
	}
	if w := Warnings(&cfg); len(w) != 0 {
		t.Errorf("warnings %q with both set", w)
	}
}
