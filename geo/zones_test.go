package geo_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/planar"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/geo/synth"
)

// square is a 0.01° × 0.01° district with its south-west corner at (lon, lat):
//
//	(37.60,55.76) ┌────────┐ (37.61,55.76)
//	              │   A    │
//	(37.60,55.75) └────────┘ (37.61,55.75)
func square(lon, lat float64) orb.Polygon {
	return orb.Polygon{{{lon, lat}, {lon + 0.01, lat}, {lon + 0.01, lat + 0.01}, {lon, lat + 0.01}, {lon, lat}}}
}

func TestLookup(t *testing.T) {
	zones := geo.NewZones([]*geo.Zone{
		geo.NewPolygonZone("b-district", geo.District, orb.MultiPolygon{square(37.60, 55.75)}, 0),
		geo.NewPolygonZone("a-district", geo.District, orb.MultiPolygon{square(37.605, 55.75)}, 0), // overlaps b's east half
		geo.NewCircleZone("clinic", geo.Allowed, orb.Point{37.603, 55.753}, 100, 60),
	})
	tests := []struct {
		name         string
		p            orb.Point
		wantDistrict string
		wantAllowed  string
	}{
		{"a point inside one district", orb.Point{37.601, 55.751}, "b-district", ""},
		{"a point on a polygon's edge is inside", orb.Point{37.60, 55.755}, "b-district", ""},
		{"a point on a polygon's corner is inside", orb.Point{37.60, 55.75}, "b-district", ""},
		{"overlapping districts resolve to the smallest id", orb.Point{37.607, 55.755}, "a-district", ""},
		{"a point inside a circle zone", orb.Point{37.603, 55.7535}, "b-district", "clinic"},
		{"a point just outside a circle zone", orb.Point{37.603, 55.7541}, "b-district", ""},
		{"a point nowhere", orb.Point{10, 10}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, a := zones.Lookup(tt.p)
			if got := id(d); got != tt.wantDistrict {
				t.Errorf("district = %q, want %q", got, tt.wantDistrict)
			}
			if got := id(a); got != tt.wantAllowed {
				t.Errorf("allowed = %q, want %q", got, tt.wantAllowed)
			}
		})
	}
}

func id(z *geo.Zone) string {
	if z == nil {
		return ""
	}
	return z.ID
}

// TestCircleBoundaryIsGeodesic: a circle contains exactly the points within
// its radius in great-circle metres, whatever the float32 box rounding.
func TestCircleBoundaryIsGeodesic(t *testing.T) {
	c := orb.Point{37.6184, 55.7512}
	zones := geo.NewZones([]*geo.Zone{geo.NewCircleZone("c", geo.Allowed, c, 250, 0)})
	for bearing := 0.0; bearing < 360; bearing += 7.5 {
		for _, m := range []float64{249.9, 250.1} {
			p := pointAt(c, bearing, m)
			_, got := zones.Lookup(p)
			want := geo.Distance(c, p) <= 250
			if (got != nil) != want {
				t.Errorf("bearing %v, %v m: in zone = %v, want %v", bearing, m, got != nil, want)
			}
		}
	}
}

// TestTinyZonesSurviveFloat32Boxes: a zone far smaller than a float32 ulp of
// its coordinates is still found, because boxes are rounded outward.
func TestTinyZonesSurviveFloat32Boxes(t *testing.T) {
	lon, lat := 179.99999, 89.99999
	eps := 1e-9
	z := geo.NewPolygonZone("tiny", geo.District, orb.MultiPolygon{{{{lon, lat}, {lon + eps, lat}, {lon + eps, lat + eps}, {lon, lat + eps}, {lon, lat}}}}, 0)
	zones := geo.NewZones([]*geo.Zone{z})
	if d, _ := zones.Lookup(orb.Point{lon + eps/2, lat + eps/2}); d == nil {
		t.Fatal("the tiny zone was lost by float32 rounding")
	}
}

func pointAt(c orb.Point, bearing, m float64) orb.Point {
	// A local flat approximation is enough for a test point 250 m away: the
	// test compares against geo.Distance, not against m.
	dLat := m * math.Cos(bearing*math.Pi/180) / geo.EarthRadius * 180 / math.Pi
	dLon := m * math.Sin(bearing*math.Pi/180) / (geo.EarthRadius * math.Cos(c[1]*math.Pi/180)) * 180 / math.Pi
	return orb.Point{c[0] + dLon, c[1] + dLat}
}

func TestParseZones(t *testing.T) {
	good := `{"type":"FeatureCollection","features":[
	 {"type":"Feature","properties":{"id":"CAO","kind":"district","name":"Central"},"geometry":{"type":"Polygon","coordinates":[[[37.5,55.7],[37.7,55.7],[37.7,55.8],[37.5,55.8],[37.5,55.7]]]}},
	 {"type":"Feature","properties":{"id":"clinic-1","kind":"allowed","max_minutes":90,"radius_m":150},"geometry":{"type":"Point","coordinates":[37.6,55.75]}},
	 {"type":"Feature","properties":{"id":"clinic-2","kind":"allowed","radius_m":80},"geometry":{"type":"Point","coordinates":[37.61,55.76]}},
	 {"type":"Feature","properties":{"id":"two","kind":"district"},"geometry":{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]]]}}
	]}`
	z, err := geo.ParseZones([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := geo.ParseZones([]byte(fc(`{"id":"round","kind":"district"}`, bigRing(geo.MaxZoneVertices)))); err != nil {
		t.Errorf("a simple ring of the largest size allowed: %v", err)
	}
	if z.Len() != 4 || z.ByID("clinic-1").MaxMinutes != 90 || z.ByID("CAO").Name != "Central" || z.ByID("clinic-2").Kind != geo.Allowed {
		t.Errorf("parsed %d zones: %+v", z.Len(), z.All())
	}
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"not JSON", `{`, "not a GeoJSON FeatureCollection"},
		{"a bare feature", `{"type":"Feature","properties":{},"geometry":null}`, "not a GeoJSON FeatureCollection"},
		{"a zone without id", fc(`{"kind":"district"}`, poly), "feature 0: property id is required"},
		{"a zone of an unknown kind", fc(`{"id":"x","kind":"park"}`, poly), `feature 0 (id "x"): property kind must be`},
		{"a circle without radius", fc(`{"id":"x","kind":"allowed"}`, `{"type":"Point","coordinates":[1,2]}`), "radius_m > 0"},
		{"a line", fc(`{"id":"x","kind":"allowed"}`, `{"type":"LineString","coordinates":[[1,2],[3,4]]}`), "LineString is not supported"},
		{"a ring of three positions", fc(`{"id":"x","kind":"district"}`, `{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}`), "at least 4 positions"},
		{"a position off the globe", fc(`{"id":"x","kind":"district"}`, `{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,91],[0,0]]]}`), "not a valid [lon, lat]"},
		{"max_minutes on a district", fc(`{"id":"x","kind":"district","max_minutes":5}`, poly), "only for allowed zones"},
		{"a negative max_minutes", fc(`{"id":"x","kind":"allowed","max_minutes":-5}`, poly), "max_minutes must be a number >= 0"},
		// A bow tie:  (0,1) ___ (1,1)
		//                 \ /
		//                  X      its edges 0 and 2 cross
		//                 / \
		//           (0,0) ‾‾‾ (1,0)
		{"a ring that crosses itself", fc(`{"id":"bow","kind":"district"}`, `{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}`), `feature 0 (id "bow"): ring 0 of polygon 0 crosses itself`},
		{"a ring that touches itself at a vertex", fc(`{"id":"pinch","kind":"district"}`, `{"type":"Polygon","coordinates":[[[0,0],[2,0],[1,1],[2,2],[0,2],[1,1],[0,0]]]}`), "crosses itself"},
		{"a ring that is not closed", fc(`{"id":"open","kind":"district"}`, `{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}`), `ring 0 of polygon 0 is not closed`},
		{"a zone of too many positions", fc(`{"id":"huge","kind":"district"}`, bigRing(geo.MaxZoneVertices+1)), `more than the 100000 a zone may have`},
		// Zone ids reach events, ClickHouse and the dossier's page: markup in
		// one drew a fake "cleared" link over the map.
		{"an id with markup", fc(`{"id":"x\"><script>alert(1)</script>","kind":"district"}`, poly), "must be 1-128 bytes of [A-Za-z0-9._:-]"},
		{"an id with a space", fc(`{"id":"Central district","kind":"district"}`, poly), "put free text in name"},
		{"an id of 129 bytes", fc(`{"id":"`+strings.Repeat("z", 129)+`","kind":"district"}`, poly), "must be 1-128 bytes"},
		{"two zones with one id", `{"type":"FeatureCollection","features":[` + feature(`{"id":"x","kind":"district"}`, poly) + `,` + feature(`{"id":"x","kind":"allowed"}`, poly) + `]}`, `id "x" is already used by feature 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := geo.ParseZones([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// bigRing is a closed circle-like ring of n positions.
func bigRing(n int) string {
	var b strings.Builder
	b.WriteString(`{"type":"Polygon","coordinates":[[`)
	for i := range n - 1 {
		a := 2 * math.Pi * float64(i) / float64(n-1)
		fmt.Fprintf(&b, "[%.9f,%.9f],", 37.6+0.1*math.Cos(a), 55.7+0.1*math.Sin(a))
	}
	fmt.Fprintf(&b, "[%.9f,%.9f]]]}", 37.7, 55.7)
	return b.String()
}

const poly = `{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}`

func feature(props, geom string) string {
	return `{"type":"Feature","properties":` + props + `,"geometry":` + geom + `}`
}

func fc(props, geom string) string {
	return `{"type":"FeatureCollection","features":[` + feature(props, geom) + `]}`
}

// FuzzParseZones: any input either parses into zones that answer lookups
// or is refused with an error; nothing panics.
func FuzzParseZones(f *testing.F) {
	f.Add([]byte(fc(`{"id":"x","kind":"district"}`, poly)))
	f.Add([]byte(fc(`{"id":"c","kind":"allowed","radius_m":50,"max_minutes":3}`, `{"type":"Point","coordinates":[37.6,55.7]}`)))
	f.Add([]byte(`{"type":"FeatureCollection","features":[null]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		z, err := geo.ParseZones(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, zone := range z.All() {
			b := zone.Bound()
			z.Lookup(b.Center())
		}
	})
}

// TestContainsMatchesOrb: the prepared polygon test agrees with
// orb/planar.MultiPolygonContains, boundary included, on random points near
// and on the edges of random polygons with holes.
func TestContainsMatchesOrb(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for k := 0; k < 200; k++ {
		c := orb.Point{r.Float64()*2 - 1, r.Float64()*2 - 1}
		outer := synth.Circle(c, 5000+r.Float64()*5000, 3+r.IntN(20))
		hole := synth.Circle(c, 1000+r.Float64()*2000, 3+r.IntN(8))
		mp := orb.MultiPolygon{{outer, hole}}
		z := geo.NewZones([]*geo.Zone{geo.NewPolygonZone("z", geo.District, mp, 0)})
		var probes []orb.Point
		for i := 0; i < 50; i++ {
			probes = append(probes, synth.Offset(c, r.NormFloat64()*6000, r.NormFloat64()*6000))
		}
		for _, ring := range mp[0] {
			probes = append(probes, ring[0], ring[1], orb.Point{(ring[0][0] + ring[1][0]) / 2, (ring[0][1] + ring[1][1]) / 2})
		}
		for _, p := range probes {
			want := planar.MultiPolygonContains(mp, p)
			d, _ := z.Lookup(p)
			if got := d != nil; got != want {
				t.Fatalf("polygon %d, point %v: got %v, orb says %v", k, p, got, want)
			}
		}
	}
}

// DistanceBound settles pings without trigonometry only because it is never
// below the distance: near and far, at the poles and across the antimeridian.
func TestDistanceBoundIsNeverBelowTheDistance(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 500_000 {
		a := orb.Point{r.Float64()*360 - 180, r.Float64()*180 - 90}
		var b orb.Point
		switch i % 3 {
		case 0: // metres away
			b = orb.Point{a[0] + r.NormFloat64()*1e-4, math.Max(-90, math.Min(90, a[1]+r.NormFloat64()*1e-4))}
		case 1: // anywhere
			b = orb.Point{r.Float64()*360 - 180, r.Float64()*180 - 90}
		default: // near a pole or the antimeridian
			a[1] = math.Copysign(90-r.Float64()*0.01, a[1])
			b = orb.Point{-a[0], a[1] - math.Copysign(r.Float64()*0.01, a[1])}
		}
		if d, ub := geo.Distance(a, b), geo.DistanceBound(a, b); ub < d {
			t.Fatalf("%v to %v: bound %.9f m below the distance %.9f m", a, b, ub, d)
		}
	}
	// And it is tight enough to matter: within 2x for pings metres apart in Moscow.
	a := orb.Point{37.62, 55.75}
	b := orb.Point{37.6201, 55.7501}
	if d, ub := geo.Distance(a, b), geo.DistanceBound(a, b); ub > 2*d {
		t.Fatalf("bound %.2f m for a distance of %.2f m", ub, d)
	}
}
