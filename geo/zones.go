package geo

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"
)

// Kind is what a zone is for.
type Kind uint8

const (
	// District tags pings and events with the district they fall in.
	District Kind = iota + 1
	// Allowed is a place a patient may go; time in it is excused.
	Allowed
)

func (k Kind) String() string {
	switch k {
	case District:
		return "district"
	case Allowed:
		return "allowed"
	}
	return "unknown"
}

// Zone is one feature of the zones file. It is immutable once parsed.
type Zone struct {
	ID   string
	Name string
	Kind Kind
	// MaxMinutes bounds the excused time in an allowed zone; 0 is no bound.
	MaxMinutes float64

	rank   int // position by ID: overlapping zones resolve to the lowest rank
	bound  orb.Bound
	poly   []polygon // nil for a circle
	center orb.Point
	radius float64 // metres, circles only
}

// Bound is the zone's lon/lat bounding box.
func (z *Zone) Bound() orb.Bound { return z.bound }

// Contains reports whether p is in the zone, boundary included: planar for
// polygons, geodesic for circles (see the package comment).
func (z *Zone) Contains(p orb.Point) bool {
	if !z.bound.Contains(p) {
		return false
	}
	if z.poly == nil {
		return Distance(z.center, p) <= z.radius
	}
	return containsPolygons(z.poly, p)
}

// ParseZones decodes a GeoJSON FeatureCollection into an index. The error
// names the feature (its position and id) and what is wrong with it.
func ParseZones(data []byte) (*Zones, error) {
	var fc geojson.FeatureCollection
	if err := json.Unmarshal(data, &fc); err != nil {
		return nil, fmt.Errorf("zones: not a GeoJSON FeatureCollection: %w", err)
	}
	if fc.Type != "FeatureCollection" {
		return nil, fmt.Errorf("zones: type is %q, want FeatureCollection", fc.Type)
	}
	seen := make(map[string]int, len(fc.Features))
	zones := make([]*Zone, 0, len(fc.Features))
	total := 0
	for i, f := range fc.Features {
		z, err := zoneOf(f)
		if err != nil {
			return nil, fmt.Errorf("zones: feature %d%s: %w", i, describe(f), err)
		}
		if total += z.vertices(); total > MaxTotalVertices {
			return nil, fmt.Errorf("zones: feature %d%s: the file has more than %d positions in all; simplify the zones", i, describe(f), MaxTotalVertices)
		}
		if j, dup := seen[z.ID]; dup {
			return nil, fmt.Errorf("zones: feature %d: id %q is already used by feature %d", i, z.ID, j)
		}
		seen[z.ID] = i
		zones = append(zones, z)
	}
	return NewZones(zones), nil
}

// ValidID reports whether id is a valid zone id: 1-128 bytes of
// [A-Za-z0-9._:-], the rule of patient ids. Zone ids go into events,
// ClickHouse and the dossier's page; a name is free text.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func truncateID(id string) string {
	if len(id) > 64 {
		return id[:64] + "…"
	}
	return id
}

func describe(f *geojson.Feature) string {
	if f == nil {
		return ""
	}
	if id, ok := f.Properties["id"].(string); ok {
		return fmt.Sprintf(" (id %q)", id)
	}
	return ""
}

func zoneOf(f *geojson.Feature) (*Zone, error) {
	if f == nil {
		return nil, fmt.Errorf("feature is null")
	}
	p := f.Properties
	id, ok := p["id"].(string)
	if !ok || strings.TrimSpace(id) == "" {
		return nil, fmt.Errorf("property id is required and must be a non-empty string")
	}
	if !ValidID(id) {
		return nil, fmt.Errorf("property id %q must be 1-128 bytes of [A-Za-z0-9._:-], as a patient id (put free text in name)", truncateID(id))
	}
	z := &Zone{ID: id}
	var mp orb.MultiPolygon
	if n, ok := p["name"]; ok && n != nil {
		s, ok := n.(string)
		if !ok {
			return nil, fmt.Errorf("property name must be a string")
		}
		z.Name = s
	}
	switch p["kind"] {
	case "district":
		z.Kind = District
	case "allowed":
		z.Kind = Allowed
	default:
		return nil, fmt.Errorf("property kind must be \"district\" or \"allowed\", got %v", p["kind"])
	}
	if v, ok := p["max_minutes"]; ok && v != nil {
		m, ok := v.(float64)
		if !ok || math.IsNaN(m) || math.IsInf(m, 0) || m < 0 {
			return nil, fmt.Errorf("property max_minutes must be a number >= 0")
		}
		if z.Kind != Allowed {
			return nil, fmt.Errorf("property max_minutes is only for allowed zones")
		}
		z.MaxMinutes = m
	}
	switch g := f.Geometry.(type) {
	case orb.Polygon:
		mp = orb.MultiPolygon{g}
	case orb.MultiPolygon:
		mp = g
	case orb.Point:
		r, ok := p["radius_m"].(float64)
		if !ok || !(r > 0) || math.IsInf(r, 0) {
			return nil, fmt.Errorf("a Point zone needs a property radius_m > 0")
		}
		if err := checkPoint(g); err != nil {
			return nil, err
		}
		z.center, z.radius = g, r
		z.bound = CircleBound(g, r)
		return z, nil
	case nil:
		return nil, fmt.Errorf("geometry is missing")
	default:
		return nil, fmt.Errorf("geometry %s is not supported (Polygon, MultiPolygon or Point with radius_m)", f.Geometry.GeoJSONType())
	}
	if len(mp) == 0 {
		return nil, fmt.Errorf("geometry has no polygons")
	}
	n := 0
	for _, poly := range mp {
		for _, ring := range poly {
			n += len(ring)
		}
	}
	if n > MaxZoneVertices {
		return nil, fmt.Errorf("%d positions, more than the %d a zone may have (each ping away from home is tested against it); simplify it", n, MaxZoneVertices)
	}
	for pi, poly := range mp {
		if len(poly) == 0 {
			return nil, fmt.Errorf("polygon %d has no rings", pi)
		}
		for ri, ring := range poly {
			if len(ring) < 4 {
				return nil, fmt.Errorf("ring %d of polygon %d needs at least 4 positions, got %d", ri, pi, len(ring))
			}
			for _, pt := range ring {
				if err := checkPoint(pt); err != nil {
					return nil, err
				}
			}
			if ring[0] != ring[len(ring)-1] {
				return nil, fmt.Errorf("ring %d of polygon %d is not closed: its last position %v must repeat its first %v", ri, pi, ring[len(ring)-1], ring[0])
			}
			if a, b, ok := selfIntersection(ring); ok {
				return nil, fmt.Errorf("ring %d of polygon %d crosses itself: its edges %d and %d meet (a ring must be simple)", ri, pi, a, b)
			}
		}
	}
	z.poly, z.bound = prepare(mp), mp.Bound()
	return z, nil
}

// The bounds of a zones file: a zone with a million positions made every
// ping away from home cost milliseconds, and a reload seconds.
const (
	MaxZoneVertices  = 100_000
	MaxTotalVertices = 2_000_000
)

// vertices is how many positions the zone's polygons have (1 for a circle).
func (z *Zone) vertices() int {
	if z.poly == nil {
		return 1
	}
	n := 0
	for _, p := range z.poly {
		n += p.vertices()
	}
	return n
}

func checkPoint(p orb.Point) error {
	lon, lat := p[0], p[1]
	if math.IsNaN(lat) || math.IsNaN(lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return fmt.Errorf("position [%v, %v] is not a valid [lon, lat]", lon, lat)
	}
	return nil
}

// NewCircleZone makes a circle zone (for tests and the simulator).
func NewCircleZone(id string, kind Kind, center orb.Point, radius, maxMinutes float64) *Zone {
	return &Zone{ID: id, Kind: kind, MaxMinutes: maxMinutes, center: center, radius: radius, bound: CircleBound(center, radius)}
}

// NewPolygonZone makes a polygon zone (for tests and the simulator).
func NewPolygonZone(id string, kind Kind, mp orb.MultiPolygon, maxMinutes float64) *Zone {
	return &Zone{ID: id, Kind: kind, MaxMinutes: maxMinutes, poly: prepare(mp), bound: mp.Bound()}
}

// sortZones orders zones by ID and records the rank used to break overlaps.
func sortZones(zs []*Zone) {
	slices.SortFunc(zs, func(a, b *Zone) int { return strings.Compare(a.ID, b.ID) })
	for i, z := range zs {
		z.rank = i
	}
}

// Shape is the zone's geometry for drawing: its rings (each polygon's outer
// ring, then its holes) or, for a circle, its centre and radius in metres.
func (z *Zone) Shape() (rings [][]orb.Ring, center orb.Point, radiusM float64) {
	for _, p := range z.poly {
		rings = append(rings, p.rings)
	}
	return rings, z.center, z.radius
}
