package clickhouse

import (
	"encoding/hex"
	"sync"
	"unsafe"

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
// reflection and ran at a third of clickhouse-client's rate).
//
// A chunk holds no pointers: every string of its rows is copied into strs
// and found by its end offset. The rows in flight are most of qfence's
// heap at a backlog (up to limits.max_inflight_rows of them); string and
// slice headers made a row 270 bytes, which the garbage collector scanned
// at every cycle, and copies make it about 100 (BENCHMARKS.md). Copying
// also keeps no Kafka message alive until the insert.
type pingColumns struct {
	strs     []byte             // the strings of every row, back to back
	ends     [nStrCols][]uint32 // per string column, the end of each row's value in strs
	ts       []int64            // Unix ms for DateTime64, Unix seconds for DateTime (what clickhouse-go takes)
	ms       []uint16
	lat, lon []float64
	acc      []float32
	dist     []float32
	state    []int8
	flag     []int8
	inBreach []uint8
	mock     []uint8
	// verified is the check-in's verdict: 0 or 1, or noCheckin (NULL);
	// counted whether it counted (contract 2.3), likewise.
	verified []int8
	counted  []int8
	source   []int8 // the source class (the Enum8 values are the Go constants)
}

// The string columns of a chunk. The check-in columns are the request
// answered (empty when none) and the method.
const (
	strPatient = iota
	strDistrict
	strZone
	strPass
	strDevice
	strSource
	strCheckinID
	strCheckinMethod
	nStrCols
)

// noCheckin is a verdict of NULL: the ping carried no check-in.
const noCheckin = -1

// flagArrays are the flags column's value for each Flag: one shared
// slice a flag, so a block's arrays allocate nothing per row.
var flagArrays = func() (a [processor.FlagKnownMislocation + 1][]string) {
	for f := range a {
		a[f] = []string{}
		if f != int(processor.FlagNone) {
			a[f] = []string{processor.Flag(f).String()}
		}
	}
	return a
}()

// verdicts are what a block's verdicts point at: no allocation per row.
var verdicts = [2]uint8{0, 1}

func newPingColumns(n int) *pingColumns {
	p := &pingColumns{
		strs: make([]byte, 0, 32*n),
		ts:   make([]int64, 0, n), ms: make([]uint16, 0, n), lat: make([]float64, 0, n), lon: make([]float64, 0, n),
		acc: make([]float32, 0, n), dist: make([]float32, 0, n), state: make([]int8, 0, n), flag: make([]int8, 0, n),
		inBreach: make([]uint8, 0, n), mock: make([]uint8, 0, n), verified: make([]int8, 0, n),
		counted: make([]int8, 0, n), source: make([]int8, 0, n),
	}
	for i := range p.ends {
		p.ends[i] = make([]uint32, 0, n)
	}
	return p
}

func (p *pingColumns) len() int { return len(p.ts) }

// reset empties the chunk for reuse.
func (p *pingColumns) reset() {
	p.strs = p.strs[:0]
	for i := range p.ends {
		p.ends[i] = p.ends[i][:0]
	}
	p.ts, p.ms, p.lat, p.lon, p.acc, p.dist = p.ts[:0], p.ms[:0], p.lat[:0], p.lon[:0], p.acc[:0], p.dist[:0]
	p.state, p.flag, p.inBreach, p.mock, p.verified = p.state[:0], p.flag[:0], p.inBreach[:0], p.mock[:0], p.verified[:0]
	p.counted, p.source = p.counted[:0], p.source[:0]
}

// addStr appends one row's value of a string column.
func addStr[S string | []byte](p *pingColumns, col int, v S) {
	p.strs = append(p.strs, v...)
	p.ends[col] = append(p.ends[col], uint32(len(p.strs)))
}

func (p *pingColumns) add(r *processor.Track, datetime64 bool) {
	addStr(p, strPatient, r.PatientID) // pseudonymised at the flush
	addStr(p, strDistrict, r.District)
	addStr(p, strZone, r.Zone)
	addStr(p, strPass, r.PassID)
	addStr(p, strDevice, r.DeviceID)
	addStr(p, strSource, r.Source)
	if datetime64 {
		p.ts = append(p.ts, r.TS)
	} else {
		p.ts, p.ms = append(p.ts, r.TS/1000), append(p.ms, uint16(r.TS%1000))
	}
	p.lat, p.lon = append(p.lat, r.Lat), append(p.lon, r.Lon)
	p.acc, p.dist = append(p.acc, r.Accuracy), append(p.dist, r.Distance)
	p.state, p.flag = append(p.state, int8(r.State)), append(p.flag, int8(r.Flag)) // the Enum8 values are the Go constants
	p.inBreach, p.mock = append(p.inBreach, b2u(r.InBreach)), append(p.mock, b2u(r.Mock))
	c := &r.Checkin
	verdict, counted, requestID := int8(noCheckin), int8(noCheckin), []byte(nil)
	if c.Present {
		verdict, counted = int8(b2u(c.Verified)), int8(b2u(c.Counted))
	}
	if c.Present && c.HasRequestID {
		var hexID [32]byte
		hex.Encode(hexID[:], c.RequestID[:])
		requestID = hexID[:]
	}
	p.verified, p.counted = append(p.verified, verdict), append(p.counted, counted)
	p.source = append(p.source, int8(processor.ClassOf(r.Source))) // here, off the partitions' hot path
	addStr(p, strCheckinID, requestID)
	addStr(p, strCheckinMethod, c.Method) // empty without a check-in
}

// strings fills dst with views of one string column's values, valid until
// the chunk is reset.
func (p *pingColumns) strings(col int, dst []string) []string {
	dst = dst[:0]
	for i, end := range p.ends[col] {
		v := p.strs[p.start(col, i):end]
		dst = append(dst, unsafe.String(unsafe.SliceData(v), len(v)))
	}
	return dst
}

// start is where row i's value of column col begins in strs: add writes a
// row's strings in column order, so it is where the one before it ended.
func (p *pingColumns) start(col, i int) uint32 {
	switch {
	case col > 0:
		return p.ends[col-1][i]
	case i > 0:
		return p.ends[nStrCols-1][i-1]
	}
	return 0
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
