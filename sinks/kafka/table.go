package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/qfence/qfence/sinks/edge"
)

// TableRecord is one record of a compacted topic read as a table.
type TableRecord struct {
	Partition int
	Offset    int64
	Key       []byte
	// Value is the record's value; Tombstone is set when it is null (a
	// delete). An empty, non-null value is not a tombstone: it is a
	// malformed message.
	Value     []byte
	Tombstone bool
	Time      time.Time
}

// ReadTable reads every partition of a compacted topic from its first
// offset with no consumer group (every instance holds the whole table),
// calling apply for each record in offset order per partition, and loaded
// once every partition has been read up to the end offset it had at the
// start; then, with tail, it keeps tailing until ctx ends, and without, it
// returns.
//
// It fetches through the client's Fetch, not a Reader: the Reader hands
// out a null value and an empty one alike, and only a null one deletes. A
// partition counts as read when the position reaches the end offset, or
// when a fetch comes back empty with the high watermark at the end
// (compaction can remove the last records, and transaction markers have
// offsets but no record).
func (k *Client) ReadTable(ctx context.Context, topic string, tail bool, apply func(*TableRecord), loaded func()) error {
	parts, err := k.Partitions(ctx, topic)
	if err != nil {
		return err
	}
	n := parts[topic]
	ends, err := k.EndOffsets(ctx, topic, n)
	if err != nil {
		return err
	}
	var left atomic.Int32
	left.Store(int32(n))
	caughtUp := func() {
		if left.Add(-1) == 0 {
			loaded()
		}
	}
	if n == 0 {
		loaded()
	}
	eg, ctx := errgroup.WithContext(ctx)
	for p := range n {
		eg.Go(func() error { return k.readTablePartition(ctx, topic, p, ends[p], tail, apply, caughtUp) })
	}
	return eg.Wait()
}

// tableProgressEvery spaces the progress lines of a table's load.
const tableProgressEvery = 5 * time.Second

func (k *Client) readTablePartition(ctx context.Context, topic string, p int, end int64, tail bool, apply func(*TableRecord), caughtUp func()) error {
	pos, done := int64(kafka.FirstOffset), false
	if end <= 0 {
		done = true
		caughtUp()
		if !tail {
			return nil
		}
	}
	var rec TableRecord
	// A long load says how far it got every few seconds, so that a slow
	// start-up can be told from a stuck one.
	start, shown, read := time.Now(), time.Now(), 0
	for attempt := 0; ; {
		if !done && time.Since(shown) >= tableProgressEvery {
			shown = time.Now()
			k.log.Info("reading a table topic", "topic", topic, "partition", p, "offset", max(pos, 0), "end", end, "records", read,
				"elapsed", time.Since(start).Round(time.Second))
		}
		res, err := k.client.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: p, Offset: pos,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: time.Second})
		if err == nil {
			err = res.Error
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			pos = kafka.FirstOffset // retention or compaction moved the log start past us
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// The broker is away: the position is kept, the fetch retried.
			if attempt%20 == 0 {
				k.log.Warn("reading a table topic failed; retrying", "topic", topic, "partition", p, "err", err)
			}
			_ = edge.Sleep(ctx, edge.Backoff(attempt))
			attempt++
			continue
		}
		attempt = 0
		got := 0
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read %s/%d at offset %d: %w", topic, p, pos, err)
			}
			if r.Offset < pos && pos >= 0 {
				continue // a batch may start before the offset asked for
			}
			rec = TableRecord{Partition: p, Offset: r.Offset, Time: r.Time, Tombstone: r.Value == nil}
			if rec.Key, err = readBytes(r.Key); err == nil {
				rec.Value, err = readBytes(r.Value)
			}
			if err != nil {
				return fmt.Errorf("read %s/%d at offset %d: %w", topic, p, r.Offset, err)
			}
			apply(&rec)
			pos = r.Offset + 1
			got++
			read++
		}
		if !done && (pos >= end || (got == 0 && res.HighWatermark >= end && pos >= 0)) {
			done = true
			caughtUp()
			if !tail {
				return nil
			}
		}
		if got == 0 && pos < 0 {
			pos = res.LogStartOffset // an empty fetch from the first offset: start there
		}
		if got == 0 && pos >= 0 && pos < res.HighWatermark {
			// Nothing came back below the high watermark: the rest was
			// compacted away or is transaction markers.
			pos = res.HighWatermark
		}
	}
}

// readBytes copies a record's key or value; nil stays nil.
func readBytes(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	v, err := kafka.ReadAll(b)
	if v == nil && err == nil {
		v = []byte{}
	}
	return v, err
}
