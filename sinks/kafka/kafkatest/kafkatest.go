// Package kafkatest runs qfence's Kafka side in tests, as net/http/httptest
// does for HTTP: an embedded broker over TCP, a stream of orders and pings
// with the mess of real life, a sink that records what it was given, and
// the replay every run of the same input must equal.
package kafkatest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/geo/synth"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
	qkafka "github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/local"
	"github.com/qfence/qfence/sinks/local/nettest"
)

// The Kafka tests run a real Kafka-protocol broker (kfake) in the test
// process and talk to it over TCP exactly as to a cluster.

func Log(testing.TB) *slog.Logger { return local.TestLog() }

func StartBroker(t testing.TB) string { return StartBrokerCompacting(t, local.DefaultCompactEvery) }

// StartBrokerCompacting is StartBroker compacting every compactEvery
// (a benchmark of ten million records on a compacted topic needs more than
// the default: local.DefaultCompactEvery).
func StartBrokerCompacting(t testing.TB, compactEvery time.Duration) string {
	t.Helper()
	b, err := local.StartBrokerCompacting("127.0.0.1:0", "", 4, compactEvery)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b.Addr()
}

// NewClient is NewKafka whose connections close when the test ends.
func NewClient(t testing.TB, cfg config.Kafka) (*qkafka.Client, error) {
	k, err := qkafka.NewClient(cfg, Log(t))
	if err == nil {
		t.Cleanup(k.Close)
	}
	return k, err
}

func Config(addr string) *config.Config {
	cfg := config.Default()
	cfg.Kafka.Brokers = addr
	cfg.Kafka.Partitions = 4
	cfg.ShutdownTimeout = 10 * time.Second
	return &cfg
}

// Recorder is a pipeline.Sink that remembers every row it acknowledged:
// the stand-in for ClickHouse in the Kafka tests (a sink implementation,
// not a mock of Kafka).
type Recorder struct {
	mu   sync.Mutex
	rows map[string]int    // patient|ts → times stored
	last map[string]string // patient|ts → the row last stored (what FINAL shows)
}

func NewRecorder() *Recorder { return &Recorder{rows: map[string]int{}, last: map[string]string{}} }

// RowOf is what the tests compare of a stored row: everything the engine
// decided about the ping.
func RowOf(t *processor.Track) string {
	return fmt.Sprintf("%s %s d=%.1f in_breach=%v flag=%s zone=%s", t.PatientID, processor.FormatTS(t.TS), t.Distance, t.InBreach, t.Flag, t.Zone) +
		" state=" + t.State.String()
}

// Rows is the last stored row of every ping, by patient|ts.
func (r *Recorder) Rows() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.last)
}

func (r *Recorder) Write(_ context.Context, out *pipeline.Output, done func(error)) {
	rows := out.Rows
	r.mu.Lock()
	for i := range rows {
		key := rows[i].PatientID + "|" + strconv.FormatInt(rows[i].TS, 10)
		r.rows[key]++
		r.last[key] = RowOf(&rows[i])
	}
	r.mu.Unlock()
	done(nil)
}

// Stored is how many times the patient's ping at ts (Unix ms) was stored.
func (r *Recorder) Stored(patient string, ts int64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rows[patient+"|"+strconv.FormatInt(ts, 10)]
}

// Count is how many distinct pings were stored, and how many rows.
func (r *Recorder) Count() (unique, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.rows {
		unique++
		total += n
	}
	return unique, total
}

// Running is a qkafka.Service running in the test.
type Running struct {
	Svc     *qkafka.Service
	Metrics *pipeline.Metrics
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run has returned, with err set
	err     error
}

func (r *Running) Stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("service stopped with %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("service did not stop within 30s")
	}
}

// Wait waits until the service's Run returns on its own and gives its error.
func (r *Running) Wait(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(within):
		t.Fatalf("service still running after %s", within)
		return nil
	}
}

func RunService(t testing.TB, cfg *config.Config, book *processor.OrderBook, sink pipeline.Sink, now func() time.Time) *Running {
	t.Helper()
	return RunServiceWith(t, qkafka.ServiceDeps{Config: cfg, Book: book, Sink: sink, Now: now})
}

// Parts are the parts of cfg as the daemon builds them, with the idle
// partitions' watermark following the wall clock after idle (tests that
// drive the clock set an hour: off).
func Parts(t testing.TB, cfg *config.Config, idle time.Duration) qkafka.Parts {
	t.Helper()
	p, err := qkafka.PartsOf(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Loop.IdleAfter = idle
	return p
}

// RunServiceWith runs a service; Zones, metrics, the log and the parts (of
// its config, idle watermark off) get defaults.
func RunServiceWith(t testing.TB, d qkafka.ServiceDeps) *Running {
	t.Helper()
	if d.Parts.Loop.Tick == 0 {
		d.Parts = Parts(t, d.Config, time.Hour)
	}
	reg := prometheus.NewRegistry()
	if d.Zones == nil {
		d.Zones = func() *geo.Zones { return nil }
	}
	d.Metrics, d.Edge, d.Log = pipeline.NewMetrics(reg), edge.NewMetrics(reg), Log(t)
	svc, err := qkafka.NewService(d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{Svc: svc, Metrics: d.Metrics, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = svc.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// WaitFor polls cond until it holds or the deadline passes.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Dataset is a stream of orders and pings with the mess of real life.
type Dataset struct {
	Orders []kafka.Message
	Pings  []kafka.Message
	Valid  int                      // pings that are not malformed
	Bad    map[processor.Reason]int // malformed pings by the reason they must get
	End    time.Time
}

// BadPings are broken messages and the reason each must be rejected with.
var BadPings = []struct {
	value  string
	reason processor.Reason
}{
	{`{"patient_id":"p-1","ts":`, processor.MalformedJSON},
	{`{"ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":37.6}`, processor.MissingField},
	{`{"patient_id":"p 1","ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":37.6}`, processor.BadPatientID},
	{`{"patient_id":"p-1","ts":"2026-04-02T08:00:00Z","lat":95.7,"lon":37.6}`, processor.BadCoordinates},
	{`{"patient_id":"p-1","ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":37.6,"accuracy_m":-3}`, processor.BadAccuracy},
	{`{"patient_id":"p-1","ts":"yesterday","lat":55.7,"lon":37.6}`, processor.BadTimestamp},
	{`{"patient_id":"p-1","ts":"2030-04-02T08:00:00Z","lat":55.7,"lon":37.6}`, processor.FutureTimestamp},
	{`{"patient_id":"p-1","pad":"` + strings.Repeat("x", 5000) + `"}`, processor.TooLarge},
	{`{"patient_id":"p-1","ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":37.6}`, processor.BadKey}, // keyed "bad"
}

var DataStart = time.Date(2026, 4, 2, 8, 0, 0, 0, time.UTC)

// GenData makes `patients` orders and pings in rounds of one ping per
// patient every two minutes: 10 % take a trip that becomes a breach, 2 %
// fall silent past the signal timeout, every badEvery-th message is broken.
func GenData(seed uint64, patients, pings, badEvery int) Dataset {
	r := rand.New(rand.NewPCG(seed, 99))
	d := Dataset{Bad: map[processor.Reason]int{}}
	homes := make([][2]float64, patients)
	for i := range homes {
		homes[i] = synth.Point(r, synth.Moscow)
		id := fmt.Sprintf("p-%06d", i)
		d.Orders = append(d.Orders, kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil,
			`{"patient_id":%q,"home":{"lat":%.6f,"lon":%.6f},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, id, homes[i][1], homes[i][0])})
	}
	rounds := pings / patients
	for k := 0; len(d.Pings) < pings; k++ {
		for i := 0; i < patients && len(d.Pings) < pings; i++ {
			if badEvery > 0 && len(d.Pings)%badEvery == badEvery-1 {
				b := BadPings[len(d.Pings)/badEvery%len(BadPings)]
				d.Pings = append(d.Pings, kafka.Message{Key: []byte("bad"), Value: []byte(b.value)})
				d.Bad[b.reason]++
				continue
			}
			if i%50 == 7 && k > rounds/8 && k < rounds/8+17 {
				continue // silent for 34 minutes
			}
			away := r.NormFloat64() * 8
			if i%10 == 3 && k >= rounds/3 && k < rounds/3+5 {
				away = 900 // a trip of ten minutes
			}
			// Check-ins eight minutes into some trips (the breach has asked
			// at six): verified at home, which ends the breach, or failed.
			checkin := ""
			if i%40 == 13 && k == rounds/3+4 {
				away, checkin = r.NormFloat64()*8, `,"checkin":{"verified":true,"method":"selfie"}`
			}
			if i%40 == 33 && k == rounds/3+4 {
				checkin = `,"checkin":{"verified":false,"method":"selfie"}`
			}
			ts := DataStart.Add(time.Duration(k)*2*time.Minute + time.Duration(i)*time.Millisecond)
			p := synth.Offset(homes[i], away, r.NormFloat64()*8)
			id := fmt.Sprintf("p-%06d", i)
			d.Pings = append(d.Pings, kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil,
				`{"patient_id":%q,"ts":%q,"lat":%.6f,"lon":%.6f,"accuracy_m":%d%s}`, id, ts.Format(time.RFC3339Nano), p[1], p[0], 5+r.IntN(15), checkin)})
			d.Valid++
			d.End = ts
		}
	}
	return d
}

// Admin is a plain kafka-go client of the broker at addr, for what a test
// does behind qfence's back (topics made beforehand, records written by
// hand); its connections close when the test ends.
func Admin(t testing.TB, addr string) *kafka.Client {
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &kafka.Client{Addr: kafka.TCP(addr), Timeout: 10 * time.Second, Transport: tr}
}

// Writer writes to topic one message a batch, as large as 4 MiB; it is
// closed when the test ends.
func Writer(t testing.TB, addr, topic string) *kafka.Writer {
	tr := &kafka.Transport{}
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, Balancer: &kafka.Murmur2Balancer{}, BatchBytes: 4 << 20, BatchSize: 1, Transport: tr}
	t.Cleanup(func() { w.Close(); tr.CloseIdleConnections() })
	return w
}

// Produce publishes messages as a phone gateway would.
func Produce(t testing.TB, addr, topic string, msgs []kafka.Message) {
	t.Helper()
	k, err := NewClient(t, Config(addr).Kafka)
	if err == nil {
		err = k.Publish(context.Background(), topic, msgs, 0, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// ReadAll reads every partition of topic from the start to its end now.
func ReadAll(t testing.TB, k *qkafka.Client, topic string) map[int][]kafka.Message {
	t.Helper()
	out := map[int][]kafka.Message{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := k.ReadAll(ctx, topic, func(m kafka.Message) { out[m.Partition] = append(out[m.Partition], m) }); err != nil {
		t.Fatal(err)
	}
	return out
}

// KafkaAt is the test configuration for a broker at addr, a client for it
// (closed with the test), and the topics created.
func KafkaAt(t testing.TB, addr string) (*config.Config, *qkafka.Client) {
	t.Helper()
	cfg := Config(addr)
	return cfg, Topics(t, cfg)
}

// Topics makes cfg's topics (with cfg.Kafka.Partitions) and returns a
// client for them, closed with the test.
func Topics(t testing.TB, cfg *config.Config) *qkafka.Client {
	t.Helper()
	k, err := NewClient(t, cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureTopics(context.Background()); err != nil {
		t.Fatal(err)
	}
	return k
}

// CaughtUp reports whether the group has committed every pings partition
// to its end.
func CaughtUp(t testing.TB, k *qkafka.Client, topic string) bool {
	ctx := context.Background()
	parts, err := k.Partitions(ctx, topic)
	if err != nil || parts[topic] == 0 {
		return false
	}
	ends, err1 := k.EndOffsets(ctx, topic, parts[topic])
	committed, err2 := k.CommittedOffsets(ctx, topic, parts[topic])
	if err1 != nil || err2 != nil {
		return false
	}
	for p, end := range ends {
		if end > 0 && committed[p] < end {
			return false
		}
	}
	return true
}

// ReplayPartitions runs what the pings topic holds through the engine, one
// engine per partition in offset order, as qfence replay does with a file:
// the events every run of the same input must Produce, by event id.
func ReplayPartitions(t testing.TB, cfg *config.Config, orders []kafka.Message, parts map[int][]kafka.Message, now time.Time) map[string]string {
	events, _ := Replay(t, cfg, orders, parts, now)
	return events
}

// Replay is ReplayPartitions with the rows replay would store as well, by
// patient|ts (RowOf).
func Replay(t testing.TB, cfg *config.Config, orders []kafka.Message, parts map[int][]kafka.Message, now time.Time) (events, rows map[string]string) {
	t.Helper()
	out := ReplayAll(t, cfg, orders, parts, now)
	return out.Events, out.Rows
}

// Replayed is what replay decides of a pings topic, by id: events (event
// id → JSON), rows (patient|ts → RowOf), notifications (notification id →
// JSON).
type Replayed struct {
	Events, Rows, Notifications map[string]string
}

// ReplayAll is Replay with the notifications too.
func ReplayAll(t testing.TB, cfg *config.Config, orders []kafka.Message, parts map[int][]kafka.Message, now time.Time) Replayed {
	t.Helper()
	notifier, err := cfg.Notifier()
	if err != nil {
		t.Fatal(err)
	}
	book := processor.NewOrderBook()
	for _, m := range orders {
		o, err := processor.DecodeOrder(m.Key, m.Value, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		book.Put(o)
	}
	dec := cfg.PingDecoder()
	events, rows, notes := map[string]string{}, map[string]string{}, map[string]string{}
	for _, msgs := range parts {
		eng := processor.NewEngine(cfg.EngineRules(), book)
		var evs []processor.Event
		var p processor.Ping
		for _, m := range msgs {
			if dec.Decode(m.Value, now.UnixMilli(), &p) != nil || processor.CheckKey(m.Key, &p) != nil {
				continue
			}
			var out processor.Outcome
			var tr processor.Track
			evs, out, tr = eng.Process(&p, nil, evs)
			if out == processor.Accepted || out == processor.Late {
				rows[tr.PatientID+"|"+strconv.FormatInt(tr.TS, 10)] = RowOf(&tr)
			}
		}
		var ns []processor.Notification
		for i := range evs {
			events[evs[i].IDString()] = string(evs[i].AppendJSON(nil, eng.Rules()))
			ns = notifier.For(&evs[i], ns)
		}
		for _, n := range ns {
			id := n.ID()
			notes[hex.EncodeToString(id[:])] = string(n.AppendJSON(nil))
		}
	}
	return Replayed{Events: events, Rows: rows, Notifications: notes}
}

// SameRows fails for every ping whose stored row differs from replay's, and
// for every one stored that replay did not store or the other way round.
func SameRows(t testing.TB, stored, replay map[string]string) {
	t.Helper()
	bad := 0
	for k, w := range replay {
		if g := stored[k]; g != w && bad < 10 {
			bad++
			t.Errorf("row differs:\nstored: %s\nreplay: %s", g, w)
		}
	}
	for k, g := range stored {
		if _, ok := replay[k]; !ok && bad < 10 {
			bad++
			t.Errorf("row stored that replay does not store: %s", g)
		}
	}
}

// EventsByID reads the violations (or notifications) topic into id →
// JSON, failing on two different records with one id.
func EventsByID(t testing.TB, k *qkafka.Client, topic string) (byID map[string]string, total int) {
	t.Helper()
	byID = map[string]string{}
	for _, msgs := range ReadAll(t, k, topic) {
		for _, m := range msgs {
			// The id is the first field: {"event_id":"…" or {"notification_id":"…".
			i := bytes.Index(m.Value, []byte(`":"`)) + 3
			id := string(m.Value[i : i+32])
			if prev, ok := byID[id]; ok && prev != string(m.Value) {
				t.Fatalf("record %s emitted twice with different contents:\n%s\n%s", id, prev, m.Value)
			}
			byID[id] = string(m.Value)
			total++
		}
	}
	return byID, total
}

// SameEvents fails for every event of the run missing from replay's (by
// event id), every one replay lacks, and every one whose JSON differs.
func SameEvents(t testing.TB, run, replay map[string]string) {
	t.Helper()
	for id, w := range replay {
		if g, ok := run[id]; !ok {
			t.Errorf("event missing from the run: %s", w)
		} else if g != w {
			t.Errorf("event %s differs:\nrun:    %s\nreplay: %s", id, g, w)
		}
	}
	for id, g := range run {
		if _, ok := replay[id]; !ok {
			t.Errorf("event only in the run: %s", g)
		}
	}
}

// Brokers is a cluster of embedded brokers a test can move and stop.
type Brokers struct {
	*kfake.Cluster
	// Addrs are the brokers' real addresses, by node id.
	Addrs []string
	mu    sync.Mutex
	conns map[string][]net.Conn // by the listener's real address
}

// StartBrokers starts a cluster of len(advertise) brokers: broker i
// listens on a free port of its own and tells clients to reach it at
// advertise[i] (where a test puts a proxy), or at its own address when
// advertise[i] is "".
func StartBrokers(t testing.TB, advertise []string) *Brokers {
	t.Helper()
	b := &Brokers{conns: map[string][]net.Conn{}}
	c, err := kfake.NewCluster(kfake.NumBrokers(len(advertise)), kfake.DefaultNumPartitions(4),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			// A broker started again on a port it had keeps its address
			// and what it advertised.
			_, port, _ := net.SplitHostPort(address)
			at, idx := "127.0.0.1:0", len(b.Addrs)
			for j, r := range b.Addrs {
				if _, p, _ := net.SplitHostPort(r); p == port && port != "0" {
					at, idx = r, j
				}
			}
			l, err := net.Listen(network, at)
			if err != nil {
				return nil, err
			}
			if idx == len(b.Addrs) {
				b.Addrs = append(b.Addrs, l.Addr().String())
			}
			l = &tracked{Listener: l, b: b, at: b.Addrs[idx]}
			if a := advertise[idx%len(advertise)]; a != "" {
				return nettest.Advertised(l, a), nil
			}
			return l, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	b.Cluster = c
	t.Cleanup(c.Close)
	return b
}

// Stop stops broker node as a crash would: it leaves the cluster and
// every connection to it is cut (kfake alone keeps serving the open ones).
func (b *Brokers) Stop(node int32) error {
	if err := b.RemoveNode(node); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	at := b.Addrs[node]
	for _, c := range b.conns[at] {
		c.Close()
	}
	delete(b.conns, at)
	return nil
}

// Start starts broker node again on its port.
func (b *Brokers) Start(node int32) error {
	_, port, _ := net.SplitHostPort(b.Addrs[node])
	n, _ := strconv.Atoi(port)
	_, _, err := b.AddNode(node, n)
	return err
}

// tracked remembers the connections it accepted, so Stop can cut them.
type tracked struct {
	net.Listener
	b  *Brokers
	at string
}

func (l *tracked) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.b.mu.Lock()
		l.b.conns[l.at] = append(l.b.conns[l.at], c)
		l.b.mu.Unlock()
	}
	return c, err
}

// BeforeEnd drops the events dated after end, the newest ts of the data:
// qfence run lets an idle partition's watermark follow the wall clock, so
// a run slowed long enough (a network fault) loses every signal after the
// data ends, as it must; replay, in event time, cannot. The contract's
// byte-for-byte promise is for the others.
func BeforeEnd(t testing.TB, events map[string]string, end time.Time) map[string]string {
	t.Helper()
	out := make(map[string]string, len(events))
	for id, e := range events {
		var v struct {
			At time.Time `json:"at"`
		}
		if err := json.Unmarshal([]byte(e), &v); err != nil {
			t.Fatalf("event %s: %v", e, err)
		}
		if !v.At.After(end) {
			out[id] = e
		}
	}
	return out
}

// Attest makes d a stream for contract 2.3: every ninth patient's order
// enrols a phone, whose pings carry its device_id and which has a second
// phone at home pinging beside it for a while; every check-in carries an
// attestation signed by key under kid, every third one for a fix other
// than the ping's (a forger's). It returns the JWKS document of the key.
func Attest(t testing.TB, d *Dataset, key ed25519.PrivateKey, kid string) []byte {
	t.Helper()
	enrolled := map[string]bool{}
	for i := range d.Orders {
		if i%9 == 0 {
			id := string(d.Orders[i].Key)
			enrolled[id] = true
			d.Orders[i].Value = bytes.Replace(d.Orders[i].Value, []byte(`"radius_m"`), fmt.Appendf(nil, `"device_id":"phone-%s","radius_m"`, id), 1)
		}
	}
	dec := processor.PingDecoder{DefaultAccuracy: 50}
	var out []kafka.Message
	forged := 0
	for n, m := range d.Pings {
		var p processor.Ping
		if dec.Decode(m.Value, 0, &p) != nil {
			out = append(out, m)
			continue
		}
		id := string(m.Key)
		v := m.Value
		if enrolled[id] {
			v = bytes.Replace(v, []byte(`{"patient_id"`), fmt.Appendf(nil, `{"device_id":"phone-%s","patient_id"`, id), 1)
			p.DeviceID = fmt.Appendf(nil, "phone-%s", id)
		}
		if p.Checkin.Present {
			st := processor.StatementOf(&p, "qfence", processor.IntegrityDevice)
			if forged++; forged%3 == 0 {
				st.Fix.Lat += 0.001
			}
			jws, err := st.Sign(key, kid)
			if err != nil {
				t.Fatal(err)
			}
			v = bytes.Replace(v, []byte(`"method":"selfie"}`), fmt.Appendf(nil, `"method":"selfie","attestation":%q}`, jws), 1)
		}
		out = append(out, kafka.Message{Key: m.Key, Value: v})
		if enrolled[id] && n%7 == 0 {
			// The second phone, at home, a second after the enrolled one.
			spare := bytes.Replace(m.Value, []byte(`{"patient_id"`), []byte(`{"device_id":"spare","patient_id"`), 1)
			ts := time.UnixMilli(p.TS + 1000).UTC().Format(time.RFC3339Nano)
			spare = regexp.MustCompile(`"ts":"[^"]*"`).ReplaceAll(spare, fmt.Appendf(nil, `"ts":%q`, ts))
			spare = regexp.MustCompile(`,"checkin":\{[^}]*\}`).ReplaceAll(spare, nil)
			out = append(out, kafka.Message{Key: m.Key, Value: spare})
			d.Valid++
		}
	}
	d.Pings = out
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: kid}}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Mislocate gives every 17th patient of d a mislocated access point
// (contract 2.4): in rounds 2-4, 9-11 and 14-16 its pings are Wi-Fi fixes
// of 20 m at the same place 700 m east of home; in round 5 it answers at
// home with a verified GNSS check-in (which Attest may then sign), so the
// later episodes meet a learned circle. It returns how many patients.
func Mislocate(t testing.TB, d *Dataset) int {
	t.Helper()
	homes := map[string][2]float64{}
	for _, o := range d.Orders {
		var v struct {
			Home struct{ Lat, Lon float64 } `json:"home"`
		}
		if err := json.Unmarshal(o.Value, &v); err != nil {
			t.Fatal(err)
		}
		homes[string(o.Key)] = [2]float64{v.Home.Lon, v.Home.Lat}
	}
	dec := processor.PingDecoder{DefaultAccuracy: 50}
	chosen := map[string]bool{}
	for n, m := range d.Pings {
		var p processor.Ping
		if dec.Decode(m.Value, 0, &p) != nil {
			continue
		}
		id := string(m.Key)
		var i int
		if _, err := fmt.Sscanf(id, "p-%d", &i); err != nil || i%17 != 5 {
			continue
		}
		chosen[id] = true
		k := (p.TS - DataStart.UnixMilli()) / (2 * 60_000)
		ts := time.UnixMilli(p.TS).UTC().Format(time.RFC3339Nano)
		switch {
		case k >= 2 && k <= 4, k >= 9 && k <= 11, k >= 14 && k <= 16:
			at := synth.Offset(homes[id], 700+float64(k%3)*10, 0)
			d.Pings[n].Value = fmt.Appendf(nil, `{"patient_id":%q,"ts":%q,"lat":%.6f,"lon":%.6f,"accuracy_m":20,"source":"wifi"}`, id, ts, at[1], at[0])
		case k == 5:
			at := synth.Offset(homes[id], 3, 0)
			d.Pings[n].Value = fmt.Appendf(nil, `{"patient_id":%q,"ts":%q,"lat":%.6f,"lon":%.6f,"accuracy_m":8,"source":"gps","checkin":{"verified":true,"method":"selfie"}}`,
				id, ts, at[1], at[0])
		}
	}
	return len(chosen)
}
