package geo

import (
	"math"

	"github.com/paulmach/orb"
	"github.com/tidwall/rtree"
)

// Zones is an immutable snapshot of the zones file with an R-tree over the
// zones' bounding boxes. Build a new one and swap it in to reload; readers
// holding the old one are unaffected.
type Zones struct {
	tree rtree.RTreeGN[float32, *Zone]
	list []*Zone
	byID map[string]*Zone
	// Version names the file these zones came from: the first 12 hex
	// digits of its SHA-256 ("" when not from a file). The dossier says
	// which zones it drew.
	Version string
}

// NewZones indexes zones. It takes ownership of the slice and its zones.
func NewZones(zs []*Zone) *Zones {
	sortZones(zs)
	x := &Zones{list: zs, byID: make(map[string]*Zone, len(zs))}
	for _, z := range zs {
		lo, hi := box32(z.bound)
		x.tree.Insert(lo, hi, z)
		x.byID[z.ID] = z
	}
	return x
}

// Len is the number of zones.
func (x *Zones) Len() int {
	if x == nil {
		return 0
	}
	return len(x.list)
}

// ByID returns the zone with that id, or nil.
func (x *Zones) ByID(id string) *Zone {
	if x == nil {
		return nil
	}
	return x.byID[id]
}

// All returns the zones ordered by ID. The slice must not be modified.
func (x *Zones) All() []*Zone {
	if x == nil {
		return nil
	}
	return x.list
}

// Lookup finds the district and the allowed zone that contain p (either may
// be nil). When zones of a kind overlap, the one with the smallest ID wins,
// so the answer does not depend on insertion order. Two phases: R-tree
// candidates by bounding box, then the exact test of Zone.Contains.
func (x *Zones) Lookup(p orb.Point) (district, allowed *Zone) {
	if x == nil || len(x.list) == 0 {
		return nil, nil
	}
	q := [2]float32{float32(p[0]), float32(p[1])}
	x.tree.Search(q, q, func(_, _ [2]float32, z *Zone) bool {
		switch z.Kind {
		case District:
			if (district == nil || z.rank < district.rank) && z.Contains(p) {
				district = z
			}
		case Allowed:
			if (allowed == nil || z.rank < allowed.rank) && z.Contains(p) {
				allowed = z
			}
		}
		return true
	})
	return district, allowed
}

// box32 converts a bound to float32 corners rounded outward, so that the
// stored box always holds the exact one. The query point is rounded to
// nearest, which can move it by at most half an ulp: the outward rounding of
// the box is one whole ulp, so a point inside the exact box stays inside.
func box32(b orb.Bound) (lo, hi [2]float32) {
	for i := 0; i < 2; i++ {
		lo[i] = down32(b.Min[i])
		hi[i] = up32(b.Max[i])
	}
	return lo, hi
}

func down32(v float64) float32 {
	f := float32(v)
	if float64(f) > v {
		f = math.Nextafter32(f, float32(math.Inf(-1)))
	}
	return math.Nextafter32(f, float32(math.Inf(-1)))
}

func up32(v float64) float32 {
	f := float32(v)
	if float64(f) < v {
		f = math.Nextafter32(f, float32(math.Inf(1)))
	}
	return math.Nextafter32(f, float32(math.Inf(1)))
}
