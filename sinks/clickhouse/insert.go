package clickhouse

import (
	"context"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
)

// deviceDomain keeps a device id's pseudonym apart from a patient id's.
const deviceDomain = "device\x00"

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
	cols := make([]any, 0, 24)
	defer c.dropViews()
	for _, p := range chunks {
		n := p.len()
		v := &c.views
		for col := range v.strs {
			v.strs[col] = p.strings(col, v.strs[col])
		}
		ids := v.strs[strPatient]
		if c.pseudo != nil {
			for i, id := range ids {
				ids[i] = c.pseudo.of(id)
			}
			// A device id (an IMEI, an advertising id) names a person as
			// surely as the patient id does.
			for i, id := range v.strs[strDevice] {
				if id != "" {
					v.strs[strDevice][i] = c.pseudo.of(deviceDomain + id)
				}
			}
		}
		v.verified, v.counted = nullable(v.verified, p.verified), nullable(v.counted, p.counted)
		v.flags = v.flags[:0]
		for _, f := range p.flag {
			v.flags = append(v.flags, flagArrays[f])
		}
		cols = append(cols[:0], ids, p.ts)
		if !c.schema.F.DateTime64 {
			cols = append(cols, p.ms)
		}
		cols = append(cols, p.lat, p.lon, p.acc, p.state, p.dist, v.strs[strDistrict], v.strs[strZone], p.inBreach, p.flag, p.mock,
			v.strs[strDevice], v.strs[strSource], inserted[:n], v.strs[strPass], v.strs[strCheckinID], v.verified, v.strs[strCheckinMethod],
			p.source, v.flags, v.counted)
		for i, col := range cols {
			if err := b.Column(i).Append(col); err != nil {
				_ = b.Abort()
				return fmt.Errorf("append pings column %s: %w", c.schema.Columns("pings")[i], err)
			}
		}
		if err := flushBlock(b, n, "pings"); err != nil {
			return err
		}
	}
	return b.Send()
}

// nullable turns a chunk's 0, 1 or noCheckin into the nullable column
// clickhouse-go takes, pointing at verdicts: no allocation per row.
func nullable(dst []*uint8, xs []int8) []*uint8 {
	dst = dst[:0]
	for _, x := range xs {
		var v *uint8
		if x != noCheckin {
			v = &verdicts[x]
		}
		dst = append(dst, v)
	}
	return dst
}

// flushBlock sends the rows appended to b so far as one native block,
// checking that it holds want rows. Every insert sends blocks of at most
// chunkRows rows: clickhouse-go encodes a block into its connection's
// buffer, which keeps the largest size it ever held (one block of the 100k
// orders read at start-up kept two of them at 6 MB).
func flushBlock(b driver.Batch, want int, table string) error {
	if got := b.Rows(); got != want {
		_ = b.Abort()
		return fmt.Errorf("BUG: %s block holds %d rows, want %d", table, got, want)
	}
	if err := b.Flush(); err != nil {
		_ = b.Abort()
		return err
	}
	return nil
}

// insertRows sends n rows as one INSERT, in blocks of at most chunkRows
// (flushBlock): row(i) gives the values of row i, in the order of
// Schema.Columns(table).
func (c *Sink) insertRows(ctx context.Context, table string, n int, row func(i int, vals []any) []any) error {
	b, err := c.conn.PrepareBatch(ctx, c.schema.Insert(table))
	if err != nil {
		return err
	}
	vals := make([]any, 0, 32)
	for i := range n {
		vals = row(i, vals[:0])
		if err := b.Append(vals...); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append a row to %s: %w", table, err)
		}
		if (i+1)%chunkRows == 0 || i+1 == n {
			if err := flushBlock(b, i%chunkRows+1, table); err != nil {
				return err
			}
		}
	}
	return b.Send()
}

// optTime is a nullable DateTime: nil for 0.
func optTime(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

func (c *Sink) insertEvents(ctx context.Context, events []processor.Event) error {
	now := time.Now().UTC()
	return c.insertRows(ctx, "events", len(events), func(i int, vals []any) []any {
		e := &events[i]
		vals = append(vals, e.IDString(), e.Type.String(), c.id(e.PatientID))
		vals = c.appendTime(vals, e.At)
		vals = c.appendTime(vals, e.StartedAt)
		vals = append(vals, c.optTime(e.EndedAt), e.DurationS, e.Reason, e.Location.Lat, e.Location.Lon, e.Location.Accuracy, e.Location.Distance,
			e.MaxDistance, e.Home[1], e.Home[0], e.RadiusM, e.District, e.Zone, string(processor.AppendEvidenceJSON(nil, e.Evidence)), now, passID(e),
			c.Rules.MarginM, c.Rules.BreachAfter.Seconds(), uint16(c.Rules.BreachMinPings))
		var conf processor.Confidence
		if e.Confidence != nil {
			conf = *e.Confidence
		}
		vals = append(vals, uint32(conf.OutsidePings), conf.MinMarginM, conf.DwellS)
		reqID := ""
		if e.RequestID != ([16]byte{}) {
			reqID = hex.EncodeToString(e.RequestID[:])
		}
		// A learned circle's valid_to is when it expires.
		expires, radius := e.ExpiresAt, float32(0)
		if m := e.Mislocation; m != nil {
			expires, radius = m.ValidTo, m.RadiusM
		}
		return append(vals, reqID, c.optTime(expires), radius, uint32(conf.NetworkPings))
	})
}

func (c *Sink) insertNotifications(ctx context.Context, notes []processor.Notification) error {
	now := time.Now().UTC()
	return c.insertRows(ctx, "notifications", len(notes), func(i int, vals []any) []any {
		n := &notes[i]
		id, ev := n.ID(), n.EventID
		text := n.Text
		if c.pseudo != nil {
			// Rendered again with the pseudonym (contract 3.3). A
			// notification made without the engine's key has none: the sink
			// then stores no text rather than the real id.
			text = n.StoredText
		}
		vals = append(vals, hex.EncodeToString(id[:]), c.id(n.PatientID), n.Kind.String())
		vals = c.appendTime(vals, n.At)
		return append(vals, hex.EncodeToString(ev[:]), c.optTime(n.ExpiresAt), text, now)
	})
}

// optTime is a nullable millisecond time in the server's time type.
func (c *Sink) optTime(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	if !c.schema.F.DateTime64 {
		t = t.Truncate(time.Second)
	}
	return &t
}

func (c *Sink) insertOrders(ctx context.Context, rows []pipeline.OrderRow) error {
	return c.insertRows(ctx, "orders", len(rows), func(i int, vals []any) []any {
		r := &rows[i]
		o := r.Order
		var ends *time.Time
		if !o.Open() {
			ends = optTime(o.EndsAt)
		}
		return append(vals, c.id(o.PatientID), orderVersion(*r), b2u(r.Revoked), o.Home[1], o.Home[0], o.RadiusM,
			time.UnixMilli(o.StartsAt).UTC(), ends, o.District, r.Received.UTC())
	})
}

// orderVersion identifies an order version by its content, so reading the
// orders topic again writes the same rows, which collapse.
func orderVersion(r pipeline.OrderRow) uint64 {
	h := fnv.New64a()
	o := r.Order
	fmt.Fprintf(h, "%s|%v|%v|%v|%d|%d|%s|%v", o.PatientID, o.Home[0], o.Home[1], o.RadiusM, o.StartsAt, o.EndsAt, o.District, r.Revoked)
	return h.Sum64()
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func passID(e *processor.Event) string {
	if e.Pass == nil {
		return ""
	}
	return e.Pass.ID
}

func (c *Sink) insertPasses(ctx context.Context, rows []pipeline.PassRow) error {
	return c.insertRows(ctx, "passes", len(rows), func(i int, vals []any) []any {
		r := &rows[i]
		p := &r.Pass
		return append(vals, p.ID, passVersion(*r), b2u(r.Deleted), c.id(p.PatientID), p.Purpose.String(), time.UnixMilli(p.ValidFrom).UTC(),
			time.UnixMilli(p.ValidTo).UTC(), p.MaxDistanceM, optTime(p.RevokedAt), optTime(p.IssuedAt), r.Received.UTC())
	})
}

// passVersion identifies a pass version by its content, like orderVersion.
func passVersion(r pipeline.PassRow) uint64 {
	h := fnv.New64a()
	p := &r.Pass
	fmt.Fprintf(h, "%s|%s|%d|%d|%d|%v|%d|%d|%v", p.ID, p.PatientID, p.Purpose, p.ValidFrom, p.ValidTo, p.MaxDistanceM, p.RevokedAt, p.IssuedAt, r.Deleted)
	return h.Sum64()
}

func (c *Sink) insertAudit(ctx context.Context, rows []pipeline.AuditRow) error {
	return c.insertRows(ctx, "api_audit", len(rows), func(i int, vals []any) []any {
		r := &rows[i]
		return append(vals, r.At.UTC(), r.Role, r.TokenName, r.Method, r.Path, r.Status, r.Remote)
	})
}

// StoreDispositions inserts dispositions now (the dispositions consumer
// commits their offsets once this returns nil; the API stores what it
// produced). A disposition stored twice collapses on disposition_id.
func (c *Sink) StoreDispositions(ctx context.Context, ds []processor.Disposition) error {
	if len(ds) == 0 {
		return nil
	}
	start := time.Now()
	now := start.UTC()
	err := c.insertRows(ctx, "dispositions", len(ds), func(i int, vals []any) []any {
		d := &ds[i]
		vals = append(vals, d.DispositionID, d.EventID, d.Decision, d.Reason, d.Comment, d.DecidedBy)
		vals = c.appendTime(vals, d.DecidedAt)
		return append(vals, d.Channel, now)
	})
	if err != nil {
		c.metrics.SinkErrors.WithLabelValues("dispositions").Inc()
		return fmt.Errorf("insert %d dispositions: %w", len(ds), err)
	}
	c.metrics.ObserveFlush("dispositions", start, len(ds))
	return nil
}
