package processor

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"text/template"
	"time"
)

// NotificationKind is what a notification to the patient is (contract 3.3).
type NotificationKind uint8

// The kinds.
const (
	Warning NotificationKind = iota + 1
	CheckinRequest
)

var kindNames = [...]string{"", "warning", "checkin_request"}

func (k NotificationKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// NotificationKinds lists every kind, for metrics and tests.
var NotificationKinds = []NotificationKind{Warning, CheckinRequest}

// Notification is one message to the patient, for an SMS gateway or the
// app's push service.
type Notification struct {
	Kind      NotificationKind
	PatientID string
	At        int64
	EventID   [16]byte // the causing event
	ExpiresAt int64    // 0: null
	Text      string
}

// ID is the notification's deterministic id: a hash of (patient_id, kind,
// the causing event's id), so a gateway can drop repeats.
func (n *Notification) ID() [16]byte {
	var buf [128]byte
	return idOf(hex.AppendEncode(idPrefix(buf[:0], n.PatientID, n.Kind.String()), n.EventID[:]))
}

// AppendJSON appends the notification as one JSON object in the contract's
// field order.
func (n *Notification) AppendJSON(b []byte) []byte {
	id := n.ID()
	b = append(b, `{"notification_id":"`...)
	b = hex.AppendEncode(b, id[:])
	b = append(b, `","patient_id":`...)
	b = appendJSONString(b, n.PatientID)
	b = append(b, `,"kind":"`...)
	b = append(b, n.Kind.String()...)
	b = append(b, `","at":`...)
	b = appendTSJSON(b, n.At)
	b = append(b, `,"event_id":"`...)
	b = hex.AppendEncode(b, n.EventID[:])
	b = append(b, `","expires_at":`...)
	if n.ExpiresAt == 0 {
		b = append(b, "null"...)
	} else {
		b = appendTSJSON(b, n.ExpiresAt)
	}
	b = append(b, `,"text":`...)
	b = appendJSONString(b, n.Text)
	return append(b, '}')
}

// NotificationData is what a notification template sees of its event.
// Times are in checkins.timezone; ExpiresAt is the zero time when the
// event has none. The patient's id is there only for a template that asks
// for it: the defaults do not.
type NotificationData struct {
	PatientID string
	Kind      string // warning or checkin_request
	EventType string
	EventID   string
	RequestID string // "" for a warning
	Reason    string // what triggered a check-in request: breach_started, signal_lost, random
	At        time.Time
	StartedAt time.Time
	ExpiresAt time.Time
	DistanceM float64
	District  string
}

// The default templates: plain English, no patient id.
const (
	DefaultWarningTemplate        = `You appear to have left home at {{.StartedAt.Format "15:04"}}. Please return, or open the app to check in.`
	DefaultCheckinRequestTemplate = `{{if eq .Reason "random"}}Routine check: please{{else}}Please{{end}} open the app and check in before {{.ExpiresAt.Format "15:04"}}.`
)

// Notifier renders the notifications of events. It is safe for concurrent
// use (text/template is).
type Notifier struct {
	templates [3]*template.Template // by kind
	fallback  [3]*template.Template // the defaults, should a template fail on a real event
	loc       *time.Location
}

// NewNotifier parses the two templates ("" takes the default); the
// error is ParseTemplate's for the first one refused.
func NewNotifier(warning, checkinRequest string, loc *time.Location) (*Notifier, error) {
	if loc == nil {
		loc = time.UTC
	}
	n := &Notifier{loc: loc}
	for _, k := range []struct {
		kind       NotificationKind
		text, dflt string
	}{{Warning, warning, DefaultWarningTemplate}, {CheckinRequest, checkinRequest, DefaultCheckinRequestTemplate}} {
		n.fallback[k.kind] = template.Must(template.New(k.kind.String()).Parse(k.dflt))
		if k.text == "" {
			k.text = k.dflt
		}
		t, err := ParseTemplate(k.kind, k.text)
		if err != nil {
			return nil, err
		}
		n.templates[k.kind] = t
	}
	return n, nil
}

// ParseTemplate parses a notification template and renders it once over
// a sample event, so that a template that does not parse, or names a
// field NotificationData lacks, is refused at start-up, not at the first
// breach.
func ParseTemplate(kind NotificationKind, text string) (*template.Template, error) {
	t, err := template.New(kind.String()).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	at := time.Unix(0, 0).UTC()
	sample := NotificationData{PatientID: "p-sample", Kind: kind.String(), EventType: "breach_started", Reason: triggerBreach,
		At: at, StartedAt: at, ExpiresAt: at.Add(20 * time.Minute)}
	var buf bytes.Buffer
	if err := t.Execute(&buf, sample); err != nil {
		return nil, err
	}
	if strings.TrimSpace(buf.String()) == "" {
		return nil, errors.New("the template renders an empty text")
	}
	return t, nil
}

// For appends the notification an event causes to out: a warning with
// breach_started, a checkin_request with checkin_requested, nothing for
// the others. A template that fails on a real event (it passed the sample
// at start-up) gives way to the default text: the patient is warned
// whatever the template says.
func (n *Notifier) For(e *Event, out []Notification) []Notification {
	var kind NotificationKind
	switch e.Type {
	case BreachStarted:
		kind = Warning
	case CheckinRequested:
		kind = CheckinRequest
	default:
		return out
	}
	id := e.ID()
	d := NotificationData{PatientID: e.PatientID, Kind: kind.String(), EventType: e.Type.String(),
		EventID: hex.EncodeToString(id[:]), Reason: e.Reason, At: n.time(e.At), StartedAt: n.time(e.StartedAt),
		ExpiresAt: n.time(e.ExpiresAt), DistanceM: float64(e.Location.Distance), District: e.District}
	if kind == CheckinRequest {
		d.RequestID = hex.EncodeToString(e.RequestID[:])
	}
	var buf bytes.Buffer
	if n.templates[kind].Execute(&buf, d) != nil {
		buf.Reset()
		_ = n.fallback[kind].Execute(&buf, d)
	}
	return append(out, Notification{Kind: kind, PatientID: e.PatientID, At: e.At, EventID: id,
		ExpiresAt: e.ExpiresAt, Text: buf.String()})
}

func (n *Notifier) time(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).In(n.loc)
}
