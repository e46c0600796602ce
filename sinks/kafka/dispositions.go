package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
)

// DispositionsGroup is the consumer group of the dispositions topic for a
// qfence group id: a group of its own, so that its offsets move only when
// its rows are stored, whatever the pings do.
func DispositionsGroup(groupID string) string { return groupID + "-dispositions" }

// Dispositions consumes the dispositions topic (contract 1.5): each valid
// disposition is stored, each invalid one dead-lettered with the headers of
// 1.1, and a batch's offsets are committed only once both are
// acknowledged, so a crash at any point loses none (what is read again
// collapses on disposition_id).
type Dispositions struct {
	Kafka    *Client
	Producer pipeline.Producer
	// Store inserts dispositions, returning once they are stored.
	Store func(context.Context, []processor.Disposition) error
	// Stored hears each stored disposition (the metric).
	Stored   func(*processor.Disposition)
	Rejected func(processor.Reason)
	Log      *slog.Logger
	MaxBytes int
	// Wait is how long a batch waits for more after its first message.
	Wait time.Duration
}

// dispositionBatch bounds the messages stored in one insert.
const dispositionBatch = 1000

// Run consumes until ctx ends.
func (d *Dispositions) Run(ctx context.Context) error {
	cfg := d.Kafka.cfg
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: d.Kafka.brokers, GroupID: DispositionsGroup(cfg.GroupID), Topic: cfg.Topics.Dispositions,
		Dialer: d.Kafka.dialer, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 500 * time.Millisecond, StartOffset: kafka.FirstOffset,
		SessionTimeout: cfg.SessionTimeout, HeartbeatInterval: cfg.HeartbeatInterval, ReadBackoffMax: time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			d.Log.Debug("dispositions reader", "msg", fmt.Sprintf(msg, args...))
		})})
	defer r.Close()
	wait := d.Wait
	if wait == 0 {
		wait = 200 * time.Millisecond
	}
	for {
		msgs, err := d.fetch(ctx, r, wait)
		if err != nil {
			return nil // ctx ended: what was fetched is read again
		}
		if err := d.handle(ctx, msgs); err != nil {
			return nil
		}
		for attempt := 0; ; attempt++ {
			err := r.CommitMessages(ctx, msgs...)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			d.Log.Warn("committing the dispositions' offsets failed; retrying", "err", err)
			_ = edge.Sleep(ctx, edge.Backoff(attempt))
		}
	}
}

// fetch waits for a message, then takes what follows within wait.
func (d *Dispositions) fetch(ctx context.Context, r *kafka.Reader, wait time.Duration) ([]kafka.Message, error) {
	m, err := r.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	msgs := []kafka.Message{m}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for len(msgs) < dispositionBatch {
		m, err := r.FetchMessage(wctx)
		if err != nil {
			break
		}
		msgs = append(msgs, m)
	}
	return msgs, ctx.Err()
}

// handle stores the valid dispositions of msgs and dead-letters the rest,
// returning once both are acknowledged (or ctx ended).
func (d *Dispositions) handle(ctx context.Context, msgs []kafka.Message) error {
	var good []processor.Disposition
	var bad []pipeline.Record
	topic, dlq := d.Kafka.cfg.Topics.Dispositions, d.Kafka.cfg.Topics.DispositionsDLQ
	for _, m := range msgs {
		disp, err := processor.DecodeDisposition(m.Key, m.Value, d.MaxBytes)
		var rj *processor.Reject
		if errors.As(err, &rj) {
			d.Log.Warn("disposition rejected", "partition", m.Partition, "offset", m.Offset, "reason", rj.Reason)
			if d.Rejected != nil {
				d.Rejected(rj.Reason)
			}
			bad = append(bad, pipeline.DeadLetter(dlq, topic, m.Partition, m.Offset, m.Key, m.Value, rj))
			continue
		}
		good = append(good, *disp)
	}
	acked := make(chan error, 1)
	if len(bad) > 0 {
		d.Producer.Produce(ctx, bad, func(err error) { acked <- err })
	} else {
		acked <- nil
	}
	for attempt := 0; len(good) > 0; attempt++ {
		err := d.Store(ctx, good)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt%10 == 0 {
			d.Log.Warn("storing dispositions failed; retrying (they are read again if qfence stops)", "dispositions", len(good), "err", err)
		}
		_ = edge.Sleep(ctx, edge.Backoff(attempt))
	}
	for i := range good {
		if d.Stored != nil {
			d.Stored(&good[i])
		}
	}
	select {
	case err := <-acked:
		if err != nil {
			return err // the producer stopped: read again at the next start
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// PublishDisposition produces one disposition to the dispositions topic,
// keyed by its event, and returns once the broker acknowledged it (the
// API answers only then).
func (k *Client) PublishDisposition(ctx context.Context, p pipeline.Producer, d *processor.Disposition) error {
	acked := make(chan error, 1)
	p.Produce(ctx, []pipeline.Record{{Topic: k.cfg.Topics.Dispositions, Key: []byte(d.EventID), Value: d.AppendJSON(nil)}},
		func(err error) { acked <- err })
	select {
	case err := <-acked:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
