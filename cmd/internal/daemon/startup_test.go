package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/sinks/local"
)

// With ClickHouse down at start, qfence answers at once: /healthz 200 (a
// liveness probe must not restart-loop it), /readyz 503 saying why, a pass
// check 503 (not "unknown": the passes are not loaded), and the API still
// refuses a request without a token. It stops at once when told.
func TestProbesAndTheAPIAnswerWhileClickHouseIsDown(t *testing.T) {
	ports, err := local.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])) }
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("police:officer-7:police-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Kafka.Brokers = addr(2) // nothing listens: Kafka is not reached before ClickHouse
	cfg.ClickHouse.Addr = addr(2)
	cfg.Metrics.Listen, cfg.API.Listen, cfg.API.TokensFile = addr(0), addr(1), tokens
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, &cfg, local.TestLog(), nil) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("qfence did not stop within 10 s of its context ending")
		}
	}()
	answer := func(url, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Timeout: time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := answer("http://"+addr(0)+"/healthz", "")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/healthz did not answer within 10 s with ClickHouse down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := answer("http://"+addr(0)+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "ClickHouse") {
		t.Errorf("/readyz: %d %q, want 503 saying ClickHouse is not there", code, body)
	}
	if code, body := answer("http://"+addr(1)+"/v1/passes/PX-1", "police-token-0123456789"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("a pass check: %d %q, want 503 while starting", code, body)
	}
	if code, _ := answer("http://"+addr(1)+"/v1/passes/PX-1", ""); code != http.StatusUnauthorized {
		t.Errorf("a pass check without a token: %d, want 401", code)
	}
}
