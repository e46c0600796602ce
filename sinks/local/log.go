package local

import (
	"io"
	"log/slog"
	"os"
)

// TestLog is the logger of tests: silent, or everything on stderr when
// QFENCE_TEST_LOG is set (to see what a failing test's qfence said).
func TestLog() *slog.Logger {
	if os.Getenv("QFENCE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
