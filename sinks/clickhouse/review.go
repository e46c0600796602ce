package clickhouse

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/qfence/qfence/processor/dossier"
)

// MaxQueue bounds the events one review page lists.
const MaxQueue = 10_000

// dispositionCols are a disposition's columns as Scan reads them.
func (r *Reader) dispositionCols() string {
	return "disposition_id, event_id, toString(decision), toString(reason), comment, decided_by, " + r.ms("decided_at") + ", toString(channel)"
}

func scanDisposition(rows interface{ Scan(...any) error }) (dossier.Disposition, error) {
	var d dossier.Disposition
	var at uint64
	err := rows.Scan(&d.ID, &d.EventID, &d.Decision, &d.Reason, &d.Comment, &d.DecidedBy, &at, &d.Channel)
	d.DecidedAt = int64(at)
	return d, err
}

// Dispositions are an event's dispositions, oldest first (the newest is
// its current decision).
func (r *Reader) Dispositions(ctx context.Context, eventID string) ([]dossier.Disposition, error) {
	q := fmt.Sprintf("SELECT %s FROM %s.dispositions FINAL WHERE event_id = ? ORDER BY decided_at%s, disposition_id", r.dispositionCols(), r.db, r.schema.msKey("decided_at"))
	rows, err := r.conn.Query(ctx, q, eventID)
	if err != nil {
		return nil, fmt.Errorf("read the dispositions of event %s: %w", eventID, err)
	}
	defer rows.Close()
	var out []dossier.Disposition
	for rows.Next() {
		d, err := scanDisposition(rows)
		if err != nil {
			return nil, fmt.Errorf("read a disposition: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// EventKnown reports whether the events table holds the event.
func (r *Reader) EventKnown(ctx context.Context, eventID string) (bool, error) {
	var n uint64
	err := r.conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.events WHERE event_id = ?", r.db), eventID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up event %s: %w", eventID, err)
	}
	return n > 0, nil
}

// Queue reads the review queue: events of the filter's type with no
// disposition yet, oldest first, each with how its check-ins ended, and
// the count waiting per district.
func (r *Reader) Queue(ctx context.Context, f dossier.QueueFilter) (*dossier.Queue, error) {
	if f.Type == "" {
		f.Type = "breach_escalated"
	}
	if f.Limit <= 0 {
		f.Limit = 200
	}
	f.Limit = min(f.Limit, MaxQueue)
	q := &dossier.Queue{Filter: f, Database: r.db}
	where := fmt.Sprintf("type = ? AND at >= toDateTime(?) AND event_id GLOBAL NOT IN (SELECT event_id FROM %s.dispositions)", r.db)
	args := []any{f.Type, f.Since / 1000}
	rows, err := r.conn.Query(ctx, fmt.Sprintf("SELECT district, count() FROM %s.events FINAL WHERE %s GROUP BY district ORDER BY district", r.db, where), args...)
	if err != nil {
		return nil, fmt.Errorf("count the review queue: %w", err)
	}
	for rows.Next() {
		var c dossier.DistrictCount
		var n uint64
		if err := rows.Scan(&c.District, &n); err != nil {
			rows.Close()
			return nil, err
		}
		c.Waiting = int(n)
		q.Counts = append(q.Counts, c)
		if f.District == "" || c.District == f.District {
			q.Total += c.Waiting
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if f.District != "" {
		where += " AND district = ?"
		args = append(args, f.District)
	}
	sql := fmt.Sprintf(`SELECT event_id, toString(type), %s, %s, district, distance_m, max_distance_m, confidence_outside_pings,
  confidence_network_pings, confidence_min_margin_m, confidence_dwell_s, patient_id
FROM %s.events FINAL WHERE %s ORDER BY at%s, event_id LIMIT %d`, r.ms("at"), r.ms("started_at"), r.db, where, r.schema.msKey("at"), f.Limit)
	rows, err = r.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read the review queue: %w", err)
	}
	defer rows.Close()
	var patients []string
	for rows.Next() {
		var it dossier.QueueItem
		var at, started uint64
		var dist, maxDist, margin float32
		var outside, network uint32
		var patient string
		if err := rows.Scan(&it.EventID, &it.Type, &at, &started, &it.District, &dist, &maxDist, &outside, &network, &margin, &it.DwellS, &patient); err != nil {
			return nil, fmt.Errorf("read a waiting event: %w", err)
		}
		it.At, it.StartedAt, it.DistanceM, it.MaxDistanceM = int64(at), int64(started), float64(dist), float64(maxDist)
		it.OutsidePings, it.NetworkPings, it.MinMarginM = int(outside), int(network), float64(margin)
		q.Items = append(q.Items, it)
		patients = append(patients, patient)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return q, r.queueCheckins(ctx, q, patients)
}

// queueCheckins says for each waiting event how the check-ins asked
// during its episode ended: the check-in events of its patient from the
// episode's start to the event, and the counted answers among the pings.
func (r *Reader) queueCheckins(ctx context.Context, q *dossier.Queue, patients []string) error {
	if len(q.Items) == 0 {
		return nil
	}
	from := q.Items[0].StartedAt
	for _, it := range q.Items {
		from = min(from, it.StartedAt)
	}
	type ask struct {
		at int64
		id string
	}
	asks := map[string][]ask{} // by patient
	outcome := map[string]string{}
	sql := fmt.Sprintf(`SELECT patient_id, toString(type), request_id, %s FROM %s.events FINAL
WHERE patient_id IN (?) AND type IN ('checkin_requested', 'checkin_missed', 'checkin_failed') AND at >= toDateTime(?)`, r.ms("at"), r.db)
	rows, err := r.conn.Query(ctx, sql, set(uniq(patients)), from/1000)
	if err != nil {
		return fmt.Errorf("read the check-ins of the queue: %w", err)
	}
	for rows.Next() {
		var patient, typ, id string
		var at uint64
		if err := rows.Scan(&patient, &typ, &id, &at); err != nil {
			rows.Close()
			return err
		}
		switch typ {
		case "checkin_requested":
			asks[patient] = append(asks[patient], ask{at: int64(at), id: id})
		case "checkin_missed":
			outcome[id] = "missed"
		case "checkin_failed":
			outcome[id] = "failed"
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	sql = fmt.Sprintf(`SELECT checkin_request_id, checkin_counted FROM %s.pings FINAL
WHERE patient_id IN (?) AND checkin_request_id != '' AND ts >= toDateTime(?)`, r.db)
	rows, err = r.conn.Query(ctx, sql, set(uniq(patients)), from/1000)
	if err != nil {
		return fmt.Errorf("read the check-in answers of the queue: %w", err)
	}
	for rows.Next() {
		var id string
		var counted *uint8
		if err := rows.Scan(&id, &counted); err != nil {
			rows.Close()
			return err
		}
		switch {
		case counted != nil && *counted == 1 && outcome[id] == "":
			outcome[id] = "verified"
		case counted != nil && *counted == 0 && outcome[id] == "":
			outcome[id] = "rejected"
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range q.Items {
		it := &q.Items[i]
		var ends []string
		for _, a := range asks[patients[i]] {
			if a.at >= it.StartedAt && a.at <= it.At {
				end := outcome[a.id]
				if end == "" {
					end = "open"
				}
				ends = append(ends, end)
			}
		}
		it.Checkin = strings.Join(ends, ", ")
	}
	return nil
}

// set binds a list for IN (?): (a, b, c), which 18.16 takes where it
// refuses an array.
func set(xs []string) clickhouse.GroupSet {
	vs := make([]any, len(xs))
	for i, x := range xs {
		vs[i] = x
	}
	return clickhouse.GroupSet{Value: vs}
}

func uniq(xs []string) []string {
	out := append([]string(nil), xs...)
	sort.Strings(out)
	k := 0
	for i, x := range out {
		if i == 0 || x != out[k-1] {
			out[k] = x
			k++
		}
	}
	return out[:k]
}

// Outcome is a row of GET /v1/outcomes: per district and event type, how
// the events were decided (their current decision) and how many wait.
type Outcome struct {
	District  string         `json:"district"`
	Type      string         `json:"type"`
	Events    int            `json:"events"`
	Confirmed int            `json:"confirmed"`
	Dismissed map[string]int `json:"dismissed"` // by reason
	Contested int            `json:"contested"`
	Waiting   int            `json:"waiting"`
	// DismissalRate is dismissed / decided (0 with nothing decided): the
	// share of decided escalations people found wrong.
	DismissalRate float64 `json:"dismissal_rate"`
	// NetworkOnly is how many of the breach events rested on network
	// fixes alone.
	NetworkOnly int `json:"network_only"`
}

// Outcomes reads rule_outcomes from day since to day until (Unix ms; 0:
// unbounded), per district and event type, for the types people decide
// about (those with a decision, and every breach_escalated).
func (r *Reader) Outcomes(ctx context.Context, since, until int64) ([]Outcome, error) {
	where := "(decision != '' OR type = 'breach_escalated')"
	var args []any
	if since != 0 {
		where += " AND day >= toDate(toDateTime(?))"
		args = append(args, since/1000)
	}
	if until != 0 {
		where += " AND day <= toDate(toDateTime(?))"
		args = append(args, until/1000)
	}
	sql := fmt.Sprintf(`SELECT district, type, decision, reason, sum(events), sum(network_only_events) FROM %s.rule_outcomes
WHERE %s GROUP BY district, type, decision, reason ORDER BY district, type`, r.db, where)
	rows, err := r.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read rule_outcomes: %w", err)
	}
	defer rows.Close()
	var out []Outcome
	at := map[[2]string]int{}
	for rows.Next() {
		var district, typ, decision, reason string
		var n, network uint64
		if err := rows.Scan(&district, &typ, &decision, &reason, &n, &network); err != nil {
			return nil, err
		}
		i, ok := at[[2]string{district, typ}]
		if !ok {
			i = len(out)
			at[[2]string{district, typ}] = i
			out = append(out, Outcome{District: district, Type: typ, Dismissed: map[string]int{}})
		}
		o := &out[i]
		o.Events += int(n)
		o.NetworkOnly += int(network)
		switch decision {
		case "confirmed":
			o.Confirmed += int(n)
		case "dismissed":
			o.Dismissed[reason] += int(n)
		case "contested":
			o.Contested += int(n)
		default:
			o.Waiting += int(n)
		}
	}
	for i := range out {
		o := &out[i]
		dismissed := 0
		for _, n := range o.Dismissed {
			dismissed += n
		}
		if decided := o.Confirmed + dismissed + o.Contested; decided > 0 {
			o.DismissalRate = float64(dismissed) / float64(decided)
		}
	}
	return out, rows.Err()
}
