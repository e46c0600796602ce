// Package geo holds qfence's fences and the geometry that decides against
// them. It is pure: no I/O, no clock, no metrics.
//
// Coordinates are orb.Point, which is [lon, lat] in degrees (WGS 84). Two
// kinds of predicate live here and each says which it is:
//   - Distance is geodesic: great-circle metres (haversine on orb's sphere).
//   - Zone containment is planar in degrees (orb/planar ray casting), which
//     is exact enough for city-sized polygons away from the poles and the
//     antimeridian. Points on a polygon's outer boundary are inside; points on
//     the boundary of one of its holes are in the hole, so outside (as orb).
//
// A circle zone (a GeoJSON Point with radius_m) contains p when
// Distance(center, p) <= radius: geodesic, boundary inside.
package geo
