package dossier_test

import (
	"fmt"
	"testing"

	"github.com/qfence/qfence/processor/dossier"
)

// BenchmarkRenderQueue renders a review page of 10,000 waiting escalations
// (no ClickHouse: the page alone).
//
//	go test -run '^$' -bench RenderQueue ./processor/dossier/
func BenchmarkRenderQueue(b *testing.B) {
	q := &dossier.Queue{Filter: dossier.QueueFilter{Type: "breach_escalated", Limit: 10_000}, Total: 10_000, Database: "qfence",
		Form: &dossier.Form{CSRF: "csrf-token-of-43-bytes-0123456789abcdefghij", Return: "/v1/review"}}
	for i := range 10_000 {
		q.Items = append(q.Items, dossier.QueueItem{EventID: fmt.Sprintf("%032x", i), Type: "breach_escalated", At: 1775127720000 + int64(i)*1000,
			District: fmt.Sprintf("district-%03d", i%40), DistanceM: 900, MaxDistanceM: 950, OutsidePings: 12, NetworkPings: i % 13, MinMarginM: 300,
			DwellS: 1200, Checkin: "missed"})
		if i%40 == 0 {
			q.Counts = append(q.Counts, dossier.DistrictCount{District: fmt.Sprintf("district-%03d", i%40), Waiting: 250})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dossier.RenderQueue(q); err != nil {
			b.Fatal(err)
		}
	}
}
