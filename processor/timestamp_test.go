package processor

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// checkTS holds the hand-written AppendTS to time's formatting.
func checkTS(t *testing.T, ms int64) {
	t.Helper()
	want := time.UnixMilli(ms).UTC().Format(tsLayout)
	if got := FormatTS(ms); got != want {
		t.Fatalf("FormatTS(%d) = %s, want %s", ms, got, want)
	}
}

func TestFormatTSIsTimeFormat(t *testing.T) {
	edges := []int64{0, -1, 1, 999, -999, -1000, 86_399_999, -86_400_000, -86_400_001,
		951_782_400_000,     // 2000-02-29
		4_107_542_400_000,   // 2100-03-01: not a leap year
		4_291_747_199_999,   // 2105-12-31T23:59:59.999, the last ts a ping may carry
		-62_167_219_200_000, // 0000-01-01
		-62_167_219_200_001, // the last millisecond of year -1: time's path
		253_402_300_799_999, // 9999-12-31T23:59:59.999
		253_402_300_800_000, // 10000-01-01: time's path
		math.MaxInt64, math.MinInt64,
	}
	for _, ms := range edges {
		checkTS(t, ms)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		checkTS(t, r.Int64N(2*253_402_300_800_000)-253_402_300_800_000)
	}
	// Every day boundary of four centuries around now, and its neighbours.
	for d := int64(-73_000); d < 73_000; d++ {
		checkTS(t, d*86_400_000)
		checkTS(t, d*86_400_000-1)
	}
}

func FuzzFormatTS(f *testing.F) {
	for _, ms := range []int64{0, -1, 1_780_000_000_123, 253_402_300_799_999} {
		f.Add(ms)
	}
	f.Fuzz(func(t *testing.T, ms int64) { checkTS(t, ms) })
}

func BenchmarkFormatTS(b *testing.B) {
	buf := make([]byte, 0, 32)
	ms := int64(1_780_000_000_123)
	b.Run("hand", func(b *testing.B) {
		for b.Loop() {
			buf = AppendTS(buf[:0], ms)
		}
	})
	b.Run("time", func(b *testing.B) {
		for b.Loop() {
			buf = time.UnixMilli(ms).UTC().AppendFormat(buf[:0], tsLayout)
		}
	})
}
