// Package daemon wires `qfence run`: the one place where the engine, the
// Kafka and ClickHouse edges, the zones and orders, the HTTP endpoints and
// the signals meet. A new output topic, table or endpoint is added here
// (see the README's Development section).
package daemon

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/qfence/qfence/cmd/internal/load"
	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/dossier"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/api"
	"github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/edge"
	"github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/local"
)

// NewLogger is the structured logger the config asks for.
func NewLogger(c config.Log, w *os.File) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(edge.Quiet(h, edge.FloodInterval, nil))
}

// Hooks let `qfence demo` watch a daemon it runs in-process.
type Hooks struct {
	// Ready is handed the daemon's readiness check once it exists.
	Ready func(ready func(context.Context) string)
}

// Warnings are what a configuration leaves open that a deployment should
// not: said once at start-up.
func Warnings(cfg *config.Config) []string {
	var out []string
	if cfg.Checkins.RandomPerDay > 0 && cfg.Checkins.ScheduleKey == "" {
		out = append(out, "checkins.schedule_key is not set: anyone who knows a patient id can compute when they will be asked at random (set QFENCE_CHECKINS_SCHEDULE_KEY or checkins.schedule_key_file)")
	}
	if !cfg.Attested() {
		out = append(out, "checkins.verify_keys_file is not set: check-ins count on the phone's word, and a modified app can end any breach")
	}
	if host, _, _ := net.SplitHostPort(cfg.API.Listen); cfg.API.Listen != "" && cfg.API.TLS.CertFile == "" && !loopback(host) {
		out = append(out, "api.listen is not a loopback address and api.tls.cert_file is not set: bearer tokens cross the network in clear (set api.tls, or terminate TLS in front of qfence)")
	}
	return out
}

// Run runs qfence until ctx ends (SIGTERM), then shuts down in order:
// stop fetching and drain the partitions (the sinks still running), flush
// the sinks, stop serving HTTP, stop the embedded broker.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks *Hooks) error {
	err := run(ctx, cfg, log, hooks)
	// A stop asked for (a signal) while qfence still waits for ClickHouse or
	// Kafka ends what waits with context.Canceled: that is the stop, not a
	// failure, and exits 0.
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
		log.Info("stopped while starting", "was", err)
		return nil
	}
	return err
}

func run(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks *Hooks) error {
	containerMemoryLimit(log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	pm := pipeline.NewMetrics(reg)
	em := edge.NewMetrics(reg)
	zonesReloadErrors := prometheus.NewCounter(prometheus.CounterOpts{Name: "qfence_zones_reload_errors_total",
		Help: "Zones files refused on reload (the old zones stay in force)."})
	zonesInForce := prometheus.NewGauge(prometheus.GaugeOpts{Name: "qfence_zones", Help: "Zones in force."})
	reg.MustRegister(zonesReloadErrors, zonesInForce)

	var zones atomic.Pointer[geo.Zones]
	z, err := load.Zones(cfg.Zones.File, cfg.Zones.AllowEmpty)
	if err != nil {
		return err
	}
	zones.Store(z)
	zonesInForce.Set(float64(z.Len()))
	book := processor.NewOrderBook()
	if cfg.Orders.File != "" {
		n, err := load.OrdersFile(cfg.Orders.File, book, z, log)
		if err != nil {
			return err
		}
		log.Info("orders file loaded", "file", cfg.Orders.File, "orders", n)
	}
	pm.ActiveOrders.Set(float64(book.Len()))
	for _, w := range Warnings(cfg) {
		log.Warn(w)
	}
	passes, keys, err := loadPasses(cfg, log)
	if err != nil {
		return err
	}
	// What the Kafka side runs with, built here from the configuration.
	engine, err := kafka.PartsOf(cfg, keys)
	if err != nil {
		return err
	}
	var tokens []api.Token // read now: a bad tokens file is refused before anything waits on ClickHouse
	if cfg.API.Listen != "" {
		if tokens, err = api.LoadTokens(cfg.API.TokensFile); err != nil {
			return err
		}
	}

	// The daemon's parts, each started with one call and stopped in the
	// reverse order once the consumers have drained (or one part failed):
	// the zones reloader, the sink (its last flush), the API, the metrics
	// server, the broker.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	ps := newParts(fail)
	defer func() { _ = ps.stop() }() // on an error path: what started stops, in order
	if cfg.Kafka.Embedded() {
		b, err := local.StartBroker(config.EmbeddedBroker, "", cfg.Kafka.Partitions)
		if err != nil {
			return err
		}
		ps.start("embedded broker", func(ctx context.Context) error { return b.Run(ctx, log) })
	}
	// The probes and the API answer from here on, while ClickHouse and the
	// tables load: /healthz 200, /readyz 503 with the reason, passes
	// checked, dossiers 503 until ClickHouse is there. (A liveness probe
	// that got no answer would restart-loop a qfence waiting for its
	// database.)
	var status atomic.Pointer[string]
	setStatus := func(s string) { status.Store(&s) }
	setStatus("starting: connecting to ClickHouse at " + cfg.ClickHouse.Addr)
	var readyNow atomic.Pointer[func(context.Context) string]
	starting := func(context.Context) string { return *status.Load() }
	readyNow.Store(&starting)
	ready := func(ctx context.Context) string { return (*readyNow.Load())(ctx) }
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "qfence_ready",
		Help: "1 when /readyz would answer 200, else 0 (evaluated at scrape time)."}, func() float64 {
		rctx, cancel := context.WithTimeout(ps.hard, 3*time.Second)
		defer cancel()
		if ready(rctx) == "" {
			return 1
		}
		return 0
	}))
	if hooks != nil && hooks.Ready != nil {
		hooks.Ready(ready)
	}
	srv, served, err := serveHTTP(cfg.Metrics, reg, ready, log)
	if err != nil {
		return err
	}
	ps.start("metrics server", func(ctx context.Context) error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		<-served // the serving goroutine has returned
		return err
	})
	var svcRef atomic.Pointer[kafka.Service]
	passesLoaded := func() bool { s := svcRef.Load(); return s != nil && s.PassesLoaded() }
	audit := &auditTrail{}
	dossiers := &Dossiers{Zones: zones.Load}
	reviews := &Reviews{}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "qfence_api_audit_dropped_total",
		Help: "API audit rows dropped because the buffer for ClickHouse was full (ClickHouse down under a flood of requests)."},
		audit.dropped))
	if cfg.API.Listen != "" {
		if err := serveAPI(ps, cfg.API, tokens, passes, passesLoaded, dossiers, reviews, audit.add, reg, log); err != nil {
			return err
		}
	}

	sink, err := openClickHouse(ctx, cfg, em, log, func(err error) {
		setStatus(fmt.Sprintf("starting: ClickHouse at %s is not available (retrying): %v", cfg.ClickHouse.Addr, err))
	})
	if err != nil {
		return err
	}
	sink.Rules, sink.Budget = engine.Rules, cfg.Limits.MaxInflightRows
	audit.use(sink)
	ps.start("clickhouse sink", func(ctx context.Context) error { return sink.Run(ctx, ps.hard) })
	if cfg.API.Listen != "" {
		reader, err := clickhouse.NewReader(ctx, cfg.ClickHouse, cfg.Privacy.PseudonymizeKey != "")
		if err != nil {
			return err
		}
		defer reader.Close()
		dossiers.reader.Store(reader)
		reviews.reader.Store(reader)
	}
	reviews.sink.Store(sink)

	setStatus("starting: reading the orders and passes topics")
	svc, err := kafka.NewService(kafka.ServiceDeps{Config: cfg, Book: book, Zones: zones.Load, Sink: sink,
		Metrics: pm, Edge: em, Log: log, ArchiveOrders: sink.ArchiveOrder, OrdersArchived: sink.Stored, Parts: engine,
		Passes: passes, ArchivePasses: sink.ArchivePass, StoreDispositions: sink.StoreDispositions})
	if err != nil {
		return err
	}
	running := func(ctx context.Context) string {
		if why := svc.Ready(ctx); why != "" {
			return why
		}
		return sink.Ready(ctx)
	}
	readyNow.Store(&running)
	svcRef.Store(svc)
	reviews.svc.Store(svc)

	hup := make(chan os.Signal, 1) // size 1: a burst of SIGHUPs merges into one reload
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ps.start("zones reloader", func(ctx context.Context) error {
		reload(ctx, hup, cfg, &zones, zonesReloadErrors, zonesInForce, log)
		return nil
	})

	// shutdown_timeout bounds everything after SIGTERM: if the sinks cannot
	// finish (ClickHouse down), what is uncommitted is consumed again at the
	// next start, so giving up loses nothing.
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
			return
		}
		// What is left after the hard stop (closing connections, the HTTP
		// server's own shutdown) must fit in shutdown_timeout too.
		t := time.NewTimer(cfg.ShutdownTimeout - min(2*time.Second, cfg.ShutdownTimeout/4))
		defer t.Stop()
		select {
		case <-t.C:
			log.Warn("shutdown_timeout reached; stopping what is left (uncommitted work is consumed again at the next start)",
				"shutdown_timeout", cfg.ShutdownTimeout)
			ps.kill()
		case <-stopped:
		}
	}()
	log.Info("qfence running", "brokers", cfg.Kafka.BrokerList(), "clickhouse", cfg.ClickHouse.Addr, "metrics", cfg.Metrics.Listen,
		"zones", z.Len(), "orders_from_file", book.Len())
	runErr := svc.Run(ctx)
	if cause := context.Cause(ctx); runErr == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		runErr = cause // a part failed and stopped the consumers
	}
	log.Info("consumers drained; stopping the sink (its last flush), the servers and the broker")
	if err := ps.stop(); err != nil && runErr == nil {
		runErr = err
	}
	log.Info("qfence stopped")
	return runErr
}

// serveAPI starts the people's API (passes, dossiers) on api.listen.
func serveAPI(ps *parts, cfg config.API, tokens []api.Token, passes *processor.PassBook, passesLoaded func() bool, dossiers api.Dossiers,
	reviews api.Reviews, audit func(pipeline.AuditRow), reg prometheus.Registerer, log *slog.Logger) error {
	l, err := api.Listen(cfg.Listen, cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return err
	}
	throttled := prometheus.NewCounter(prometheus.CounterOpts{Name: "qfence_api_throttled_total",
		Help: "API requests refused with 429: a remote address sent too many without a valid token (not audited)."})
	reg.MustRegister(throttled)
	srv := &api.Server{Tokens: tokens, Passes: passes, Dossiers: dossiers, Reviews: reviews, Audit: audit, Now: time.Now, Log: log.With("component", "api"), Throttled: throttled,
		PassesLoaded: passesLoaded}
	log.Info("api listening", "addr", cfg.Listen, "tls", cfg.TLS.CertFile != "", "tokens", len(tokens))
	ps.start("api", func(ctx context.Context) error { return srv.Serve(ctx, l) })
	return nil
}

// Dossiers makes dossier pages from what ClickHouse holds and the zones in
// force: the API's and `qfence dossier`'s.
type Dossiers struct {
	Zones  func() *geo.Zones
	reader atomic.Pointer[clickhouse.Reader] // nil until ClickHouse is there
}

// NewDossiers renders dossiers from r with the zones of zones.
func NewDossiers(r *clickhouse.Reader, zones func() *geo.Zones) *Dossiers {
	d := &Dossiers{Zones: zones}
	d.reader.Store(r)
	return d
}

// Dossier renders the page of an event (api.ErrUnknownEvent when there is
// no such event), with its dispositions, and form when set.
func (d *Dossiers) Dossier(ctx context.Context, eventID string, form *dossier.Form) ([]byte, error) {
	r := d.reader.Load()
	if r == nil {
		return nil, errors.New("ClickHouse is not connected yet")
	}
	c, err := r.Case(ctx, eventID)
	if errors.Is(err, clickhouse.ErrNoEvent) {
		return nil, api.ErrUnknownEvent
	}
	if err != nil {
		return nil, err
	}
	if c.Dispositions, err = r.Dispositions(ctx, eventID); err != nil {
		return nil, err
	}
	c.Form = form
	return dossier.Render(c, d.Zones())
}

// Reviews serves the review endpoints (api.Reviews) from ClickHouse and
// the Kafka side, each there once connected.
type Reviews struct {
	reader atomic.Pointer[clickhouse.Reader]
	sink   atomic.Pointer[clickhouse.Sink]
	svc    atomic.Pointer[kafka.Service]
}

var errNotYet = errors.New("qfence is starting: ClickHouse or Kafka is not connected yet")

// Queue implements api.Reviews.
func (v *Reviews) Queue(ctx context.Context, f dossier.QueueFilter) (*dossier.Queue, error) {
	r := v.reader.Load()
	if r == nil {
		return nil, errNotYet
	}
	return r.Queue(ctx, f)
}

// Outcomes implements api.Reviews.
func (v *Reviews) Outcomes(ctx context.Context, since, until int64) (any, error) {
	r := v.reader.Load()
	if r == nil {
		return nil, errNotYet
	}
	out, err := r.Outcomes(ctx, since, until)
	if out == nil {
		out = []clickhouse.Outcome{}
	}
	return out, err
}

// Current implements api.Reviews.
func (v *Reviews) Current(ctx context.Context, eventID string) (*processor.Disposition, error) {
	r := v.reader.Load()
	if r == nil {
		return nil, errNotYet
	}
	known, err := r.EventKnown(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if !known {
		return nil, api.ErrUnknownEvent
	}
	ds, err := r.Dispositions(ctx, eventID)
	if err != nil || len(ds) == 0 {
		return nil, err
	}
	d := ds[len(ds)-1]
	return &processor.Disposition{DispositionID: d.ID, EventID: d.EventID, Decision: d.Decision, Reason: d.Reason, Comment: d.Comment,
		DecidedBy: d.DecidedBy, DecidedAt: d.DecidedAt, Channel: d.Channel}, nil
}

// Publish implements api.Reviews.
func (v *Reviews) Publish(ctx context.Context, d *processor.Disposition) error {
	svc := v.svc.Load()
	if svc == nil {
		return errNotYet
	}
	return svc.PublishDisposition(ctx, d)
}

// Store implements api.Reviews.
func (v *Reviews) Store(ctx context.Context, d *processor.Disposition) error {
	sink := v.sink.Load()
	if sink == nil {
		return errNotYet
	}
	return sink.StoreDispositions(ctx, []processor.Disposition{*d})
}

// loadPasses reads the issuers' keys and passes.file.
func loadPasses(cfg *config.Config, log *slog.Logger) (*processor.PassBook, []ed25519.PublicKey, error) {
	keys, err := load.VerifyKeys(cfg.Passes.VerifyKeysFile)
	if err != nil {
		return nil, nil, err
	}
	if keys == nil {
		log.Warn("passes.verify_keys_file is not set: pass signatures are not checked, and a forged pass excuses a trip")
	}
	book := processor.NewPassBook()
	if cfg.Passes.File != "" {
		n, err := load.PassesFile(cfg.Passes.File, book, cfg.PassDecoder(keys), log)
		if err != nil {
			return nil, nil, err
		}
		log.Info("passes file loaded", "file", cfg.Passes.File, "passes", n)
	}
	return book, keys, nil
}

// auditTrail takes the API's audit rows: into the sink once it is open,
// before that into a small buffer (the API answers while ClickHouse is
// still being reached), the rest counted as dropped.
type auditTrail struct {
	mu       sync.Mutex
	sink     *clickhouse.Sink
	early    []pipeline.AuditRow
	droppedN int64
}

// maxEarlyAudit bounds the rows kept before the sink is open.
const maxEarlyAudit = 1000

func (a *auditTrail) add(r pipeline.AuditRow) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.sink != nil:
		a.sink.Audit(r)
	case len(a.early) < maxEarlyAudit:
		a.early = append(a.early, r)
	default:
		a.droppedN++
	}
}

func (a *auditTrail) use(s *clickhouse.Sink) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.early {
		s.Audit(r)
	}
	a.sink, a.early = s, nil
}

func (a *auditTrail) dropped() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.droppedN
	if a.sink != nil {
		n += a.sink.AuditDropped.Load()
	}
	return float64(n)
}

// openClickHouse migrates and connects, retrying while the server is down;
// failed hears each failure (for /readyz).
func openClickHouse(ctx context.Context, cfg *config.Config, em *edge.Metrics, log *slog.Logger, failed func(error)) (*clickhouse.Sink, error) {
	for attempt := 0; ; attempt++ {
		err := clickhouse.Migrate(ctx, cfg.ClickHouse, log)
		if err == nil {
			var sink *clickhouse.Sink
			if sink, err = clickhouse.Open(ctx, cfg.ClickHouse, cfg.Privacy.PseudonymizeKey, em, log); err == nil {
				return sink, nil
			}
		}
		failed(err)
		if attempt%10 == 0 {
			log.Warn("clickhouse not available; retrying", "addr", cfg.ClickHouse.Addr, "err", err)
		}
		select {
		case <-ctx.Done():
			// The cause (a stop asked for, or a part's failure) is what ended
			// the wait; the server's last error says why it was still on.
			return nil, fmt.Errorf("clickhouse %s: stopped waiting: %w (last error: %v)", cfg.ClickHouse.Addr, context.Cause(ctx), err)
		case <-time.After(min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)):
		}
	}
}

// maxProfileSecs bounds a CPU profile of /debug/pprof/profile.
const maxProfileSecs = 30

func serveHTTP(cfg config.Metrics, reg *prometheus.Registry, ready func(context.Context) string, log *slog.Logger) (*http.Server, <-chan struct{}, error) {
	if err := web.Validate(cfg.WebConfigFile); err != nil {
		return nil, nil, fmt.Errorf("metrics.web_config_file %s: %w", cfg.WebConfigFile, err)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen); cfg.WebConfigFile == "" && !loopback(host) {
		log.Warn("metrics.listen is not a loopback address and metrics.web_config_file is not set: /metrics and /readyz are served without TLS or authentication",
			"listen", cfg.Listen)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", func(w http.ResponseWriter, r *http.Request) {
			if secs, err := strconv.Atoi(r.URL.Query().Get("seconds")); r.URL.Query().Has("seconds") && (err != nil || secs < 1 || secs > maxProfileSecs) {
				http.Error(w, fmt.Sprintf("seconds must be 1 to %d", maxProfileSecs), http.StatusBadRequest)
				return
			}
			pprof.Profile(w, r)
		})
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if why := ready(r.Context()); why != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(why + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics.listen %s: %w (is another qfence running? set metrics.listen)", cfg.Listen, err)
	}
	srv := edge.HTTPServer(mux, (maxProfileSecs+10)*time.Second, log)
	served := make(chan struct{})
	go func() {
		defer close(served)
		flags := &web.FlagConfig{WebConfigFile: &cfg.WebConfigFile}
		if err := web.Serve(edge.LimitListener(l), srv, flags, log.With("component", "http")); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	return srv, served, nil
}

func loopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// reload re-reads on SIGHUP what may change without a restart: the zones
// (a new snapshot swapped in) and the check-in verification keys. A bad
// file is refused and what was in force stays.
func reload(ctx context.Context, hup <-chan os.Signal, cfg *config.Config, zones *atomic.Pointer[geo.Zones], errs prometheus.Counter, inForce prometheus.Gauge, log *slog.Logger) {
	zc := cfg.Zones
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if cfg.Attested() {
			if n, err := cfg.ReloadCheckinKeys(); err != nil {
				log.Error("check-in keys reload refused; the old keys stay in force", "keys", n, "err", err)
			} else {
				log.Info("check-in keys reloaded", "file", cfg.Checkins.VerifyKeysFile, "keys", n)
			}
		}
		if zc.File == "" {
			if !cfg.Attested() {
				log.Warn("SIGHUP: neither zones.file nor checkins.verify_keys_file is configured; nothing to reload")
			}
			continue
		}
		z, err := load.Zones(zc.File, zc.AllowEmpty)
		if err != nil {
			errs.Inc()
			log.Error("zones reload refused; the old zones stay in force", "err", err)
			continue
		}
		zones.Store(z)
		inForce.Set(float64(z.Len()))
		log.Info("zones reloaded", "file", zc.File, "zones", z.Len())
	}
}

// Build says which build this is: the module version ("devel" for a build
// from a checkout), the commit it was built from (12 hex digits, "" when
// unknown, "+dirty" when the tree had changes) and the Go version.
func Build() (version, commit, goVersion string) {
	version, goVersion = "devel", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		dirty := false
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && len(s.Value) >= 12:
				commit = s.Value[:12]
			case s.Key == "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && commit != "" {
			commit += "+dirty"
		}
	}
	return version, commit, goVersion
}

func buildInfo() prometheus.Collector {
	version, commit, goVersion := Build()
	if commit != "" {
		version = commit // the label this metric has always had
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "qfence_build_info", Help: "Always 1; the labels say which build runs."},
		[]string{"version", "goversion"})
	g.WithLabelValues(version, goVersion).Set(1)
	return g
}

// containerMemoryLimit gives the collector a soft limit of 90 % of the
// container's memory limit (cgroup), unless GOMEMLIMIT is set or
// AUTOMEMLIMIT=off: with the default GOGC=100 a heap of orders may grow to
// twice what is live before a collection, and a container's limit would
// kill the process first (README, "Capacity").
func containerMemoryLimit(log *slog.Logger) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit for the collector", "gomemlimit", v, "from", "GOMEMLIMIT")
		return
	}
	limit, err := memlimit.Set(memlimit.WithRatio(0.9), memlimit.WithProvider(memlimit.FromCgroup))
	switch {
	case err != nil:
		log.Debug("no container memory limit read; the collector has none", "err", err)
	case limit > 0 && limit < math.MaxInt64:
		log.Info("memory limit for the collector", "limit_mib", limit>>20, "from", "90% of the container's memory limit")
	}
}
