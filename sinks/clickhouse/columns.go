package clickhouse

import (
	"encoding/hex"
	"sync"

	"github.com/qfence/qfence/processor"
)

// chunkRows is the size of a ping chunk, and so of a native block: rows
// are gathered into fixed-size chunks recycled through a pool and sent one
// block per chunk within one INSERT (the server squashes them into one
// part). Growing one slice per column to a whole flush copied it again and
// again, and a multi-megabyte copy cannot be preempted, so it stalled the
// garbage collector too (BENCHMARKS.md).
const chunkRows = 16384

var chunkPool = sync.Pool{New: func() any { return newPingColumns(chunkRows) }}

// pingColumns is a chunk of pending ping rows already in ClickHouse's
// column layout: Write converts on the partitions' goroutines, a flush
// hands the columns to the batch whole (row-by-row appends go through
// reflection and ran at a third of clickhouse-client's rate). DeviceID and
// Source are copied into the chunk's own bytes: aliasing them would keep
// every whole Kafka message alive until the insert (about 300 bytes per
// row in flight, BENCHMARKS.md).
type pingColumns struct {
	bytes               []byte // backs dev and src
	ids, district, zone []string
	pass                []string
	ts                  []int64 // Unix ms for DateTime64, Unix seconds for DateTime (what clickhouse-go takes)
	ms                  []uint16
	lat, lon            []float64
	acc, dist           []float32
	state, flag         []int8
	inBreach, mock      []uint8
	dev, src            [][]byte
	// The check-in columns: the request answered ('' none), the verdict
	// (NULL: the ping carried no check-in), the method.
	checkinID       []string
	checkinVerified []*uint8
	checkinMethod   [][]byte
}

// verdicts are what checkinVerified points at: no allocation per row.
var verdicts = [2]uint8{0, 1}

func newPingColumns(n int) *pingColumns {
	return &pingColumns{
		ids: make([]string, 0, n), district: make([]string, 0, n), zone: make([]string, 0, n), pass: make([]string, 0, n),
		ts: make([]int64, 0, n), ms: make([]uint16, 0, n), lat: make([]float64, 0, n), lon: make([]float64, 0, n),
		acc: make([]float32, 0, n), dist: make([]float32, 0, n), state: make([]int8, 0, n), flag: make([]int8, 0, n),
		inBreach: make([]uint8, 0, n), mock: make([]uint8, 0, n), dev: make([][]byte, 0, n), src: make([][]byte, 0, n),
		bytes: make([]byte, 0, 32*n), checkinID: make([]string, 0, n), checkinVerified: make([]*uint8, 0, n), checkinMethod: make([][]byte, 0, n),
	}
}

func (p *pingColumns) len() int { return len(p.ids) }

// reset empties the chunk for reuse, dropping what it references.
func (p *pingColumns) reset() {
	clear(p.ids)
	clear(p.district)
	clear(p.zone)
	clear(p.pass)
	clear(p.dev)
	clear(p.src)
	clear(p.checkinID)
	clear(p.checkinVerified)
	clear(p.checkinMethod)
	p.checkinID, p.checkinVerified, p.checkinMethod = p.checkinID[:0], p.checkinVerified[:0], p.checkinMethod[:0]
	p.bytes = p.bytes[:0]
	p.ids, p.district, p.zone, p.ts, p.ms, p.pass = p.ids[:0], p.district[:0], p.zone[:0], p.ts[:0], p.ms[:0], p.pass[:0]
	p.lat, p.lon, p.acc, p.dist = p.lat[:0], p.lon[:0], p.acc[:0], p.dist[:0]
	p.state, p.flag, p.inBreach, p.mock, p.dev, p.src = p.state[:0], p.flag[:0], p.inBreach[:0], p.mock[:0], p.dev[:0], p.src[:0]
}

func (p *pingColumns) add(r *processor.Track, datetime64 bool) {
	p.ids = append(p.ids, r.PatientID) // pseudonymised at the flush
	p.district, p.zone, p.pass = append(p.district, r.District), append(p.zone, r.Zone), append(p.pass, r.PassID)
	if datetime64 {
		p.ts = append(p.ts, r.TS)
	} else {
		p.ts, p.ms = append(p.ts, r.TS/1000), append(p.ms, uint16(r.TS%1000))
	}
	p.lat, p.lon = append(p.lat, r.Lat), append(p.lon, r.Lon)
	p.acc, p.dist = append(p.acc, r.Accuracy), append(p.dist, r.Distance)
	p.state, p.flag = append(p.state, int8(r.State)), append(p.flag, int8(r.Flag)) // the Enum8 values are the Go constants
	p.inBreach, p.mock = append(p.inBreach, b2u(r.InBreach)), append(p.mock, b2u(r.Mock))
	p.dev, p.src = append(p.dev, p.copyBytes(r.DeviceID)), append(p.src, p.copyBytes(r.Source))
	if c := &r.Checkin; !c.Present {
		p.checkinID, p.checkinVerified, p.checkinMethod = append(p.checkinID, ""), append(p.checkinVerified, nil), append(p.checkinMethod, nil)
	} else {
		id := ""
		if c.HasRequestID {
			id = hex.EncodeToString(c.RequestID[:])
		}
		p.checkinID = append(p.checkinID, id)
		p.checkinVerified = append(p.checkinVerified, &verdicts[b2u(c.Verified)])
		p.checkinMethod = append(p.checkinMethod, p.copyBytes(c.Method))
	}
}

// copyBytes copies b into the chunk's bytes. When they are full a new
// array takes over; the rows before keep the old one alive until reset.
func (p *pingColumns) copyBytes(b []byte) []byte {
	if len(p.bytes)+len(b) > cap(p.bytes) {
		p.bytes = make([]byte, 0, max(cap(p.bytes), len(b)))
	}
	start := len(p.bytes)
	p.bytes = append(p.bytes, b...)
	return p.bytes[start:len(p.bytes):len(p.bytes)]
}

// addPings appends rows to the buffer's chunks.
func (b *chBuffer) addPings(rows []processor.Track, datetime64 bool) {
	for i := range rows {
		n := len(b.pings)
		if n == 0 || b.pings[n-1].len() == chunkRows {
			b.pings = append(b.pings, chunkPool.Get().(*pingColumns))
			n++
		}
		b.pings[n-1].add(&rows[i], datetime64)
	}
	b.rows += len(rows)
}
