package processor

import (
	"strconv"
	"time"
)

// minTS is 2000-01-01T00:00:00Z: anything earlier is taken for a mistake
// (most often Unix seconds sent where milliseconds are expected).
const minTS = 946684800000

// maxTS is 2105-12-31T23:59:59.999Z: ClickHouse before 20.1 stores times
// as a 32-bit DateTime that ends in February 2106, and a time it cannot
// hold would be stored as another date (2200 wraps to 2063). Every time a
// message carries must fit every server qfence supports.
const maxTS = 4291747199999

// tsRange says, in a rejection, which times are accepted.
const tsRange = "2000-01-01 to 2105-12-31"

// parseRFC3339 parses an RFC 3339 date-time with a zone (fraction optional)
// into Unix milliseconds, truncating sub-millisecond digits. It is the
// per-ping path, so it does not allocate; time.Parse does for offset zones.
func parseRFC3339(b []byte) (int64, bool) {
	// 2006-01-02T15:04:05Z is the shortest form: 20 bytes.
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') ||
		b[13] != ':' || b[16] != ':' {
		return 0, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 ||
		day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return 0, false
	}
	rest := b[19:]
	var ms int
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && isDigit(rest[n]) {
			if n <= 3 {
				ms = ms*10 + int(rest[n]-'0')
			}
			n++
		}
		if n == 1 {
			return 0, false
		}
		for k := n; k <= 3; k++ {
			ms *= 10
		}
		rest = rest[n:]
	}
	var offset int
	switch {
	case len(rest) == 1 && (rest[0] == 'Z' || rest[0] == 'z'):
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := digits(rest[1:3])
		om, ok2 := digits(rest[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, false
		}
		offset = (oh*60 + om) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return 0, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC)
	return (t.Unix()-int64(offset))*1000 + int64(ms), true
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// FormatTS renders Unix milliseconds as RFC 3339 UTC with milliseconds, the
// one time format of qfence's outputs.
func FormatTS(ms int64) string {
	return string(AppendTS(nil, ms))
}

// tsLayout is FormatTS's layout, in time's notation.
const tsLayout = "2006-01-02T15:04:05.000Z"

// AppendTS appends FormatTS(ms) to b. Years 0000–9999 are written by hand
// (every event carries several times and hashes one for its id; time's
// AppendFormat took a twentieth of a drain's CPU, BENCHMARKS.md); others
// go through time, which the fuzz test holds it to.
func AppendTS(b []byte, ms int64) []byte {
	const minMS, maxMS = -62167219200000, 253402300799999 // 0000-01-01, 9999-12-31T23:59:59.999
	if ms < minMS || ms > maxMS {
		return time.UnixMilli(ms).UTC().AppendFormat(b, tsLayout)
	}
	days, rem := ms/86_400_000, ms%86_400_000
	if rem < 0 {
		days, rem = days-1, rem+86_400_000
	}
	y, m, d := civil(days)
	sec, milli := rem/1000, rem%1000
	b = append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10), 'T')
	b = append2(b, sec/3600, ':')
	b = append2(b, sec/60%60, ':')
	b = append2(b, sec%60, '.')
	return append(b, byte('0'+milli/100), byte('0'+milli/10%10), byte('0'+milli%10), 'Z')
}

func append2(b []byte, v int64, sep byte) []byte {
	return append(b, byte('0'+v/10), byte('0'+v%10), sep)
}

// civil is the proleptic Gregorian date of a day counted from 1970-01-01
// (H. Hinnant's days_from_civil, inverted).
func civil(days int64) (year, month, day int64) {
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	day = doy - (153*mp+2)/5 + 1
	month = mp + 3
	if month > 12 {
		month -= 12
	}
	year = yoe + era*400
	if month <= 2 {
		year++
	}
	return year, month, day
}

// parseUnixMillis parses an integer JSON number as Unix milliseconds.
func parseUnixMillis(raw []byte) (int64, bool) {
	v, err := strconv.ParseInt(string(raw), 10, 64)
	return v, err == nil
}
