package main

import (
	"os"
	"testing"

	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/local/nettest"
)

// TestMain starts the ClickHouse server the end-to-end tests share, and
// checks that the daemon, the demo and replay leave no goroutine behind:
// every one they start has an owner that waits for it.
func TestMain(m *testing.M) {
	code := chtest.Main(m, nettest.Leaks...)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
