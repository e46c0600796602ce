package kafka

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/local"
)

// fetchTopic starts an embedded broker with one partition holding n
// messages (written in batches of 1000, so that a fetch from the middle of
// a batch must skip the records before its offset).
func fetchTopic(tb testing.TB, n int) (*kafka.Client, string) {
	tb.Helper()
	b, err := local.StartBroker("127.0.0.1:0", "", 1)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	tr := &kafka.Transport{MetadataTTL: time.Second}
	tb.Cleanup(tr.CloseIdleConnections)
	client := &kafka.Client{Addr: kafka.TCP(b.Addr()), Transport: tr, Timeout: 10 * time.Second}
	if _, err := client.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: "pings", NumPartitions: 1, ReplicationFactor: 1}}}); err != nil {
		tb.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr()), Topic: "pings", Transport: tr, BatchSize: 1000, BatchBytes: 4 << 20,
		RequiredAcks: kafka.RequireAll}
	defer w.Close()
	msgs := make([]kafka.Message, 0, 1000)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("p-%06d", i%100_000)
		msgs = append(msgs, kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil,
			`{"patient_id":%q,"ts":"2026-04-02T10:%02d:%02d.%03dZ","lat":55.751244,"lon":37.618423,"accuracy_m":12}`, id, i/60000%60, i/1000%60, i%1000)})
		if len(msgs) == cap(msgs) || i == n-1 {
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				tb.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	return client, "pings"
}

// The fetcher reads every message once, in order, from any offset (also
// the middle of a record batch and FirstOffset), with its key, value and
// time; an offset past the end moves to the end; CaughtUp says when the
// end is reached.
func TestFetcherReadsEverythingOnceInOrder(t *testing.T) {
	const n = 25_000
	client, topic := fetchTopic(t, n)
	for _, start := range []int64{kafka.FirstOffset, 0, 1, 4321, n - 1} {
		t.Run("from="+strconv.FormatInt(start, 10), func(t *testing.T) {
			f := newFetcher(client, topic, 0, start, local.TestLog())
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			want := max(start, 0)
			var msgs []pipeline.Message
			for want < n {
				var err error
				msgs, err = f.Fetch(ctx, msgs[:0])
				if err != nil {
					t.Fatalf("fetch at %d: %v", want, err)
				}
				if len(msgs) == 0 {
					t.Fatalf("fetch at %d returned nothing", want)
				}
				for _, m := range msgs {
					if m.Offset != want {
						t.Fatalf("offset %d, want %d", m.Offset, want)
					}
					id := fmt.Sprintf("p-%06d", want%100_000)
					if string(m.Key) != id || len(m.Value) < 20 || string(m.Value[15:23]) != id || m.Time.IsZero() {
						t.Fatalf("message %d: key %q value %q time %v", want, m.Key, m.Value, m.Time)
					}
					want++
				}
			}
			if !f.CaughtUp(ctx) {
				t.Error("not caught up at the end")
			}
		})
	}
	t.Run("past-the-end", func(t *testing.T) {
		f := newFetcher(client, topic, 0, n+500, local.TestLog())
		ctx, cancel := context.WithTimeout(context.Background(), 3*fetchMaxWait)
		defer cancel()
		msgs, err := f.Fetch(ctx, nil)
		if len(msgs) != 0 || ctx.Err() == nil {
			t.Fatalf("got %d messages, err %v; want none until the deadline", len(msgs), err)
		}
		if got := f.next.Load(); got != n {
			t.Errorf("next = %d, want the end %d", got, n)
		}
		if !f.CaughtUp(context.Background()) {
			t.Error("not caught up at the end")
		}
	})
}

// BenchmarkFetch reads 1M pings of one partition from an embedded broker
// with the fetcher qfence uses and, in the same run, with kafka-go's
// Reader (what it used before): messages per second and the ratio.
//
//	go test -run '^$' -bench Fetch -benchtime 1x -count 5 ./sinks/kafka/
func BenchmarkFetch(b *testing.B) {
	const n = 1_000_000
	client, topic := fetchTopic(b, n)
	addr := client.Addr.String()
	for b.Loop() {
		start := time.Now()
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, Partition: 0,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 1500 * time.Millisecond, QueueCapacity: 4096})
		for i := 0; i < n; i++ {
			if _, err := r.FetchMessage(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		r.Close()
		reader := float64(n) / time.Since(start).Seconds()

		start = time.Now()
		f := newFetcher(client, topic, 0, kafka.FirstOffset, local.TestLog())
		var msgs []pipeline.Message
		for got := 0; got < n; got += len(msgs) {
			var err error
			if msgs, err = f.Fetch(context.Background(), msgs[:0]); err != nil {
				b.Fatal(err)
			}
		}
		fetcher := float64(n) / time.Since(start).Seconds()
		b.ReportMetric(fetcher, "fetcher-msgs/s")
		b.ReportMetric(reader, "reader-msgs/s")
		b.ReportMetric(fetcher/reader, "ratio-vs-reader")
	}
}

// A gateway that produces pings in transactions leaves a commit marker
// after each: the fetcher hands over the pings, steps past the marker
// (it yields no record) and is caught up at the end, instead of asking for
// the marker's offset again and again.
func TestFetcherStepsPastTransactionMarkers(t *testing.T) {
	client, topic := fetchTopic(t, 10)
	cl, err := kgo.NewClient(kgo.SeedBrokers(client.Addr.String()), kgo.TransactionalID("gateway"), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for txn := range 2 {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			id := fmt.Sprintf("p-%06d", 100+3*txn+i)
			if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(id), Value: []byte(`{"patient_id":"` + id + `"}`)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	f := newFetcher(client, topic, 0, 10, local.TestLog())
	var got []string
	for len(got) < 6 {
		msgs, err := f.Fetch(ctx, nil)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		for _, m := range msgs {
			got = append(got, string(m.Key))
		}
	}
	if want := "p-000100 p-000101 p-000102 p-000103 p-000104 p-000105"; fmt.Sprint(strings.Join(got, " ")) != want {
		t.Fatalf("fetched %v, want %s", got, want)
	}
	// Nothing more to read: the fetch waits, past the last marker.
	wctx, wcancel := context.WithTimeout(ctx, 3*fetchMaxWait)
	defer wcancel()
	if msgs, err := f.Fetch(wctx, nil); len(msgs) != 0 || wctx.Err() == nil {
		t.Fatalf("fetched %d more messages (err %v), want none", len(msgs), err)
	}
	if end := f.hwm.Load(); f.next.Load() != end || end != 18 { // 10 + 2 × (3 pings + a marker)
		t.Errorf("next %d, high watermark %d; want both 18", f.next.Load(), end)
	}
	if !f.CaughtUp(ctx) {
		t.Error("not caught up after the last marker")
	}
}

// A committed offset that retention deleted meanwhile: the fetcher goes
// on from the oldest ping kept (and says how many were lost) instead of
// failing the partition.
func TestFetcherGoesOnFromTheOldestKept(t *testing.T) {
	client, topic := fetchTopic(t, 5000)
	cl, err := kgo.NewClient(kgo.SeedBrokers(client.Addr.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Offset = 3000
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode); err != nil {
		t.Fatal(err)
	}
	f := newFetcher(client, topic, 0, 100, local.TestLog())
	msgs, err := f.Fetch(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) == 0 || msgs[0].Offset != 3000 {
		t.Fatalf("first message fetched at %v, want offset 3000", msgs)
	}
}
