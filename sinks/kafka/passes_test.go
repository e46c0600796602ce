package kafka_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	qkafka "github.com/qfence/qfence/sinks/kafka"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/qfence/qfence/config/contract"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

func passMsg(id, patient string, from, to time.Time) kafka.Message {
	return kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"pass_id":%q,"patient_id":%q,"purpose":"medical","valid_from":%q,"valid_to":%q}`,
		id, patient, from.Format(time.RFC3339), to.Format(time.RFC3339))}
}

func orderMsg(id string) kafka.Message {
	return kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil,
		`{"patient_id":%q,"home":{"lat":55.7512,"lon":37.6184},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, id)}
}

func pingMsg(id string, at time.Time, lat float64) kafka.Message {
	return kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"patient_id":%q,"ts":%q,"lat":%v,"lon":37.6184,"accuracy_m":5}`,
		id, at.Format(time.RFC3339), lat)}
}

// Passes are a global table read before the pings: not ready until read,
// a bad pass goes to passes-dlq with the contract's headers, a tombstone
// deletes, a pass of someone under no order is not held, and a new
// patient's passes already on the topic are found by the rescan.
func TestPassesAreAGlobalTableOfPatientsOnly(t *testing.T) {
	addr, k, d := setup(t)
	now := time.Now().UTC().Truncate(time.Second)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{orderMsg("p-1")})
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Passes, []kafka.Message{
		passMsg("X-1", "p-1", now.Add(-time.Hour), now.Add(time.Hour)),
		passMsg("X-2", "p-1", now.Add(-time.Hour), now.Add(time.Hour)),
		passMsg("X-3", "resident-9", now.Add(-time.Hour), now.Add(time.Hour)), // under no order
		passMsg("X-4", "p-late", now.Add(-time.Hour), now.Add(time.Hour)),     // the order comes later
		{Key: []byte("X-5"), Value: []byte(`{"pass_id":"X-5","patient_id":"p-1","purpose":"party","valid_from":1,"valid_to":2}`)},
	})
	d.Sink, d.Passes, d.PassRescan = kafkatest.NewRecorder(), processor.NewPassBook(), 200*time.Millisecond
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.WaitFor(t, time.Minute, "ready", func() bool { return svc.Svc.Ready(t.Context()) == "" })
	if d.Passes.ByID("X-1") == nil || d.Passes.ByID("X-2") == nil {
		t.Fatal("ready without the passes of p-1")
	}
	if d.Passes.ByID("X-3") != nil || d.Passes.ByID("X-4") != nil || d.Passes.Len() != 2 {
		t.Errorf("holds %d passes, some of people under no order", d.Passes.Len())
	}
	if n := testutil.ToFloat64(svc.Metrics.Passes.WithLabelValues("not_a_patient")); n != 2 {
		t.Errorf("qfence_passes_total{outcome=not_a_patient} = %v, want 2", n)
	}
	kafkatest.WaitFor(t, time.Minute, "the bad pass dead-lettered", func() bool {
		return len(kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.PassesDLQ)[0]) == 1
	})
	dl := kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.PassesDLQ)[0][0]
	headers, err := contract.Schema(contract.DeadLetterHeaders)
	if err != nil {
		t.Fatal(err)
	}
	if err := contract.Validate(headers, deadLetterHeaders(dl)); err != nil || header(dl, "qfence-reason") != "bad_purpose" ||
		header(dl, "qfence-topic") != d.Config.Kafka.Topics.Passes || string(dl.Key) != "X-5" {
		t.Errorf("dead letter %q headers %v: %v", dl.Key, dl.Headers, err)
	}

	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Passes, []kafka.Message{{Key: []byte("X-2"), Value: nil}})
	kafkatest.WaitFor(t, time.Minute, "the tombstone applied", func() bool { return d.Passes.ByID("X-2") == nil })
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{orderMsg("p-late")})
	kafkatest.WaitFor(t, time.Minute, "the new patient's pass found", func() bool { return d.Passes.ByID("X-4") != nil })
	if d.Passes.ByID("X-3") != nil {
		t.Error("the rescan took a pass of someone under no order")
	}
	svc.Stop(t)
}

// A pass that arrives after the pings it would have covered excuses
// nothing retroactively: pings are judged in processing order, against the
// tables as they are then, like orders.
func TestAPassIsNotAppliedRetroactively(t *testing.T) {
	addr, k, d := setup(t)
	start := kafkatest.DataStart
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{orderMsg("p-1")})
	sink := kafkatest.NewRecorder()
	d.Sink, d.Passes = sink, processor.NewPassBook()
	d.Now = func() time.Time { return start.Add(time.Hour) }
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.WaitFor(t, time.Minute, "ready", func() bool { return svc.Svc.Ready(t.Context()) == "" })
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, []kafka.Message{
		pingMsg("p-1", start, 55.7512), pingMsg("p-1", start.Add(5*time.Minute), 55.76), pingMsg("p-1", start.Add(11*time.Minute), 55.76)})
	kafkatest.WaitFor(t, time.Minute, "the breach", func() bool { return countEvents(t, k, "breach_started") == 1 })
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Passes, []kafka.Message{passMsg("X-1", "p-1", start, start.Add(time.Hour))})
	kafkatest.WaitFor(t, time.Minute, "the pass held", func() bool { return d.Passes.ByID("X-1") != nil })
	// The next ping is covered; the breach it was part of stays.
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, []kafka.Message{pingMsg("p-1", start.Add(14*time.Minute), 55.76)})
	kafkatest.WaitFor(t, time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(t, k, d.Config.Kafka.Topics.Pings) })
	svc.Stop(t)
	if n := countEvents(t, k, "breach_started"); n != 1 {
		t.Errorf("%d breach_started, want the one before the pass", n)
	}
	rows := sink.Rows()
	for min, want := range map[int]string{5: "state=outside", 11: "state=outside", 14: "state=excused"} {
		if row := rows["p-1|"+strconv.FormatInt(start.Add(time.Duration(min)*time.Minute).UnixMilli(), 10)]; !strings.HasSuffix(row, want) {
			t.Errorf("the ping at minute %d: %q, want %s", min, row, want)
		}
	}
}

// An empty (not null) pass value is malformed, not a deletion.
func TestAnEmptyPassValueIsMalformedNotADeletion(t *testing.T) {
	addr, k, d := setup(t)
	now := time.Now().UTC()
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{orderMsg("p-1")})
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Passes, []kafka.Message{passMsg("X-1", "p-1", now.Add(-time.Hour), now.Add(time.Hour)),
		{Key: []byte("X-1"), Value: []byte{}}})
	d.Sink, d.Passes = kafkatest.NewRecorder(), processor.NewPassBook()
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.WaitFor(t, time.Minute, "the empty value dead-lettered", func() bool {
		return len(kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.PassesDLQ)[0]) == 1
	})
	if d.Passes.ByID("X-1") == nil {
		t.Error("an empty value deleted the pass")
	}
	if got := header(kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.PassesDLQ)[0][0], "qfence-reason"); got != string(processor.MalformedJSON) {
		t.Errorf("reason %q, want malformed_json", got)
	}
	svc.Stop(t)
}

// A table counts a partition as read when its position reaches the end
// offset it saw, even when the records up to there are gone (compaction,
// retention, transaction markers): it once waited for offset end-1.
func TestATableWhoseTailIsGoneStillLoads(t *testing.T) {
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.NumBrokers(1), kfake.DefaultNumPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg, k := kafkatest.KafkaAt(t, c.ListenAddrs()[0])
	kafkatest.Produce(t, c.ListenAddrs()[0], cfg.Kafka.Topics.Orders, []kafka.Message{orderMsg("p-1"), orderMsg("p-2"), orderMsg("p-3")})
	parts, err := k.Partitions(t.Context(), cfg.Kafka.Topics.Orders)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := k.EndOffsets(t.Context(), cfg.Kafka.Topics.Orders, parts[cfg.Kafka.Topics.Orders])
	if err != nil {
		t.Fatal(err)
	}
	for p, end := range ends {
		if end > 0 {
			if err := c.DeleteRecords(cfg.Kafka.Topics.Orders, int32(p), end); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	loaded := make(chan struct{})
	go func() {
		_ = k.ReadTable(ctx, cfg.Kafka.Topics.Orders, false, func(*qkafka.TableRecord) {}, func() { close(loaded) })
	}()
	select {
	case <-loaded:
	case <-ctx.Done():
		t.Fatal("a table whose records are all gone never loaded")
	}
}

// signedPass is a pass version signed with key (contract 1.4, v2): issued
// at issued, revoked at revoked (zero: not revoked); patientKey is the
// JSON key of patient_id as written.
func signedPass(t *testing.T, key ed25519.PrivateKey, id, patient, patientKey string, from, to, issued, revoked time.Time) kafka.Message {
	t.Helper()
	p := &processor.Pass{ID: id, PatientID: patient, Purpose: processor.Medical, ValidFrom: from.UnixMilli(), ValidTo: to.UnixMilli(), IssuedAt: issued.UnixMilli()}
	v := fmt.Sprintf(`{"pass_id":%q,"%s":%q,"purpose":"medical","valid_from":%q,"valid_to":%q,"issued_at":%q`,
		id, patientKey, patient, from.Format(time.RFC3339), to.Format(time.RFC3339), issued.Format(time.RFC3339))
	if !revoked.IsZero() {
		p.RevokedAt = revoked.UnixMilli()
		v += fmt.Sprintf(`,"revoked_at":%q`, revoked.Format(time.RFC3339))
	}
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, processor.SigningMessage(p)))
	return kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `%s,"signature":%q}`, v, sig)}
}

// A revocation cannot be undone by re-sending the original, and a message
// that fails its check never touches a held pass, whoever it names: the
// re-sent original is stale, an unsigned version naming someone else and
// a signed one with an unsigned revoked_at are bad_signature, all three
// dead-lettered, and the revocation stays in force, after a restart too.
// A pass whose patient_id key is escaped is judged alike while running and
// after a restart.
func TestAPassRevocationHoldsAgainstReplaysAndUnsignedVersions(t *testing.T) {
	addr, k, d := setup(t)
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	d.Parts = kafkatest.Parts(t, d.Config, time.Hour)
	d.Parts.Passes.Keys = []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}
	now := time.Now().UTC().Truncate(time.Second)
	from, to, revoked := now.Add(-time.Hour), now.Add(time.Hour), now.Add(-time.Minute)
	original := signedPass(t, key, "X-1", "p-1", "patient_id", from, to, now.Add(-2*time.Hour), time.Time{})
	revocation := signedPass(t, key, "X-1", "p-1", "patient_id", from, to, now.Add(-time.Minute), revoked)
	escaped := signedPass(t, key, "X-2", "p-1", `patient\u005fid`, from, to, now.Add(-time.Hour), time.Time{})
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{orderMsg("p-1")})
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Passes, []kafka.Message{original, revocation})
	run := func() (*kafkatest.Running, *processor.PassBook) {
		dd := *d
		dd.Sink, dd.Passes = kafkatest.NewRecorder(), processor.NewPassBook()
		svc := kafkatest.RunServiceWith(t, dd)
		kafkatest.WaitFor(t, time.Minute, "ready", func() bool { return svc.Svc.Ready(t.Context()) == "" })
		return svc, dd.Passes
	}
	svc, book := run()
	if p := book.ByID("X-1"); p == nil || p.RevokedAt != revoked.UnixMilli() {
		t.Fatalf("after the revocation the book holds %+v", p)
	}
	unsigned := passMsg("X-1", "resident-9", from, to)
	addedRevocation := kafka.Message{Key: original.Key, Value: []byte(strings.Replace(string(original.Value), `"issued_at"`, `"revoked_at":"`+now.Add(time.Hour).Format(time.RFC3339)+`","issued_at"`, 1))}
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Passes, []kafka.Message{original, unsigned, addedRevocation, escaped})
	kafkatest.WaitFor(t, time.Minute, "three dead letters", func() bool {
		return len(kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.PassesDLQ)[0]) == 3
	})
	headers, err := contract.Schema(contract.DeadLetterHeaders)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, dl := range kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.PassesDLQ)[0] {
		reasons = append(reasons, header(dl, "qfence-reason"))
		if err := contract.Validate(headers, deadLetterHeaders(dl)); err != nil {
			t.Errorf("dead letter headers %v: %v", dl.Headers, err)
		}
	}
	slices.Sort(reasons) // dead letters are produced concurrently: in any order
	if strings.Join(reasons, ",") != "bad_signature,bad_signature,stale" {
		t.Errorf("dead letters %v, want bad_signature twice and stale", reasons)
	}
	kafkatest.WaitFor(t, time.Minute, "the escaped pass held", func() bool { return book.ByID("X-2") != nil })
	if p := book.ByID("X-1"); p == nil || p.RevokedAt != revoked.UnixMilli() || p.PatientID != "p-1" {
		t.Errorf("while running the book holds %+v, want the revocation", p)
	}
	svc.Stop(t)
	svc, book = run() // read again from the start, as after a restart
	if p := book.ByID("X-1"); p == nil || p.RevokedAt != revoked.UnixMilli() || book.ByID("X-2") == nil {
		t.Errorf("after a restart the book holds %+v and X-2 %v", p, book.ByID("X-2") != nil)
	}
	svc.Stop(t)
}
