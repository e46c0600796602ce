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
