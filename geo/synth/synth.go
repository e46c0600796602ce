// Package synth makes synthetic city geometry, reproducible from a seed: the
// districts and clinics that benchmarks, tests and qfence-sim need.
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
)

// Moscow is the default city: its bounding box, roughly inside the MKAD ring.
var Moscow = orb.Bound{Min: orb.Point{37.35, 55.57}, Max: orb.Point{37.85, 55.91}}

// Zones makes a grid of district polygons covering the box (about
// `districts` of them) and `allowed` clinic polygons of 16 vertices, 60 to
// 250 m across, with max_minutes of 60 or none. IDs are district-NNN and
// clinic-NNNN.
func Zones(r *rand.Rand, box orb.Bound, districts, allowed int) []*geo.Zone {
	side := max(1, int(math.Round(math.Sqrt(float64(districts)))))
	w, h := (box.Max[0]-box.Min[0])/float64(side), (box.Max[1]-box.Min[1])/float64(side)
	zs := make([]*geo.Zone, 0, side*side+allowed)
	for i := 0; i < side; i++ {
		for j := 0; j < side; j++ {
			x, y := box.Min[0]+float64(i)*w, box.Min[1]+float64(j)*h
			ring := orb.Ring{{x, y}, {x + w, y}, {x + w, y + h}, {x, y + h}, {x, y}}
			zs = append(zs, geo.NewPolygonZone(fmt.Sprintf("district-%03d", i*side+j), geo.District, orb.MultiPolygon{{ring}}, 0))
		}
	}
	for k := 0; k < allowed; k++ {
		c := Point(r, box)
		radius := 30 + r.Float64()*95
		maxMin := 0.0
		if k%2 == 0 {
			maxMin = 60
		}
		zs = append(zs, geo.NewPolygonZone(fmt.Sprintf("clinic-%04d", k), geo.Allowed, orb.MultiPolygon{{Circle(c, radius, 16)}}, maxMin))
	}
	return zs
}

// Point is a uniformly random point in the box.
func Point(r *rand.Rand, box orb.Bound) orb.Point {
	return orb.Point{box.Min[0] + r.Float64()*(box.Max[0]-box.Min[0]), box.Min[1] + r.Float64()*(box.Max[1]-box.Min[1])}
}

// Offset moves p by east and north metres (a local flat approximation).
func Offset(p orb.Point, east, north float64) orb.Point {
	dLat := north / geo.EarthRadius * 180 / math.Pi
	dLon := east / (geo.EarthRadius * math.Cos(p[1]*math.Pi/180)) * 180 / math.Pi
	return orb.Point{p[0] + dLon, p[1] + dLat}
}

// Circle is a closed ring of n vertices approximating a circle of radius
// metres around c.
func Circle(c orb.Point, radius float64, n int) orb.Ring {
	ring := make(orb.Ring, 0, n+1)
	for i := 0; i < n; i++ {
		a := 2 * math.Pi * float64(i) / float64(n)
		ring = append(ring, Offset(c, radius*math.Cos(a), radius*math.Sin(a)))
	}
	return append(ring, ring[0])
}
