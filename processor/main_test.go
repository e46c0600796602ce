package processor_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that nothing the engine's tests run leaves a goroutine.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
