package load

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A zones file with no features is refused unless zones.allow_empty says
// it is meant: a truncated file must not silently drop every zone.
func TestAnEmptyZonesFileIsRefusedUnlessAllowed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zones.geojson")
	if err := os.WriteFile(path, []byte(`{"type":"FeatureCollection","features":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Zones(path, false); err == nil || !strings.Contains(err.Error(), "zones.allow_empty") {
		t.Errorf("got %v, want a refusal that names zones.allow_empty", err)
	}
	z, err := Zones(path, true)
	if err != nil || z.Len() != 0 {
		t.Errorf("allowed: %v, %d zones", err, z.Len())
	}
}

// A zones file's version is the start of its SHA-256: the same bytes, the
// same version; a changed file, another.
func TestAZonesFileHasItsVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zones.geojson")
	version := func(doc string) string {
		t.Helper()
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		z, err := Zones(path, true)
		if err != nil {
			t.Fatal(err)
		}
		return z.Version
	}
	empty := `{"type":"FeatureCollection","features":[]}`
	a, b := version(empty), version(empty+"\n")
	if len(a) != 12 || a == b || version(empty) != a {
		t.Errorf("versions %q, %q", a, b)
	}
}
