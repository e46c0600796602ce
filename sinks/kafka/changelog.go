package kafka

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/edge"
)

// Changelog is the qfence-state topic: the processor's Checkpointer, and the
// restore of a partition's states on assignment.
type Changelog struct {
	k     *Client
	topic string
	w     *kafka.Writer
}

// NewChangelog writes each partition's states to the state partition of the
// same number.
func (k *Client) NewChangelog() *Changelog {
	return &Changelog{k: k, topic: k.cfg.Topics.State, w: &kafka.Writer{
		Addr: kafka.TCP(k.brokers...), Topic: k.cfg.Topics.State, Transport: k.transport, Balancer: samePartition{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 2 * time.Millisecond, BatchSize: checkpointChunk,
		// Under Kafka's default max.message.bytes, as the producer's: a
		// chunk of states is split into batches the broker takes (a batch
		// larger is refused as a whole, and was retried for ever).
		BatchBytes:  maxBatchBytes,
		MaxAttempts: 3, WriteTimeout: 10 * time.Second,
	}}
}

// samePartition sends a message to the partition it names.
type samePartition struct{}

func (samePartition) Balance(m kafka.Message, _ ...int) int { return m.Partition }

// checkpointChunk is how many records a checkpoint writes at a time (and
// the writer's batch). A partition's checkpoint can hold every patient of
// it; written at once, each record was copied into a kafka.Message and
// again into kafka-go's batches, 30 MB of a drain's peak.
const checkpointChunk = 10000

// Checkpoint implements pipeline.Checkpointer: it returns once the broker
// has every record, retrying until ctx ends. The records go in order, a
// chunk at a time; if it fails partway, those written stay written, which
// is safe: they are states of batches already acknowledged, and the meta
// record, last, is what a restore resumes after.
func (c *Changelog) Checkpoint(ctx context.Context, partition int, records []processor.StateRecord) error {
	msgs := make([]kafka.Message, 0, min(len(records), checkpointChunk))
	for chunk := range slices.Chunk(records, checkpointChunk) {
		msgs = msgs[:0]
		for _, r := range chunk {
			msgs = append(msgs, kafka.Message{Partition: partition, Key: []byte(r.Key), Value: r.Value})
		}
		if err := c.write(ctx, msgs); err != nil {
			return fmt.Errorf("checkpoint %d states of partition %d: %w", len(records), partition, err)
		}
	}
	return nil
}

// write writes msgs, retrying with backoff until ctx ends.
func (c *Changelog) write(ctx context.Context, msgs []kafka.Message) error {
	for attempt := 0; ; attempt++ {
		err := c.w.WriteMessages(ctx, msgs...)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if attempt%10 == 0 {
			c.k.log.Warn("writing a checkpoint to the state topic failed; retrying (the partition commits nothing meanwhile)",
				"topic", c.topic, "records", len(msgs), "attempt", attempt+1, "err", err)
		}
		if err := edge.Sleep(ctx, edge.Backoff(attempt)); err != nil {
			return err
		}
	}
}

// End is the end offset of a state partition: it moves with every
// checkpoint of whoever owns the partition.
func (c *Changelog) End(ctx context.Context, partition int) (int64, error) {
	ends, err := c.k.EndOffsets(ctx, c.topic, partition+1)
	if err != nil {
		return 0, err
	}
	return ends[partition], nil
}

// Restore reads the state partition from its start to its current end and
// calls fn for every record in order (a nil value is a tombstone).
func (c *Changelog) Restore(ctx context.Context, partition int, fn func(key string, value []byte) error) (int, error) {
	end, err := c.End(ctx, partition)
	if err != nil {
		return 0, err
	}
	firsts, err := c.k.FirstOffsets(ctx, c.topic, partition+1)
	if err != nil {
		return 0, err
	}
	if end == 0 || firsts[partition] >= end { // empty, or compacted away entirely
		return 0, nil
	}
	r, err := c.k.reader(c.topic, partition, kafka.FirstOffset)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n := 0
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return n, fmt.Errorf("restore state partition %d at record %d: %w", partition, n, err)
		}
		var v []byte
		if m.Value != nil {
			v = m.Value
		}
		if err := fn(string(m.Key), v); err != nil {
			return n, err
		}
		n++
		if m.Offset >= end-1 {
			return n, nil
		}
	}
}

// Close closes the writer.
func (c *Changelog) Close() error { return c.w.Close() }
