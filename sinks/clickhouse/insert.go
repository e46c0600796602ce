package clickhouse

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
)

// send checks that the batch holds every row before sending it.
func send(b driver.Batch, want int, table string) error {
	if got := b.Rows(); got != want {
		_ = b.Abort()
		return fmt.Errorf("BUG: %s batch holds %d rows, want %d", table, got, want)
	}
	return b.Send()
}

func (c *Sink) id(patient string) string {
	if c.pseudo == nil {
		return patient
	}
	return c.pseudo.of(patient)
}

// appendTime appends a millisecond time as DateTime64, or DateTime plus ms.
func (c *Sink) appendTime(vals []any, ms int64) []any {
	t := time.UnixMilli(ms).UTC()
	if c.schema.F.DateTime64 {
		return append(vals, t)
	}
	return append(vals, t.Truncate(time.Second), uint16(ms%1000))
}

// insertPings sends the chunks as one INSERT, a native block per chunk,
// each checked to hold the chunk's rows. The column order is
// Schema.Columns("pings").
func (c *Sink) insertPings(ctx context.Context, chunks []*pingColumns) error {
	b, err := c.conn.PrepareBatch(ctx, c.schema.Insert("pings"))
	if err != nil {
		return err
	}
	inserted := c.inserted[:0] // DateTime: Unix seconds
	now := time.Now().Unix()
	for range chunkRows {
		inserted = append(inserted, now)
	}
	c.inserted = inserted
	cols := make([]any, 0, 16)
	for _, p := range chunks {
		n := p.len()
		ids := p.ids
		if c.pseudo != nil {
			ids = c.ids[:0]
			for _, id := range p.ids {
				ids = append(ids, c.pseudo.of(id))
			}
			c.ids = ids
		}
		cols = append(cols[:0], ids, p.ts)
		if !c.schema.F.DateTime64 {
			cols = append(cols, p.ms)
		}
		cols = append(cols, p.lat, p.lon, p.acc, p.state, p.dist, p.district, p.zone, p.inBreach, p.flag, p.mock, p.dev, p.src, inserted[:n])
		for i, col := range cols {
			if err := b.Column(i).Append(col); err != nil {
				_ = b.Abort()
				return fmt.Errorf("append pings column %s: %w", c.schema.Columns("pings")[i], err)
			}
		}
		if got := b.Rows(); got != n {
			_ = b.Abort()
			return fmt.Errorf("BUG: pings block holds %d rows, want %d", got, n)
		}
		if err := b.Flush(); err != nil {
			_ = b.Abort()
			return err
		}
	}
	return b.Send()
}

func (c *Sink) insertEvents(ctx context.Context, events []processor.Event) error {
	b, err := c.conn.PrepareBatch(ctx, c.schema.Insert("events"))
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	vals := make([]any, 0, 32)
	for i := range events {
		e := &events[i]
		var ended *time.Time
		if e.EndedAt != 0 {
			t := time.UnixMilli(e.EndedAt).UTC()
			if !c.schema.F.DateTime64 {
				t = t.Truncate(time.Second)
			}
			ended = &t
		}
		vals = append(vals[:0], e.IDString(), e.Type.String(), c.id(e.PatientID))
		vals = c.appendTime(vals, e.At)
		vals = c.appendTime(vals, e.StartedAt)
		vals = append(vals, ended, e.DurationS, e.Reason, e.Location.Lat, e.Location.Lon, e.Location.Accuracy, e.Location.Distance,
			e.MaxDistance, e.Home[1], e.Home[0], e.RadiusM, e.District, e.Zone, string(processor.AppendEvidenceJSON(nil, e.Evidence)), now)
		if err := b.Append(vals...); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append event: %w", err)
		}
	}
	return send(b, len(events), "events")
}

func (c *Sink) insertOrders(ctx context.Context, rows []pipeline.OrderRow) error {
	b, err := c.conn.PrepareBatch(ctx, c.schema.Insert("orders"))
	if err != nil {
		return err
	}
	for _, r := range rows {
		o := &r.Order
		var ends *time.Time
		if !o.Open() && o.EndsAt != 0 {
			t := time.UnixMilli(o.EndsAt).UTC()
			ends = &t
		}
		if err := b.Append(c.id(o.PatientID), orderVersion(r), b2u(r.Revoked), o.Home[1], o.Home[0], o.RadiusM,
			time.UnixMilli(o.StartsAt).UTC(), ends, o.District, r.Received.UTC()); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append order: %w", err)
		}
	}
	return send(b, len(rows), "orders")
}

// orderVersion identifies an order version by its content, so reading the
// orders topic again writes the same rows, which collapse.
func orderVersion(r pipeline.OrderRow) uint64 {
	h := fnv.New64a()
	o := &r.Order
	fmt.Fprintf(h, "%s|%v|%v|%v|%d|%d|%s|%v", o.PatientID, o.Home[0], o.Home[1], o.RadiusM, o.StartsAt, o.EndsAt, o.District, r.Revoked)
	return h.Sum64()
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
