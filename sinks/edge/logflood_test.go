package edge

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A flood of one warning logs its first, then one line with the count when
// the interval has passed; another reason, or info lines, pass as they
// are; a handler made WithAttrs shares the count.
func TestAFloodOfWarningsIsOneLineAndACount(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 4, 2, 10, 0, 0, 0, time.UTC)
	log := slog.New(Quiet(slog.NewTextHandler(&out, nil), 10*time.Second, func() time.Time { return now }))
	for i := range 102 {
		log.Warn("pass rejected", "partition", i%4, "offset", i, "reason", "bad_signature")
	}
	log.With("component", "x").Warn("pass rejected", "reason", "bad_signature")
	log.Warn("pass rejected", "reason", "stale")
	log.Info("passes loaded", "passes", 3)
	log.Info("passes loaded", "passes", 3)
	now = now.Add(11 * time.Second)
	log.Info("qfence running")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	got := strings.Join(lines, "\n")
	if len(lines) != 6 || strings.Count(got, "reason=bad_signature") != 2 || !strings.Contains(got, "and 102 more like it in the last 10s") ||
		!strings.Contains(got, "reason=stale") || strings.Count(got, "passes loaded") != 2 {
		t.Errorf("%d lines:\n%s", len(lines), got)
	}
}
