package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
)

// Producer produces events and dead letters: the processor's Producer. Each
// Produce runs on a goroutine the Producer owns (Close waits for them) and
// retries with backoff until the broker acknowledges or the Producer stops,
// so a Kafka outage delays events but loses none.
type Producer struct {
	k       *Client
	w       *kafka.Writer
	ctx     context.Context // the Producer's lifetime: retries stop when it ends
	stop    context.CancelFunc
	wg      sync.WaitGroup
	metrics *edge.Metrics
}

// NewProducer makes a producer with the Java client's key partitioner
// (murmur2), so other clients agree on which partition holds a patient, and
// acks from all in-sync replicas.
func (k *Client) NewProducer(metrics *edge.Metrics) *Producer {
	ctx, stop := context.WithCancel(context.Background())
	return &Producer{k: k, ctx: ctx, stop: stop, metrics: metrics, w: &kafka.Writer{
		Addr: kafka.TCP(k.brokers...), Transport: k.transport, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond, BatchSize: 1000, BatchBytes: maxBatchBytes,
		MaxAttempts: 3, WriteTimeout: 10 * time.Second, AllowAutoTopicCreation: false,
	}}
}

// maxBatchBytes bounds a produce request below Kafka's default
// max.message.bytes (1048588), so that a batch of dead letters, each of
// them fine, is never refused as a whole (and retried for ever).
const maxBatchBytes = 1_000_000

// Produce implements pipeline.Producer. The records are copied into the
// writer's messages before Produce returns.
func (p *Producer) Produce(_ context.Context, records []pipeline.Record, done func(error)) {
	msgs := make([]kafka.Message, len(records))
	limit := min(p.k.MaxRecord(), maxBatchBytes) - recordOverhead
	for i, r := range records {
		msgs[i] = message(r)
		if isDeadLetter(msgs[i]) {
			msgs[i] = fit(msgs[i], limit)
		}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		done(p.write(msgs))
	}()
}

// maxKeptKey is how much of an oversized dead letter's key is kept.
const maxKeptKey = 1024

// recordOverhead is room for a record's framing and its batch's header.
const recordOverhead = 4096

// message is record r as kafka-go writes it.
func message(r pipeline.Record) kafka.Message {
	m := kafka.Message{Topic: r.Topic, Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
	}
	return m
}

func isDeadLetter(m kafka.Message) bool {
	return len(m.Headers) > 0 && m.Headers[0].Key == "qfence-reason"
}

// fit truncates a dead letter too large for the topic and says so in a
// header: a dead letter must always be deliverable, and what matters in it
// is where it came from and why (its headers), more than all its bytes.
func fit(m kafka.Message, limit int) kafka.Message {
	size := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		size += len(h.Key) + len(h.Value)
	}
	if size <= limit {
		return m
	}
	if len(m.Key) > maxKeptKey {
		size -= len(m.Key) - maxKeptKey
		m.Headers = append(m.Headers, kafka.Header{Key: "qfence-key-truncated", Value: strconv.AppendInt(nil, int64(len(m.Key)), 10)})
		m.Key = m.Key[:maxKeptKey]
	}
	keep := max(limit-(size-len(m.Value))-64, 0)
	m.Headers = append(m.Headers, kafka.Header{Key: "qfence-truncated", Value: strconv.AppendInt(nil, int64(len(m.Value)), 10)})
	m.Value = m.Value[:min(keep, len(m.Value))]
	return m
}

// write retries until every message is acknowledged. A retry resends what
// the broker did not acknowledge (or the whole set, when it does not say):
// what was already written is written again with the same event ids,
// which is what at-least-once allows. A record the broker refuses as too
// large can never be written: it goes to the dead-letter topic instead,
// cut to fit (refused), so that one record cannot jam its partition's
// commits for ever.
func (p *Producer) write(msgs []kafka.Message) error {
	for attempt := 0; ; attempt++ {
		start := time.Now()
		err := p.w.WriteMessages(p.ctx, msgs...)
		if err == nil {
			p.metrics.ObserveFlush("kafka", start, len(msgs))
			return nil
		}
		var we kafka.WriteErrors
		if errors.As(err, &we) && len(we) == len(msgs) {
			var again []kafka.Message
			for i, e := range we {
				switch {
				case e == nil:
				case errors.Is(e, kafka.MessageSizeTooLarge):
					again = append(again, p.refused(msgs[i]))
				default:
					again = append(again, msgs[i])
				}
			}
			msgs = again
		}
		p.metrics.SinkErrors.WithLabelValues("kafka").Inc()
		if p.ctx.Err() != nil {
			return fmt.Errorf("produce %d records: stopped before they were acknowledged: %w", len(msgs), err)
		}
		if attempt == 0 || attempt%20 == 0 {
			p.k.log.Warn("produce failed; retrying", "records", len(msgs), "attempt", attempt+1, "err", err)
		}
		_ = edge.Sleep(p.ctx, edge.Backoff(attempt))
	}
}

// refused is the dead letter of a record the broker refused as too large:
// an output record (an event, a notification) becomes a copy on pings-dlq
// naming the topic it was meant for (partition and offset 0: it has no
// source offset of its own), cut to a quarter of the largest record the
// broker said it takes; a dead letter refused again is cut further.
func (p *Producer) refused(m kafka.Message) kafka.Message {
	limit := max(min(p.k.MaxRecord(), maxBatchBytes)/4-recordOverhead, 1024)
	if !isDeadLetter(m) {
		p.k.log.Warn("the broker refused a record as too large; it goes to the dead-letter topic", "topic", m.Topic, "bytes", len(m.Value))
		m = message(pipeline.DeadLetter(p.k.cfg.Topics.PingsDLQ, m.Topic, 0, 0, m.Key, m.Value, &processor.Reject{Reason: processor.TooLarge,
			Msg: "the broker refused this record for " + m.Topic + " as too large (check the topic's max.message.bytes, or notifications.max_text_bytes)"}))
	} else {
		limit = min(limit, len(m.Value)/2)
	}
	return fit(m, limit)
}

// Close stops retrying, waits for the goroutines and closes the writer.
// Call it after the partitions have drained.
func (p *Producer) Close() error {
	p.stop()
	p.wg.Wait()
	return p.w.Close()
}

// Publish writes msgs to topic as a phone gateway or an order system would:
// keyed with the Java client's partitioner, acknowledged by all in-sync
// replicas, over the same TLS and SASL as every other connection. It goes
// at most rate messages per second (0: as fast as the broker takes them),
// prints progress to w (when not nil) every few seconds, and retries a
// failed write for 20 s (a topic just created may take a moment to be
// everywhere). qfence-sim, the demo and the tests publish through it; qfence
// run does not.
func (k *Client) Publish(ctx context.Context, topic string, msgs []kafka.Message, rate int, w io.Writer) error {
	wr := &kafka.Writer{Addr: kafka.TCP(k.brokers...), Topic: topic, Transport: k.transport, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchSize: 2000, BatchTimeout: 2 * time.Millisecond, BatchBytes: 900 << 10}
	defer wr.Close()
	chunk := 20_000
	if rate > 0 { // small enough to pace smoothly
		chunk = min(max(rate/10, 100), chunk)
	}
	start, last := time.Now(), time.Now()
	for i := 0; i < len(msgs); i += chunk {
		batch := msgs[i:min(len(msgs), i+chunk)]
		var failing time.Time // when this chunk's writes began to fail
		for {
			err := wr.WriteMessages(ctx, batch...)
			if err == nil {
				break
			}
			if failing.IsZero() {
				failing = time.Now()
			}
			if ctx.Err() != nil || time.Since(failing) > 20*time.Second {
				return fmt.Errorf("publish to %s: %.300v", topic, err)
			}
			if err := edge.Sleep(ctx, 250*time.Millisecond); err != nil {
				return err
			}
		}
		done := i + len(batch)
		if rate > 0 { // pace: where we should be by now
			if ahead := time.Duration(float64(done)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				if err := edge.Sleep(ctx, ahead); err != nil {
					return err
				}
			}
		}
		if w != nil && (time.Since(last) > 5*time.Second || done == len(msgs)) {
			last = time.Now()
			fmt.Fprintf(w, "  %s: %d/%d messages (%.0f%%), %.0f/s\n", topic, done, len(msgs), 100*float64(done)/float64(len(msgs)),
				float64(done)/time.Since(start).Seconds())
		}
	}
	return nil
}
