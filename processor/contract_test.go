package processor_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/qfence/qfence/config/contract"
	"github.com/qfence/qfence/processor"
)

const scenarios = "../testdata/scenarios"

// schemaBlind are the reasons a JSON Schema cannot see: the size of the
// message, the wall clock and the Kafka key.
var schemaBlind = map[processor.Reason]bool{processor.TooLarge: true, processor.FutureTimestamp: true}

func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			out = append(out, bytes.Clone(sc.Bytes()))
		}
	}
	return out
}

func schema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	s, err := contract.Schema(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The ping schema and the decoder agree on every line of the scenarios and
// on a set of broken pings: a line the decoder accepts is valid by the
// schema, and one it rejects (for a reason a schema can see) is not.
func TestPingSchemaAgreesWithTheDecoder(t *testing.T) {
	s := schema(t, contract.Ping)
	files, err := filepath.Glob(filepath.Join(scenarios, "*.ndjson"))
	if err != nil || len(files) < 2 {
		t.Fatalf("scenarios: %v (%d files)", err, len(files))
	}
	var docs [][]byte
	for _, f := range files {
		if !strings.HasSuffix(f, "orders.ndjson") && !strings.HasSuffix(f, "passes.ndjson") {
			docs = append(docs, lines(t, f)...)
		}
	}
	docs = append(docs,
		[]byte(`{"patient_id":"p-1","ts":`),
		[]byte(`{"ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":37.6}`),
		[]byte(`{"patient_id":"","ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":37.6}`),
		[]byte(`{"patient_id":"p-1","ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":190}`),
		[]byte(`{"patient_id":"p-1","ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":37.6,"accuracy_m":"5"}`),
		[]byte(`{"patient_id":"p-1","ts":"02/04/2026","lat":55.7,"lon":37.6}`),
		[]byte(`{"patient_id":"p-1","ts":"2026-04-02T08:00:00Z","lat":55.7,"lon":37.6,"mock":"yes"}`),
		[]byte(`{"patient_id":"p-1","ts":1775116800000,"lat":-90,"lon":180,"accuracy_m":0,"mock":false,"device_id":"d","source":"gps"}`),
		[]byte(`{"patient_id":"p-1","ts":1775116800000,"lat":55.7,"lon":37.6,"checkin":{"verified":true}}`),
		[]byte(`{"patient_id":"p-1","ts":1775116800000,"lat":55.7,"lon":37.6,"checkin":{"verified":false,"request_id":"0123456789abcdef0123456789ABCDEF","method":"selfie","extra":[1]}}`),
		[]byte(`{"patient_id":"p-1","ts":1775116800000,"lat":55.7,"lon":37.6,"checkin":{"request_id":"0123456789abcdef0123456789abcdef"}}`),
		[]byte(`{"patient_id":"p-1","ts":1775116800000,"lat":55.7,"lon":37.6,"checkin":{"verified":"yes"}}`),
		[]byte(`{"patient_id":"p-1","ts":1775116800000,"lat":55.7,"lon":37.6,"checkin":{"verified":true,"request_id":"xyz"}}`),
		[]byte(`{"patient_id":"p-1","ts":1775116800000,"lat":55.7,"lon":37.6,"checkin":{"verified":true,"method":5}}`),
		[]byte(`{"patient_id":"p-1","ts":1775116800000,"lat":55.7,"lon":37.6,"checkin":true}`),
	)
	dec := processor.PingDecoder{MaxBytes: 1 << 20}
	var p processor.Ping
	for _, doc := range docs {
		derr := dec.Decode(doc, 0, &p)
		var rj *processor.Reject
		if errors.As(derr, &rj) && schemaBlind[rj.Reason] {
			continue
		}
		serr := contract.Validate(s, doc)
		if (derr == nil) != (serr == nil) {
			t.Errorf("%s\ndecoder: %v\nschema:  %v", doc, derr, serr)
		}
	}
}

// The order schema and the decoder agree on every order of the scenarios
// (one is meant to be refused), the scenarios' passes are valid by the pass
// schema, and every event of the golden files by the event schema.
func TestTestdataMatchesTheSchemas(t *testing.T) {
	order := schema(t, contract.Order)
	for _, doc := range lines(t, filepath.Join(scenarios, "orders.ndjson")) {
		_, derr := processor.DecodeOrder(nil, doc, 0, nil)
		if serr := contract.Validate(order, doc); (derr == nil) != (serr == nil) {
			t.Errorf("order %s\ndecoder: %v\nschema:  %v", doc, derr, serr)
		}
	}
	pass := schema(t, contract.Pass)
	for _, doc := range lines(t, filepath.Join(scenarios, "passes.ndjson")) {
		if err := contract.Validate(pass, doc); err != nil {
			t.Errorf("pass %s: %v", doc, err)
		}
	}
	event := schema(t, contract.Event)
	goldens, err := filepath.Glob(filepath.Join(scenarios, "*.golden"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("goldens: %v (%d files)", err, len(goldens))
	}
	n := 0
	for _, f := range goldens {
		for _, doc := range lines(t, f) {
			n++
			if err := contract.Validate(event, doc); err != nil {
				t.Errorf("%s: event %s: %v", filepath.Base(f), doc, err)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d golden events checked", n)
	}
	note := schema(t, contract.Notification)
	notes, _ := filepath.Glob(filepath.Join(scenarios, "*.notifications"))
	n = 0
	for _, f := range notes {
		for _, doc := range lines(t, f) {
			n++
			if err := contract.Validate(note, doc); err != nil {
				t.Errorf("%s: notification %s: %v", filepath.Base(f), doc, err)
			}
		}
	}
	if n < 4 {
		t.Errorf("only %d golden notifications checked", n)
	}
}

// The events of contract 2.3 and 2.4 (checkin_rejected, device_mismatch,
// mislocation_learned) are valid events of the schema, as every other type.
func TestAttestationEventsFollowTheSchema(t *testing.T) {
	s := schema(t, contract.Event)
	r := rand.New(rand.NewPCG(seed(t), 3))
	rules := processor.DefaultRules()
	rules.Checkins.Attest = processor.NewAttestation(attestKeys(t), "qfence", processor.IntegrityDevice)
	eng := processor.NewEngine(rules, equivalenceBook(30))
	var ev []processor.Event
	pings := randomPings(r, 30, 6000)
	for i := range pings {
		ev, _, _ = eng.Process(&pings[i], testZones(), ev)
	}
	seen := map[processor.EventType]int{}
	for i := range ev {
		if ev[i].Type != processor.CheckinRejected && ev[i].Type != processor.DeviceMismatch && ev[i].Type != processor.MislocationLearned {
			continue
		}
		seen[ev[i].Type]++
		if err := contract.Validate(s, ev[i].AppendJSON(nil, &rules)); err != nil {
			t.Fatalf("%s: %v", ev[i].AppendJSON(nil, &rules), err)
		}
	}
	if seen[processor.CheckinRejected] == 0 || seen[processor.DeviceMismatch] == 0 || seen[processor.MislocationLearned] == 0 {
		t.Fatalf("the generator made %v", seen)
	}
}

// The disposition schema and the decoder agree on valid and broken
// dispositions (those a schema can see: not the size, not the key).
func TestDispositionSchemaAgreesWithTheDecoder(t *testing.T) {
	s := schema(t, contract.Disposition)
	docs := [][]byte{dispJSON(nil), dispJSON(map[string]any{"comment": nil, "channel": nil}), dispJSON(map[string]any{"decided_at": 1775127720000}),
		[]byte(`{"disposition_id":`), dispJSON(map[string]any{"event_id": nil}), dispJSON(map[string]any{"decided_by": ""}),
		dispJSON(map[string]any{"event_id": "zz"}), dispJSON(map[string]any{"decision": "fined"}), dispJSON(map[string]any{"reason": "x"}),
		dispJSON(map[string]any{"decided_at": "yesterday"}), dispJSON(map[string]any{"disposition_id": "D 1"}),
		dispJSON(map[string]any{"channel": "twitter"}), dispJSON(map[string]any{"comment": 5})}
	for _, doc := range docs {
		var key []byte
		var m map[string]any
		if json.Unmarshal(doc, &m) == nil {
			if id, ok := m["event_id"].(string); ok {
				key = []byte(id)
			}
		}
		_, derr := processor.DecodeDisposition(key, doc, 4096)
		if serr := contract.Validate(s, doc); (derr == nil) != (serr == nil) {
			t.Errorf("%s\ndecoder: %v\nschema:  %v", doc, derr, serr)
		}
	}
}
