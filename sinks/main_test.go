package sinks

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// chAddr is the private ClickHouse server every test of this package uses
// (each test in its own database). make test never skips it: no server is
// a failure.
var (
	chAddr   string
	chServer *ClickHouseServer
)

func TestMain(m *testing.M) {
	srv, err := StartClickHouseServer(context.Background(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintf(os.Stderr, "the sinks tests need a ClickHouse server and none could be had: %v\n", err)
		os.Exit(1)
	}
	chAddr, chServer = srv.Addr, srv
	code := m.Run()
	srv.Stop()
	if code == 0 {
		// Every goroutine qfence starts has an owner that waits for it; what
		// may remain are the libraries' idle connection reapers.
		if err := goleak.Find(goleakIgnores...); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
			code = 1
		}
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var goleakIgnores = []goleak.Option{}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// qfenceBinary builds cmd/qfence once for the tests that run it as a child.
func qfenceBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "qfence-bin-")
		if binErr == nil {
			out, err := exec.Command("go", "build", "-o", binDir+"/qfence", "github.com/qfence/qfence/cmd/qfence").CombinedOutput()
			if err != nil {
				binErr = fmt.Errorf("go build: %v\n%s", err, out)
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir + "/qfence"
}
