package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
)

// Fetch sizes: a response is at most fetchMaxBytes (about 1,800 pings, a
// decision batch; 1 MiB drained no faster and peaked 20 MiB higher,
// BENCHMARKS.md) and the broker holds an empty fetch for fetchMaxWait.
const (
	fetchMaxBytes = 256 << 10
	fetchMaxWait  = 1500 * time.Millisecond
	// arenaBlock is the block the keys and values of fetched records are
	// copied into, one allocation for many messages.
	arenaBlock = 64 << 10
	// fetchRetryMax caps the backoff between failed fetches.
	fetchRetryMax = 2 * time.Second
)

// fetcher reads one partition with fetch requests of its own (kafka-go's
// Client.Fetch) and hands a response's messages over whole: kafka-go's
// Reader sends every message through a channel and sets a socket deadline
// and allocates a key and a value per message, which was a fifth of
// qfence's CPU in a backlog drain (BENCHMARKS.md). While the broker is away
// it retries with backoff, so a broker restart pauses the partition
// instead of ending it.
type fetcher struct {
	client    *kafka.Client
	topic     string
	partition int
	log       *slog.Logger
	// next is the offset to fetch from (kafka.FirstOffset until the first
	// response says where the log starts). Only the Fetch goroutine moves
	// it; CaughtUp reads it.
	next atomic.Int64
	// hwm is the partition's high watermark in the last response, and ok
	// when that response came (Unix ns; 0: none yet).
	hwm atomic.Int64
	ok  atomic.Int64
	// arena holds the keys and values of fetched messages: a message
	// aliases it (the pipeline's Sink copies what it keeps), and a block
	// is left to the garbage collector when full, never reused.
	arena []byte
}

func newFetcher(client *kafka.Client, topic string, partition int, offset int64, log *slog.Logger) *fetcher {
	f := &fetcher{client: client, topic: topic, partition: partition, log: log}
	f.next.Store(offset)
	f.hwm.Store(-1)
	return f
}

// Fetch appends the next messages (at least one) to dst, waiting for them.
func (f *fetcher) Fetch(ctx context.Context, dst []pipeline.Message) ([]pipeline.Message, error) {
	for attempt := 0; ; {
		n := len(dst)
		var err error
		dst, err = f.fetch(ctx, dst)
		switch {
		case err == nil && len(dst) > n:
			return dst, nil
		case err == nil:
			continue // nothing new within fetchMaxWait: ask again
		case ctx.Err() != nil:
			return dst, ctx.Err()
		}
		if attempt%20 == 0 {
			f.log.Warn("fetch failed; retrying", "offset", f.next.Load(), "attempt", attempt+1, "err", err)
		}
		// At most 2 s between tries (the Reader's pace): a retry is one
		// request, and a partition waiting for a broker that came back
		// should not sleep the full backoff of a longer outage.
		if err := edge.Sleep(ctx, min(edge.Backoff(attempt), fetchRetryMax)); err != nil {
			return dst, err
		}
		attempt++
	}
}

// fetch makes one fetch request and appends what it returned; on an error
// it appends nothing (next has not moved, so the retry asks again).
func (f *fetcher) fetch(ctx context.Context, dst []pipeline.Message) ([]pipeline.Message, error) {
	next, n := f.next.Load(), len(dst)
	// The request's own deadline: a broker that stops answering (a black
	// hole) fails the fetch instead of hanging it.
	rctx, cancel := context.WithTimeout(ctx, fetchMaxWait+10*time.Second)
	defer cancel()
	resp, err := f.client.Fetch(rctx, &kafka.FetchRequest{Topic: f.topic, Partition: f.partition, Offset: next,
		MinBytes: 1, MaxBytes: fetchMaxBytes, MaxWait: fetchMaxWait})
	if err != nil {
		return dst, err
	}
	if resp.Error != nil {
		if errors.Is(resp.Error, kafka.OffsetOutOfRange) {
			return dst, f.outOfRange(ctx, next)
		}
		return dst, resp.Error
	}
	for {
		r, err := resp.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return dst[:n], fmt.Errorf("read records of %s/%d at offset %d: %w", f.topic, f.partition, next, err)
		}
		if next >= 0 && r.Offset < next { // a record batch may start before the offset asked for
			closeBytes(r.Key)
			closeBytes(r.Value)
			continue
		}
		key, err := f.copy(r.Key)
		var value []byte
		if err == nil {
			value, err = f.copy(r.Value)
		}
		if err != nil {
			return dst[:n], fmt.Errorf("read record %d of %s/%d: %w", r.Offset, f.topic, f.partition, err)
		}
		dst = append(dst, pipeline.Message{Offset: r.Offset, Key: key, Value: value, Time: r.Time})
		next = r.Offset + 1
	}
	if next == kafka.FirstOffset && resp.LogStartOffset >= 0 { // an empty log: it starts where it will
		next = resp.LogStartOffset
	}
	// A transaction's commit or abort marker is a batch of its own that
	// yields no record: step past it, or the same fetch would be asked for
	// again and again.
	if stream, ok := resp.Records.(*protocol.RecordStream); ok {
		for _, b := range stream.Records {
			if c, ok := b.(*protocol.ControlBatch); ok && c.BaseOffset >= next {
				next = c.BaseOffset + 1
			}
		}
	}
	f.next.Store(next)
	f.hwm.Store(resp.HighWatermark)
	f.ok.Store(time.Now().UnixNano())
	return dst, nil
}

// closeBytes releases the response's page behind a record's key or value.
func closeBytes(b kafka.Bytes) {
	if b != nil {
		b.Close()
	}
}

// copy reads b (a record's key or value; nil stays nil) into the arena and
// releases the response's page behind it.
func (f *fetcher) copy(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	n := b.Len()
	if len(f.arena)+n > cap(f.arena) {
		f.arena = make([]byte, 0, max(arenaBlock, n))
	}
	start := len(f.arena)
	f.arena = f.arena[:start+n]
	if _, err := io.ReadFull(b, f.arena[start:]); err != nil {
		f.arena = f.arena[:start]
		return nil, err
	}
	return f.arena[start : start+n : start+n], nil
}

// outOfRange moves next into the log when the offset asked for is no
// longer (or not yet) there: to the log's start when retention deleted
// what was not yet consumed (the loss is logged), to its end when the
// offset is past it, as kafka-go's Reader does.
func (f *fetcher) outOfRange(ctx context.Context, next int64) error {
	offsets, err := f.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		f.topic: {kafka.FirstOffsetOf(f.partition), kafka.LastOffsetOf(f.partition)}}})
	if err != nil {
		return fmt.Errorf("offset %d of %s/%d is out of range; listing its offsets: %w", next, f.topic, f.partition, err)
	}
	for _, p := range offsets.Topics[f.topic] {
		if p.Partition != f.partition {
			continue
		}
		if p.Error != nil {
			return fmt.Errorf("offset %d of %s/%d is out of range; listing its offsets: %w", next, f.topic, f.partition, p.Error)
		}
		switch {
		case next < p.FirstOffset:
			f.log.Warn("pings were deleted by the topic's retention before they were consumed; going on from the oldest kept",
				"lost", p.FirstOffset-next, "from", p.FirstOffset)
			f.next.Store(p.FirstOffset)
		case next > p.LastOffset:
			f.log.Warn("the committed offset is past the partition's end (was the topic recreated?); going on from its end",
				"offset", next, "end", p.LastOffset)
			f.next.Store(p.LastOffset)
		default:
			return fmt.Errorf("offset %d of %s/%d is out of range, yet inside [%d, %d]", next, f.topic, f.partition, p.FirstOffset, p.LastOffset)
		}
		return nil
	}
	return fmt.Errorf("offset %d of %s/%d is out of range and the broker did not list the partition", next, f.topic, f.partition)
}

// CaughtUp reports whether the last fetch, a recent one, reached the
// partition's high watermark.
func (f *fetcher) CaughtUp(context.Context) bool {
	ok := f.ok.Load()
	return ok != 0 && time.Since(time.Unix(0, ok)) < 2*fetchMaxWait+time.Second && f.next.Load() >= f.hwm.Load()
}
