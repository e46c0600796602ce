package pipeline

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that nothing the loop's tests run leaves a goroutine.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
