package kafka

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/qfence/qfence/processor"
)

// The passes kept for people under no order are bounded by bytes, not
// only by count: 8,000 passes of 3 KB (an unsigned issuer's garbage
// signatures) once held 24 MB; the newest stay.
func TestRecentPassesAreBoundedByBytes(t *testing.T) {
	tbl := &PassesTable{}
	dec := processor.PassDecoder{}
	junk := strings.Repeat("A", 3000)
	var last *processor.Pass
	for i := range 8000 {
		p, err := dec.Parse(nil, fmt.Appendf(nil, `{"pass_id":"X-%d","patient_id":"r-%d","purpose":"pet","valid_from":1775124000000,"valid_to":1775127600000,"signature":%q}`, i, i, junk))
		if err != nil {
			t.Fatal(err)
		}
		tbl.keepRecent(p)
		last = p
	}
	if b := tbl.RecentBytes(); b > recentMaxBytes || b < recentMaxBytes/2 {
		t.Errorf("the recent passes hold %d bytes, want at most %d (and not far below)", b, recentMaxBytes)
	}
	if got := tbl.forgetRecent(last.PatientID); len(got) != 1 || got[0] != last {
		t.Error("the newest pass is not kept")
	}
}

// The README says how many passes of people under no order are kept, and
// how many bytes: the numbers are the code's.
func TestTheReadmeSaysTheRecentPassBounds(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("(%s of them, %d MiB at most)", thousands(recentCap), recentMaxBytes>>20)
	if !strings.Contains(strings.Join(strings.Fields(string(b)), " "), want) {
		t.Errorf("the README does not say %q", want)
	}
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
