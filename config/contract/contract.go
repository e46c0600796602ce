// Package contract holds qfence's external contract in machine-readable
// form: a JSON Schema (draft 2020-12) for every message qfence reads or
// writes, the same files an integrator feeds to their own validator
// (config/contract/schema/). CONTRACT.md beside it is the contract in
// words. The tests validate what qfence produces, and the testdata it
// consumes, against these schemas.
package contract

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed schema/*.schema.json
var files embed.FS

//go:embed CONTRACT.md
var text []byte

// Version names the contract this build implements: the first 12 hex
// digits of the SHA-256 of CONTRACT.md, which .ci/run keeps equal to the
// upstream contract's.
func Version() string {
	sum := sha256.Sum256(text)
	return hex.EncodeToString(sum[:6])
}

// The schemas, by file name.
const (
	Ping              = "ping.schema.json"
	Order             = "order.schema.json"
	Event             = "event.schema.json"
	Pass              = "pass.schema.json"
	Notification      = "notification.schema.json"
	Disposition       = "disposition.schema.json"
	DeadLetterHeaders = "dead-letter-headers.schema.json"
)

const base = "https://qfence.example/schema/"

// Schema compiles one of the schemas above.
func Schema(name string) (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	entries, err := fs.ReadDir(files, "schema")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := files.ReadFile("schema/" + e.Name())
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", e.Name(), err)
		}
		if err := c.AddResource(base+e.Name(), doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", e.Name(), err)
		}
	}
	return c.Compile(base + name)
}

// Validate checks one JSON document against a compiled schema.
func Validate(s *jsonschema.Schema, doc []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return s.Validate(v)
}

// Headers turns Kafka record headers into the object the dead-letter
// headers schema describes.
func Headers(keys []string, values [][]byte) []byte {
	m := make(map[string]string, len(keys))
	for i, k := range keys {
		m[k] = string(values[i])
	}
	b, _ := json.Marshal(m)
	return b
}
