package geo_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/geo/synth"
)

// Compare runs with: go test -run '^$' -bench . -count 6 ./geo/ | tee new.txt; benchstat old.txt new.txt

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{100, 5000, 50000} {
		b.Run(fmt.Sprintf("zones=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			zones := geo.NewZones(synth.Zones(r, synth.Moscow, 100, n-100))
			pts := make([]orb.Point, 4096)
			for i := range pts {
				pts[i] = synth.Point(r, synth.Moscow)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				zones.Lookup(pts[i&4095])
				i++
			}
		})
	}
}

func BenchmarkDistance(b *testing.B) {
	a, c := orb.Point{37.6184, 55.7512}, orb.Point{37.6290, 55.7601}
	b.ReportAllocs()
	for b.Loop() {
		geo.Distance(a, c)
	}
}
