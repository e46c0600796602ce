package sinks

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
)

// chAddr is the private ClickHouse server every test of this package uses
// (each test in its own database). make test never skips it: no server is
// a failure.
var chAddr string

func TestMain(m *testing.M) {
	srv, err := StartClickHouseServer(context.Background(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintf(os.Stderr, "the sinks tests need a ClickHouse server and none could be had: %v\n", err)
		os.Exit(1)
	}
	chAddr = srv.Addr
	code := m.Run()
	srv.Stop()
	os.Exit(code)
}
