package pipeline

import (
	"context"
	"strconv"
	"time"

	"github.com/qfence/qfence/processor"
)

// Message is one record read from the pings topic.
type Message struct {
	Offset int64
	Key    []byte
	Value  []byte
	Time   time.Time // the broker's append time
}

// Record is one message to produce.
type Record struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
}

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Fetcher reads one partition in offset order.
type Fetcher interface {
	// Fetch appends the next messages, at least one, to dst, waiting for
	// them (a whole broker response at once: one hand-off per response, not
	// per message).
	Fetch(ctx context.Context, dst []Message) ([]Message, error)
	// CaughtUp reports whether the fetcher has read everything the broker
	// has (and the broker answers): only then may an idle partition's
	// watermark follow the wall clock.
	CaughtUp(ctx context.Context) bool
}

// Sink stores the pings, events and notifications of a batch
// (ClickHouse). Write copies what it keeps before it returns (rows alias
// the messages) and calls done exactly once: nil when everything is
// durable, an error when it gave up (only when stopping).
type Sink interface {
	Write(ctx context.Context, b *Output, done func(error))
}

// Output is what a batch gives the sink to store.
type Output struct {
	Rows          []processor.Track
	Events        []processor.Event
	Notifications []processor.Notification
}

// Len is the number of rows of all kinds.
func (o *Output) Len() int { return len(o.Rows) + len(o.Events) + len(o.Notifications) }

// Producer produces records (events, dead letters) and calls done exactly
// once, when all of them are acknowledged or it gave up.
type Producer interface {
	Produce(ctx context.Context, records []Record, done func(error))
}

// Checkpointer writes changelog records to the partition's state
// partition, and Committer commits the partition's next offset. Both return
// once the broker has acknowledged.
type Checkpointer interface {
	Checkpoint(ctx context.Context, partition int, records []processor.StateRecord) error
}

// Committer commits consumer-group offsets.
type Committer interface {
	Commit(ctx context.Context, partition int, next int64) error
}

// Topics names what the loop produces to.
type Topics struct {
	Pings, Violations, PingsDLQ, Notifications string
}

// OrderRow is one order version as received, or a revocation: what the
// orders reader hands to an archive (the ClickHouse orders table).
type OrderRow struct {
	Order    *processor.Order // immutable: shared, not copied
	Revoked  bool
	Received time.Time
}

// PassRow is one pass version as received, or a deletion: what the passes
// reader hands to an archive (the ClickHouse passes table).
type PassRow struct {
	Pass     processor.Pass
	Deleted  bool
	Received time.Time
}

// AuditRow is one request to the API, allowed or refused: who (the
// token's role and name, never the token), what, and the answer.
type AuditRow struct {
	At        time.Time
	Role      string // "" when no valid token was presented
	TokenName string
	Method    string
	Path      string
	Status    uint16
	Remote    string
}

// DeadLetter is the copy of a rejected message for the dead-letter topic
// dlq: key and value unchanged, and the contract's headers saying where it
// came from and why (the reason first: the Kafka edge knows a dead letter by
// it).
func DeadLetter(dlq, topic string, partition int, offset int64, key, value []byte, rj *processor.Reject) Record {
	return Record{Topic: dlq, Key: key, Value: value, Headers: []Header{
		{Key: "qfence-reason", Value: []byte(rj.Reason)},
		{Key: "qfence-error", Value: []byte(rj.Msg)},
		{Key: "qfence-topic", Value: []byte(topic)},
		{Key: "qfence-partition", Value: strconv.AppendInt(nil, int64(partition), 10)},
		{Key: "qfence-offset", Value: strconv.AppendInt(nil, offset, 10)},
	}}
}
