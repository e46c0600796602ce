package geo

import (
	"github.com/paulmach/orb"
	"github.com/tidwall/rtree"
)

func (p polygon) vertices() int {
	n := 0
	for _, r := range p.rings {
		n += len(r)
	}
	return n
}

// selfIntersection finds two edges of a closed ring that meet although
// they are not neighbours (a crossing, a touch or an overlap), planar in
// lon/lat like the containment test. Two phases, as every spatial query
// here: an R-tree of the edges' boxes gives the candidate pairs, an exact
// orientation test decides. It reports the first pair found.
func selfIntersection(ring orb.Ring) (a, b int, found bool) {
	n := len(ring) - 1 // edges; the ring is closed (ring[n] == ring[0])
	if n < 3 {
		return 0, 0, false
	}
	var tr rtree.RTreeG[int]
	box := func(i int) (lo, hi [2]float64) {
		p, q := ring[i], ring[i+1]
		return [2]float64{min(p[0], q[0]), min(p[1], q[1])}, [2]float64{max(p[0], q[0]), max(p[1], q[1])}
	}
	for i := range n {
		lo, hi := box(i)
		tr.Insert(lo, hi, i)
	}
	for i := range n {
		lo, hi := box(i)
		tr.Search(lo, hi, func(_, _ [2]float64, j int) bool {
			if j <= i || j == i+1 || (i == 0 && j == n-1) {
				return true // each pair once; neighbours share a vertex by design
			}
			if segmentsMeet(ring[i], ring[i+1], ring[j], ring[j+1]) {
				a, b, found = i, j, true
				return false
			}
			return true
		})
		if found {
			return a, b, true
		}
	}
	return 0, 0, false
}

// orient is the sign of the cross product (q-p)×(r-p): >0 left, <0 right.
func orient(p, q, r orb.Point) float64 {
	return (q[0]-p[0])*(r[1]-p[1]) - (q[1]-p[1])*(r[0]-p[0])
}

func onSegment(p, q, r orb.Point) bool { // r is collinear with p-q: is it between?
	return min(p[0], q[0]) <= r[0] && r[0] <= max(p[0], q[0]) && min(p[1], q[1]) <= r[1] && r[1] <= max(p[1], q[1])
}

// segmentsMeet reports whether segments p1-p2 and q1-q2 share any point.
func segmentsMeet(p1, p2, q1, q2 orb.Point) bool {
	d1, d2 := orient(q1, q2, p1), orient(q1, q2, p2)
	d3, d4 := orient(p1, p2, q1), orient(p1, p2, q2)
	if ((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0)) {
		return true
	}
	return (d1 == 0 && onSegment(q1, q2, p1)) || (d2 == 0 && onSegment(q1, q2, p2)) ||
		(d3 == 0 && onSegment(p1, p2, q1)) || (d4 == 0 && onSegment(p1, p2, q2))
}
