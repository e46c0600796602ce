package processor_test

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/qfence/qfence/processor"
)

// checkExact fails when the fast path takes raw and disagrees with
// strconv.ParseFloat by a single bit.
func checkExact(t *testing.T, raw string) {
	t.Helper()
	got, ok := processor.ExactDecimal([]byte(raw))
	if !ok {
		return
	}
	want, err := strconv.ParseFloat(raw, 64)
	if err != nil {
		t.Fatalf("%q: fast path took a number strconv refuses: %v", raw, err)
	}
	if math.Float64bits(got) != math.Float64bits(want) {
		t.Fatalf("%q: fast path %v (%#x), strconv %v (%#x)", raw, got, math.Float64bits(got), want, math.Float64bits(want))
	}
}

func TestExactDecimalMatchesStrconv(t *testing.T) {
	for _, raw := range []string{"0", "-0", "0.0", "55.7558", "-37.6173", "12.5", "999999999999999", "0.000000000000000000001",
		"1.000000000000001", "123456789.123456", "-179.99999999", "90", "4.9e-324", "1e22", "7.0"} {
		checkExact(t, raw)
	}
	r := rand.New(rand.NewPCG(1, 2))
	taken := 0
	for range 200_000 {
		v := (r.Float64()*2 - 1) * math.Pow(10, float64(r.IntN(8)))
		raw := strconv.FormatFloat(v, 'f', r.IntN(17), 64)
		checkExact(t, raw)
		if _, ok := processor.ExactDecimal([]byte(raw)); ok {
			taken++
		}
	}
	if taken < 100_000 {
		t.Fatalf("the fast path took only %d of 200000 coordinates-like numbers", taken)
	}
}

func FuzzExactDecimal(f *testing.F) {
	for _, s := range []string{"55.7558", "-0.5", "123", "1.0000000000000002"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		checkExact(t, raw)
	})
}
