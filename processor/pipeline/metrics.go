package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qfence/qfence/processor"
)

// Metrics are the processor's metrics (config/contract/CONTRACT.md 5). No label
// holds a patient id: every label value comes from a fixed list.
type Metrics struct {
	Pings        *prometheus.CounterVec
	Rejected     *prometheus.CounterVec
	Events       *prometheus.CounterVec
	OpenBreaches prometheus.Gauge
	// KnownMislocations are the learned circles held (contract 2.4).
	KnownMislocations prometheus.Gauge
	ActiveOrders      prometheus.Gauge
	EventLatency      prometheus.Histogram
	OrdersApplied     *prometheus.CounterVec
	// StateRestoreErrors counts qfence-state records that could not be
	// decoded at restore: each is skipped and its patient starts afresh.
	StateRestoreErrors prometheus.Counter
	Passes             *prometheus.CounterVec
	ActivePasses       prometheus.Gauge
	Notifications      *prometheus.CounterVec
	// NotificationsCut counts texts cut at notifications.max_text_bytes.
	NotificationsCut prometheus.Counter
	// Checkins are check-ins by outcome (counted, rejected, unattested)
	// and, for rejected ones, reason (contract 2.3).
	Checkins *prometheus.CounterVec
	// Dispositions are the dispositions stored, by decision and channel;
	// DispositionsRejected those dead-lettered, by reason (contract 1.5).
	Dispositions         *prometheus.CounterVec
	DispositionsRejected *prometheus.CounterVec
}

// Disposition counts a stored disposition.
func (m *Metrics) Disposition(d *processor.Disposition) {
	ch := d.Channel
	if ch == "" {
		ch = "none"
	}
	m.Dispositions.WithLabelValues(d.Decision, ch).Inc()
}

// countedCheckin counts a check-in that counted: attested, or taken on
// the phone's word when no keys are configured.
func (m *Metrics) countedCheckin(r *processor.Rules) {
	if r.Checkins.Attest == nil {
		m.Checkins.WithLabelValues("unattested", "").Inc()
	} else {
		m.Checkins.WithLabelValues("counted", "").Inc()
	}
}

// NewMetrics registers the processor's metrics with reg and initialises
// every label value, so each series exists from the first scrape.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Pings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_pings_total",
			Help: "Pings consumed, by outcome."}, []string{"outcome"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_pings_rejected_total",
			Help: "Pings sent to the dead-letter topic, by reason."}, []string{"reason"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_events_total",
			Help: "Events emitted, by type."}, []string{"type"}),
		OpenBreaches: prometheus.NewGauge(prometheus.GaugeOpts{Name: "qfence_open_breaches",
			Help: "Breaches open in the partitions this instance owns."}),
		KnownMislocations: prometheus.NewGauge(prometheus.GaugeOpts{Name: "qfence_known_mislocations",
			Help: "Known mislocations (circles learned from answers) held in the partitions this instance owns."}),
		ActiveOrders: prometheus.NewGauge(prometheus.GaugeOpts{Name: "qfence_active_orders",
			Help: "Quarantine orders held (the whole global table)."}),
		EventLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "qfence_event_latency_seconds",
			Help: "From the deciding ping's Kafka append time to the event's acknowledgement by Kafka.",
			// 24 buckets, each 1.57 times the last: a p99 near 250 ms is told
			// from one near 400 ms (16 buckets put both in one).
			Buckets: prometheus.ExponentialBucketsRange(0.001, 30, 24)}),
		OrdersApplied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_orders_total",
			Help: "Order messages read, by outcome: applied, revoked or rejected."}, []string{"outcome"}),
		StateRestoreErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "qfence_state_restore_errors_total",
			Help: "qfence-state records that could not be decoded at restore (skipped: the patient starts from no state)."}),
		Passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_passes_total",
			Help: "Pass messages read, by outcome: applied, deleted, rejected, not_a_patient (not held), expired."}, []string{"outcome"}),
		ActivePasses: prometheus.NewGauge(prometheus.GaugeOpts{Name: "qfence_active_passes",
			Help: "QR passes held (of patients under an order, not yet a day past their end)."}),
		Notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_notifications_total",
			Help: "Notifications to patients produced, by kind: warning, checkin_request."}, []string{"kind"}),
		NotificationsCut: prometheus.NewCounter(prometheus.CounterOpts{Name: "qfence_notifications_truncated_total",
			Help: "Notification texts cut at notifications.max_text_bytes."}),
		Checkins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_checkins_total",
			Help: "Check-ins by outcome: counted (attested), rejected (by reason), unattested (no keys configured: the phone's word)."},
			[]string{"outcome", "reason"}),
		Dispositions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_dispositions_total",
			Help: "Dispositions stored (what people decided about events), by decision and channel (none: the message had no channel)."},
			[]string{"decision", "channel"}),
		DispositionsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qfence_dispositions_rejected_total",
			Help: "Disposition messages sent to the dead-letter topic, by reason."}, []string{"reason"}),
	}
	reg.MustRegister(m.Dispositions, m.DispositionsRejected)
	for _, d := range processor.Decisions {
		for _, c := range append([]string{"none"}, processor.Channels...) {
			m.Dispositions.WithLabelValues(d, c)
		}
	}
	for _, r := range processor.DispositionReasons {
		m.DispositionsRejected.WithLabelValues(string(r))
	}
	reg.MustRegister(m.Pings, m.Rejected, m.Events, m.OpenBreaches, m.KnownMislocations, m.ActiveOrders, m.EventLatency, m.OrdersApplied, m.StateRestoreErrors, m.Passes, m.ActivePasses, m.Notifications, m.Checkins, m.NotificationsCut)
	for _, o := range []string{"accepted", "rejected", "no_order", "late", "duplicate"} {
		m.Pings.WithLabelValues(o)
	}
	for _, r := range processor.PingReasons {
		m.Rejected.WithLabelValues(string(r))
	}
	for _, t := range processor.EventTypes {
		m.Events.WithLabelValues(t.String())
	}
	for _, k := range processor.NotificationKinds {
		m.Notifications.WithLabelValues(k.String())
	}
	m.Checkins.WithLabelValues("counted", "")
	m.Checkins.WithLabelValues("unattested", "")
	for _, r := range processor.CheckinReasons {
		m.Checkins.WithLabelValues("rejected", r.String())
	}
	for _, o := range []string{"applied", "revoked", "rejected"} {
		m.OrdersApplied.WithLabelValues(o)
	}
	for _, o := range []string{"applied", "deleted", "rejected", "not_a_patient", "expired"} {
		m.Passes.WithLabelValues(o)
	}
	return m
}
