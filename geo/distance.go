package geo

import (
	"math"

	"github.com/paulmach/orb"
	orbgeo "github.com/paulmach/orb/geo"
)

// EarthRadius is the sphere radius, in metres, that every distance uses.
const EarthRadius = orb.EarthRadius

// Distance is the great-circle distance between a and b in metres.
func Distance(a, b orb.Point) float64 {
	return orbgeo.DistanceHaversine(a, b)
}

// DistanceBound is never less than Distance(a, b) and costs no
// trigonometry: it is the length of a path from a to b (along a's meridian,
// then along b's parallel, whose length is at most that of the equator),
// padded for rounding. It is exact enough to settle "is b within x metres
// of a" when the answer is clearly yes.
func DistanceBound(a, b orb.Point) float64 {
	const radPerDeg = math.Pi / 180
	path := EarthRadius * radPerDeg * (math.Abs(a[1]-b[1]) + math.Abs(a[0]-b[0]))
	return path*(1+1e-9) + 1e-6
}

// CircleBound is the lon/lat box that holds every point within radius metres
// of c. It is padded by a little so that the box never cuts the circle.
func CircleBound(c orb.Point, radius float64) orb.Bound {
	dLat := radius / EarthRadius * 180 / math.Pi
	cos := math.Cos(c[1] * math.Pi / 180)
	dLon := 180.0
	if cos > 1e-9 {
		dLon = math.Min(dLat/cos, 180)
	}
	pad := 1e-9
	return orb.Bound{
		Min: orb.Point{c[0] - dLon - pad, math.Max(c[1]-dLat-pad, -90)},
		Max: orb.Point{c[0] + dLon + pad, math.Min(c[1]+dLat+pad, 90)},
	}
}
