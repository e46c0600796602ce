package processor_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/qfence/qfence/processor"
)

// A template may use the fields, if/else/with, comparisons and printing
// (contract 3.3); anything that loops, calls another template or a
// function value is refused at start-up, with what it used.
func TestTemplatesAreRestricted(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string // want "": accepted
	}{
		{"the default warning", processor.DefaultWarningTemplate, ""},
		{"the default request", processor.DefaultCheckinRequestTemplate, ""},
		{"if, with, comparisons, printf", `{{if and (eq .Kind "warning") (gt .DistanceM 100.0)}}far{{else}}{{with .District}}in {{.}}{{end}}{{end}} {{printf "%.0f" .DistanceM}}`, ""},
		{"a variable and an escaper", `{{$d := .District}}{{urlquery $d}} {{html .EventType}}`, ""},
		{"range", `{{range $i, $c := "abc"}}x{{end}}`, "range is not allowed"},
		{"a range over a huge number", `{{range 300000000}}x{{end}}`, "range is not allowed"},
		{"define", `{{define "x"}}y{{end}}z`, "may not define other templates"},
		{"block", `{{block "x" .}}y{{end}}`, "may not define other templates"},
		{"call", `{{call .At.Add}}`, `function "call" is not allowed`},
		{"len", `{{len .District}}`, `function "len" is not allowed`},
		{"index in a nested pipeline", `{{if (index .District 0)}}x{{end}}`, `function "index" is not allowed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := processor.ParseTemplate(processor.Warning, tc.text)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// A text longer than notifications.max_text_bytes is cut at a UTF-8
// boundary and counted; the rendering never holds much more than the
// bound (a template once rendered 1.7 MB for one district).
func TestALongTextIsCutAtAUTF8Boundary(t *testing.T) {
	n, err := processor.NewNotifier(`{{printf "%0900000d" 1}} Покиньте`+strings.Repeat("я", 300), "", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	cuts := 0
	n.MaxTextBytes, n.OnCut = 481, func() { cuts++ }
	notes := n.For(&processor.Event{Type: processor.BreachStarted, PatientID: "p-1", At: 1775124000000, StartedAt: 1775124000000}, nil)
	text := notes[0].Text
	if len(text) > 481 || len(text) < 478 || !utf8.ValidString(text) || cuts != 1 {
		t.Errorf("a text of %d bytes (valid UTF-8 %v), %d cuts counted", len(text), utf8.ValidString(text), cuts)
	}
	n2, _ := processor.NewNotifier(`{{printf "%0400d" 1}}`+strings.Repeat("я", 300), "", time.UTC)
	n2.MaxTextBytes = 480
	if text := n2.For(&processor.Event{Type: processor.BreachStarted, PatientID: "p-1"}, nil)[0].Text; !utf8.ValidString(text) || len(text) > 480 {
		t.Errorf("cut inside a rune: %d bytes, valid %v", len(text), utf8.ValidString(text))
	}
}

// FuzzParseTemplate: any text is refused, or renders within the bound as
// valid UTF-8 (if its data is); nothing panics or loops.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{processor.DefaultWarningTemplate, processor.DefaultCheckinRequestTemplate, `{{range .}}{{end}}`,
		`{{if .At}}{{.At.Format "15:04"}}{{end}}`, `{{printf "%99d" 1}}`, `{{with $x := .District}}{{$x}}{{end}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if _, err := processor.ParseTemplate(processor.Warning, text); err != nil {
			return
		}
		n, err := processor.NewNotifier(text, "", time.UTC)
		if err != nil {
			return
		}
		n.MaxTextBytes = 480
		out := n.For(&processor.Event{Type: processor.BreachStarted, PatientID: "p-1", At: 1775124000000, StartedAt: 1775124000000}, nil)
		if len(out) != 1 || len(out[0].Text) > 480 {
			t.Fatalf("%q rendered %d bytes", text, len(out[0].Text))
		}
	})
}
