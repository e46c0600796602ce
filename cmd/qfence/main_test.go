package main

import (
	"os"
	"testing"

	"github.com/qfence/qfence/sinks/clickhouse/chtest"
)

// TestMain starts the ClickHouse server the end-to-end tests share, and
// checks that the daemon, the demo and replay leave no goroutine behind:
// every one they start has an owner that waits for it.
func TestMain(m *testing.M) {
	code := chtest.Main(m)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
