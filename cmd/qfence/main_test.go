package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that the daemon, the demo and replay leave no goroutine
// behind: every one they start has an owner that waits for it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
