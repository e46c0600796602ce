package geo

import (
	"math"

	"github.com/paulmach/orb"
)

// polygon is a polygon prepared for point tests: its rings with their
// bounds computed once. orb/planar.RingContains recomputes a ring's bound on
// every call, a third of Lookup's time at 5k zones (BENCHMARKS.md).
type polygon struct {
	rings  []orb.Ring // the outer ring, then the holes
	bounds []orb.Bound
}

func prepare(mp orb.MultiPolygon) []polygon {
	out := make([]polygon, len(mp))
	for i, p := range mp {
		out[i].rings = p
		for _, r := range p {
			out[i].bounds = append(out[i].bounds, r.Bound())
		}
	}
	return out
}

// containsPolygons is planar.MultiPolygonContains with the same semantics:
// points on an outer ring are inside, points on a hole's ring are outside
// (they are in the hole). TestContainsMatchesOrb checks the two agree.
func containsPolygons(ps []polygon, p orb.Point) bool {
	for i := range ps {
		if containsPolygon(&ps[i], p) {
			return true
		}
	}
	return false
}

func containsPolygon(pg *polygon, p orb.Point) bool {
	if !pg.bounds[0].Contains(p) {
		return false
	}
	in, on := ringContains(pg.rings[0], p)
	if !in {
		return false
	}
	if on {
		return true
	}
	for i := 1; i < len(pg.rings); i++ {
		if !pg.bounds[i].Contains(p) {
			continue
		}
		if in, _ := ringContains(pg.rings[i], p); in {
			return false
		}
	}
	return true
}

// ringContains is orb/planar.RingContains without its per-call bound (the
// caller checks the precomputed one): the same ray casting, so the two agree
// to the bit on edge cases. on reports a point on the ring.
func ringContains(r orb.Ring, p orb.Point) (in, on bool) {
	c, on := rayIntersect(p, r[0], r[len(r)-1])
	if on {
		return true, true
	}
	for i := 0; i < len(r)-1; i++ {
		inter, on := rayIntersect(p, r[i], r[i+1])
		if on {
			return true, true
		}
		if inter {
			c = !c
		}
	}
	return c, false
}

// rayIntersect is orb/planar's (MIT, Copyright (c) 2017 Paul Mach), itself
// from http://rosettacode.org/wiki/Ray-casting_algorithm#Go.
func rayIntersect(p, s, e orb.Point) (intersects, on bool) {
	if s[0] > e[0] {
		s, e = e, s
	}
	switch p[0] {
	case s[0]:
		if p[1] == s[1] {
			return false, true
		} else if s[0] == e[0] {
			if s[1] > e[1] && s[1] >= p[1] && p[1] >= e[1] {
				return false, true
			}
			if e[1] > s[1] && e[1] >= p[1] && p[1] >= s[1] {
				return false, true
			}
		}
		p[0] = math.Nextafter(p[0], math.Inf(1))
	case e[0]:
		if p[1] == e[1] {
			return false, true
		}
		p[0] = math.Nextafter(p[0], math.Inf(1))
	}
	if p[0] < s[0] || p[0] > e[0] {
		return false, false
	}
	if s[1] > e[1] {
		if p[1] > s[1] {
			return false, false
		} else if p[1] < e[1] {
			return true, false
		}
	} else {
		if p[1] > e[1] {
			return false, false
		} else if p[1] < s[1] {
			return true, false
		}
	}
	rs := (p[1] - s[1]) / (p[0] - s[0])
	ds := (e[1] - s[1]) / (e[0] - s[0])
	if rs == ds {
		return false, true
	}
	return rs <= ds, false
}
