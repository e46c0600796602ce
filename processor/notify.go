package processor

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"
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
	// StoredText is the text rendered again with the patient's pseudonym in
	// place of the id, for the copy stored in ClickHouse when
	// pseudonymisation is on ("": store Text). Never a search-and-replace
	// of Text: {{urlquery .PatientID}} would escape past it.
	StoredText string
	// idPatient is what ID hashes instead of PatientID (the causing
	// event's IDPatient).
	idPatient string
}

// ID is the notification's deterministic id: a hash of (patient_id, kind,
// the causing event's id), so a gateway can drop repeats.
func (n *Notification) ID() [16]byte {
	var buf [128]byte
	id := n.idPatient
	if id == "" {
		id = n.PatientID
	}
	return idOf(hex.AppendEncode(idPrefix(buf[:0], id, n.Kind.String()), n.EventID[:]))
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
	// MaxTextBytes cuts a rendered text (notifications.max_text_bytes; 0:
	// no limit); OnCut, when set, hears each text cut (a metric).
	MaxTextBytes int
	OnCut        func()

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
	if len(t.Templates()) > 1 {
		return nil, errors.New("a template may not define other templates (define, block)")
	}
	if err := restricted(t.Tree.Root); err != nil {
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

// templateFuncs are the functions a template may call (contract 3.3): the
// template package's comparisons and printing (its escapers print too: a
// link with the id in it wants urlquery), nothing that loops, calls a
// function value or reaches another template.
var templateFuncs = map[string]bool{"and": true, "or": true, "not": true, "eq": true, "ne": true, "lt": true, "le": true,
	"gt": true, "ge": true, "print": true, "printf": true, "println": true, "html": true, "js": true, "urlquery": true}

// restricted walks a template's parse tree and refuses what contract 3.3
// does not allow: range (a range over 3·10⁸ once added 12.8 s to start-up),
// template calls, break and continue, and any function but templateFuncs.
func restricted(node parse.Node) error {
	switch n := node.(type) {
	case nil, *parse.TextNode, *parse.CommentNode, *parse.FieldNode, *parse.VariableNode, *parse.DotNode, *parse.StringNode,
		*parse.NumberNode, *parse.BoolNode, *parse.NilNode:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		return restrictedAll(n.Nodes)
	case *parse.ActionNode:
		return restricted(n.Pipe)
	case *parse.IfNode:
		return errors.Join(restricted(n.Pipe), restricted(n.List), restricted(n.ElseList))
	case *parse.WithNode:
		return errors.Join(restricted(n.Pipe), restricted(n.List), restricted(n.ElseList))
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		return restrictedAll(n.Cmds)
	case *parse.CommandNode:
		return restrictedAll(n.Args)
	case *parse.ChainNode:
		return restricted(n.Node)
	case *parse.IdentifierNode:
		if !templateFuncs[n.Ident] {
			return fmt.Errorf("function %q is not allowed in a notification template (only %s)", n.Ident, allowedFuncs())
		}
		return nil
	case *parse.RangeNode:
		return errors.New("range is not allowed in a notification template")
	case *parse.TemplateNode:
		return errors.New("template is not allowed in a notification template")
	}
	return fmt.Errorf("%s is not allowed in a notification template", node)
}

func restrictedAll[N parse.Node](nodes []N) error {
	for _, n := range nodes {
		if err := restricted(n); err != nil {
			return err
		}
	}
	return nil
}

func allowedFuncs() string {
	names := make([]string, 0, len(templateFuncs))
	for f := range templateFuncs {
		names = append(names, f)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
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
	note := Notification{Kind: kind, PatientID: e.PatientID, At: e.At, EventID: id, ExpiresAt: e.ExpiresAt, Text: n.render(kind, d)}
	if pseudonym := e.IDPatient(); pseudonym != e.PatientID {
		d.PatientID, note.idPatient = pseudonym, pseudonym
		note.StoredText = n.render(kind, d)
	}
	return append(out, note)
}

// render is the text of a notification of kind over d: the template's, or
// the default's should it fail, cut at MaxTextBytes.
func (n *Notifier) render(kind NotificationKind, d NotificationData) string {
	buf := limitedBuffer{max: n.MaxTextBytes}
	if n.templates[kind].Execute(&buf, d) != nil {
		buf = limitedBuffer{max: n.MaxTextBytes}
		_ = n.fallback[kind].Execute(&buf, d)
	}
	text, cut := buf.text()
	if cut && n.OnCut != nil {
		n.OnCut()
	}
	return text
}

// limitedBuffer keeps what a template writes up to max bytes (0: no
// limit) and counts the rest, so that no template can make a text, or
// the memory it takes, larger than that.
type limitedBuffer struct {
	b   []byte
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	keep := p
	if l.max > 0 && len(l.b)+len(p) > l.max {
		keep = p[:min(len(p), max(0, l.max+utf8.UTFMax-len(l.b)))] // enough to find the rune boundary at max
	}
	l.b = append(l.b, keep...)
	return len(p), nil // the rest is dropped, not refused: the template renders on
}

// text is what was written, cut at a UTF-8 boundary at max bytes, and
// whether it was cut.
func (l *limitedBuffer) text() (string, bool) {
	if l.max == 0 || len(l.b) <= l.max {
		return string(l.b), false
	}
	return CutUTF8(string(l.b), l.max), true
}

// CutUTF8 is the longest prefix of s of at most n bytes that ends at a
// rune boundary.
func CutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (n *Notifier) time(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).In(n.loc)
}
