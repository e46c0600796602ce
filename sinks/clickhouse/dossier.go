package clickhouse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/paulmach/orb"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/processor/dossier"
)

// ErrNoEvent is Reader.Case's answer for an event_id the events table
// does not hold.
var ErrNoEvent = errors.New("no such event")

// maxWindowPings bounds the pings a dossier reads from its window (a
// fortnight of pings every 30 s); the page draws at most
// dossier.MaxPings of them (dossier.Thin).
const maxWindowPings = 50_000

// Reader reads what qfence stored, for the dossier.
type Reader struct {
	conn   driver.Conn
	db     string
	schema Schema
	pseudo bool
}

// NewReader connects as qfence does. pseudonymized says whether the
// stored patient ids are pseudonyms (privacy.pseudonymize_key is set).
func NewReader(ctx context.Context, cfg config.ClickHouse, pseudonymized bool) (*Reader, error) {
	// A dossier reads what the shards that answer hold, within a short
	// timeout: one shard down must not make every dossier wait and fail.
	cfg.Timeout = min(cfg.Timeout, readerTimeout)
	conn, v, err := dialClickHouse(ctx, cfg, &conns{}, readerSettings(cfg))
	if err != nil {
		return nil, err
	}
	return &Reader{conn: conn, db: cfg.Database, schema: Schema{DB: cfg.Database, F: FeaturesOf(v)}, pseudo: pseudonymized}, nil
}

// readerTimeout bounds a dossier's queries.
const readerTimeout = 8 * time.Second

// readerSettings are the reader's session settings: on a cluster, skip the
// shards that do not answer (the page then shows what the others hold).
func readerSettings(cfg config.ClickHouse) clickhouse.Settings {
	if cfg.Cluster == "" {
		return nil
	}
	return clickhouse.Settings{"skip_unavailable_shards": 1}
}

// Close closes the connection.
func (r *Reader) Close() error { return r.conn.Close() }

// ms is a time column as Unix milliseconds, on either kind of server.
func (r *Reader) ms(col string) string { return r.schema.msOf(col) }

// Case reads an event and everything its dossier shows.
func (r *Reader) Case(ctx context.Context, eventID string) (*dossier.Case, error) {
	c := &dossier.Case{EventID: eventID, Database: r.db, Pseudonymized: r.pseudo, GeneratedAt: time.Now(), Evidence: map[int64]bool{}}
	var (
		typ, evidence                   string
		at, started                     uint64
		ended                           *time.Time
		lat, lon, radius, margin, after float64
		minPings                        uint16
		confPings                       uint32
		confMargin                      float32
		confDwell                       int64
	)
	q := fmt.Sprintf(`SELECT toString(type), patient_id, %s, %s, ended_at, duration_s, reason, home_lat, home_lon, home_radius_m,
  district, zone, evidence, pass_id, rule_margin_m, rule_breach_after_s, rule_breach_min_pings,
  confidence_outside_pings, confidence_min_margin_m, confidence_dwell_s
FROM %s.events FINAL WHERE event_id = ? LIMIT 1`, r.ms("at"), r.ms("started_at"), r.db)
	err := r.conn.QueryRow(ctx, q, eventID).Scan(&typ, &c.PatientID, &at, &started, &ended, &c.DurationS, &c.Reason, &lat, &lon, &radius,
		&c.District, &c.Zone, &evidence, &c.PassID, &margin, &after, &minPings, &confPings, &confMargin, &confDwell)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil, err
		}
		var n uint64
		if cerr := r.conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.events WHERE event_id = ?", r.db), eventID).Scan(&n); cerr == nil && n == 0 {
			return nil, ErrNoEvent
		}
		return nil, fmt.Errorf("read event %s: %w", eventID, err)
	}
	c.Type, c.At, c.StartedAt, c.Home, c.RadiusM = typ, int64(at), int64(started), orb.Point{lon, lat}, radius
	c.Rules = dossier.Rules{MarginM: margin, BreachAfterS: after, BreachMinPings: int(minPings)}
	if ended != nil {
		c.EndedAt = ended.UnixMilli()
	}
	if confPings > 0 {
		c.Confidence = &dossier.Confidence{OutsidePings: int(confPings), MinMarginM: float64(confMargin), DwellS: confDwell}
	}
	var ev []struct {
		TS string `json:"ts"`
	}
	if err := json.Unmarshal([]byte(evidence), &ev); err == nil {
		for _, e := range ev {
			if t, err := time.Parse(time.RFC3339Nano, e.TS); err == nil {
				c.Evidence[t.UnixMilli()] = true
			}
		}
	}
	c.WindowFrom, c.WindowTo = dossier.Window(c.StartedAt, c.At, c.EndedAt)
	if err := r.pings(ctx, c); err != nil {
		return nil, err
	}
	if err := r.passes(ctx, c); err != nil {
		return nil, err
	}
	if err := r.checkins(ctx, c); err != nil {
		return nil, err
	}
	if err := r.mislocations(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// mislocations reads the known mislocations learned by the window's end;
// dossier.KeepInForce keeps those in force in it.
func (r *Reader) mislocations(ctx context.Context, c *dossier.Case) error {
	q := fmt.Sprintf(`SELECT event_id, %s, location_lat, location_lon, mislocation_radius_m, expires_at
FROM %s.events FINAL WHERE patient_id = ? AND type = 'mislocation_learned' AND at <= toDateTime(?) ORDER BY at`, r.ms("at"), r.db)
	rows, err := r.conn.Query(ctx, q, c.PatientID, c.WindowTo/1000+1)
	if err != nil {
		return fmt.Errorf("read the known mislocations of event %s: %w", c.EventID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var m dossier.Mislocation
		var at uint64
		var radius float32
		var valid *time.Time
		if err := rows.Scan(&m.EventID, &at, &m.Lat, &m.Lon, &radius, &valid); err != nil {
			return fmt.Errorf("read a known mislocation: %w", err)
		}
		m.LearnedAt, m.RadiusM = int64(at), float64(radius)
		if valid != nil {
			m.ValidTo = valid.UnixMilli()
		}
		c.Mislocations = append(c.Mislocations, m)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	dossier.KeepInForce(c)
	return nil
}

// checkins reads the check-in requests of the window with their outcomes
// (the checkin_missed and checkin_failed events naming them, the verified
// pings answering them), and the notifications sent.
func (r *Reader) checkins(ctx context.Context, c *dossier.Case) error {
	from, to := c.WindowFrom/1000, c.WindowTo/1000+1
	q := fmt.Sprintf(`SELECT toString(type), request_id, %s, expires_at, reason
FROM %s.events FINAL WHERE patient_id = ? AND type IN ('checkin_requested', 'checkin_missed', 'checkin_failed', 'checkin_rejected')
  AND at >= toDateTime(?) AND at <= toDateTime(?) ORDER BY at`, r.ms("at"), r.db)
	rows, err := r.conn.Query(ctx, q, c.PatientID, from, to)
	if err != nil {
		return fmt.Errorf("read the check-ins of event %s: %w", c.EventID, err)
	}
	defer rows.Close()
	byID := map[string]int{}
	rejected := map[int64]string{} // by the ping's ts: why its check-in did not count
	outcome := map[string]string{}
	answered := map[string]int64{}
	for rows.Next() {
		var typ, id, reason string
		var at uint64
		var expires *time.Time
		if err := rows.Scan(&typ, &id, &at, &expires, &reason); err != nil {
			return fmt.Errorf("read a check-in: %w", err)
		}
		switch typ {
		case "checkin_requested":
			ci := dossier.Checkin{RequestID: id, Trigger: reason, At: int64(at)}
			if expires != nil {
				ci.ExpiresAt = expires.UnixMilli()
			}
			byID[id] = len(c.Checkins)
			c.Checkins = append(c.Checkins, ci)
		case "checkin_missed":
			outcome[id] = "missed"
		case "checkin_failed":
			outcome[id], answered[id] = "failed (face match)", int64(at)
		case "checkin_rejected":
			rejected[int64(at)] = reason
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range c.Pings {
		p := &c.Pings[i]
		if p.Checkin != "" && p.Rejected != "" {
			if why := rejected[p.TS]; why != "" {
				p.Rejected = why
			}
			continue // it answered nothing
		}
		if p.Checkin == "verified" && p.CheckinRequest != "" && outcome[p.CheckinRequest] == "" {
			outcome[p.CheckinRequest], answered[p.CheckinRequest] = "verified", p.TS
		}
	}
	for id, i := range byID {
		c.Checkins[i].Outcome, c.Checkins[i].AnsweredAt = outcome[id], answered[id]
	}
	q = fmt.Sprintf(`SELECT %s, toString(kind), text FROM %s.notifications FINAL
WHERE patient_id = ? AND at >= toDateTime(?) AND at <= toDateTime(?) ORDER BY at, kind`, r.ms("at"), r.db)
	nrows, err := r.conn.Query(ctx, q, c.PatientID, from, to)
	if err != nil {
		return fmt.Errorf("read the notifications of event %s: %w", c.EventID, err)
	}
	defer nrows.Close()
	for nrows.Next() {
		var n dossier.Notification
		var at uint64
		if err := nrows.Scan(&at, &n.Kind, &n.Text); err != nil {
			return fmt.Errorf("read a notification: %w", err)
		}
		n.At = int64(at)
		c.Notifications = append(c.Notifications, n)
	}
	return nrows.Err()
}

func (r *Reader) pings(ctx context.Context, c *dossier.Case) error {
	order := "ts"
	if !r.schema.F.DateTime64 {
		order = "ts, ts_ms"
	}
	q := fmt.Sprintf(`SELECT %s, lat, lon, accuracy_m, distance_m, toString(state), toString(flag), pass_id, zone,
  checkin_request_id, checkin_verified, toString(source_class), checkin_counted
FROM %s.pings FINAL WHERE patient_id = ? AND ts >= toDateTime(?) AND ts <= toDateTime(?) ORDER BY %s LIMIT %d`,
		r.ms("ts"), r.db, order, maxWindowPings)
	rows, err := r.conn.Query(ctx, q, c.PatientID, c.WindowFrom/1000, c.WindowTo/1000+1)
	if err != nil {
		return fmt.Errorf("read the pings of event %s: %w", c.EventID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p dossier.Ping
		var ts uint64
		var acc, dist float32
		var verified, counted *uint8
		if err := rows.Scan(&ts, &p.Lat, &p.Lon, &acc, &dist, &p.State, &p.Flag, &p.PassID, &p.Zone, &p.CheckinRequest, &verified,
			&p.Source, &counted); err != nil {
			return fmt.Errorf("read a ping: %w", err)
		}
		switch {
		case verified == nil:
		case *verified == 1:
			p.Checkin = "verified"
		default:
			p.Checkin = "failed"
		}
		if counted != nil && *counted == 0 {
			p.Rejected = "rejected" // the reason is the checkin_rejected's, read with the check-ins
		}
		p.TS, p.AccuracyM, p.DistanceM = int64(ts), float64(acc), float64(dist)
		if p.TS >= c.WindowFrom && p.TS <= c.WindowTo {
			c.Pings = append(c.Pings, p)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	dossier.Thin(c, dossier.MaxPings)
	return nil
}

func (r *Reader) passes(ctx context.Context, c *dossier.Case) error {
	q := fmt.Sprintf(`SELECT pass_id, toString(purpose), toUInt64(toUnixTimestamp(valid_from)) * 1000, toUInt64(toUnixTimestamp(valid_to)) * 1000,
  revoked_at, max_distance_m
FROM %s.passes FINAL WHERE patient_id = ? AND deleted = 0 AND valid_from <= toDateTime(?) AND valid_to >= toDateTime(?) ORDER BY valid_from`, r.db)
	rows, err := r.conn.Query(ctx, q, c.PatientID, c.WindowTo/1000+1, c.WindowFrom/1000)
	if err != nil {
		return fmt.Errorf("read the passes of event %s: %w", c.EventID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p dossier.Pass
		var from, to uint64
		var revoked *time.Time
		if err := rows.Scan(&p.ID, &p.Purpose, &from, &to, &revoked, &p.MaxDistanceM); err != nil {
			return fmt.Errorf("read a pass: %w", err)
		}
		p.ValidFrom, p.ValidTo = int64(from), int64(to)
		if revoked != nil {
			p.RevokedAt = revoked.UnixMilli()
		}
		c.Passes = append(c.Passes, p)
	}
	return rows.Err()
}
