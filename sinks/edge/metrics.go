package edge

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the edges' metrics (config/contract/CONTRACT.md 5). Label values are
// sink names, topic names and partition numbers: bounded, never a patient.
type Metrics struct {
	SinkRows    *prometheus.CounterVec
	SinkFlush   *prometheus.HistogramVec
	SinkErrors  *prometheus.CounterVec
	ConsumerLag *prometheus.GaugeVec
	// PartitionOwned is 1 for each pings partition this instance owns
	// (state restored, not yet released).
	PartitionOwned *prometheus.GaugeVec
}

// Sink names.
var sinkNames = []string{"clickhouse", "kafka"}

// NewMetrics registers the edge's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SinkRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_sink_rows_total",
			Help: "Rows (ClickHouse) and records (Kafka) acknowledged by each sink."}, []string{"sink"}),
		SinkFlush: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "qfence_sink_flush_seconds",
			Help: "Time of one successful flush of a sink.", Buckets: prometheus.ExponentialBucketsRange(0.001, 30, 14)}, []string{"sink"}),
		SinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_sink_errors_total",
			Help: "Failed flush attempts of each sink (each is retried)."}, []string{"sink"}),
		ConsumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "qfence_consumer_lag",
			Help: "Messages between the group's committed offset and the end of each partition."}, []string{"topic", "partition"}),
		PartitionOwned: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "qfence_partition_owned",
			Help: "1 for each pings partition this instance owns: its state restored, not yet released after its last commit."}, []string{"partition"}),
	}
	reg.MustRegister(m.SinkRows, m.SinkFlush, m.SinkErrors, m.ConsumerLag, m.PartitionOwned)
	for _, s := range sinkNames {
		m.SinkRows.WithLabelValues(s)
		m.SinkErrors.WithLabelValues(s)
	}
	return m
}

func (m *Metrics) ObserveFlush(sink string, start time.Time, n int) {
	m.SinkFlush.WithLabelValues(sink).Observe(time.Since(start).Seconds())
	m.SinkRows.WithLabelValues(sink).Add(float64(n))
}
