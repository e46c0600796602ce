// Package load reads what qfence's commands share: the configuration, the
// zones file and the orders file, and lines of NDJSON of bounded length.
// run, replay, demo and qfence-sim all load through it.
package load

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
)

// Config is qfence's configuration as every command loads it: the file
// that --config names (none when unset) and the QFENCE_* environment.
func Config(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	return config.Load(path, os.Environ())
}

// Zones reads a zones file; "" is no zones. A file with no features is
// refused unless allowEmpty: it would drop every zone, and is more often a
// truncated file than an intent.
func Zones(path string, allowEmpty bool) (*geo.Zones, error) {
	if path == "" {
		return geo.NewZones(nil), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read zones file: %w", err)
	}
	z, err := geo.ParseZones(data)
	if err != nil {
		return nil, fmt.Errorf("zones file %s: %w", path, err)
	}
	if z.Len() == 0 && !allowEmpty {
		return nil, fmt.Errorf("zones file %s has no features, which would drop every district and allowed zone; if that is intended, set zones.allow_empty: true", path)
	}
	sum := sha256.Sum256(data)
	z.Version = hex.EncodeToString(sum[:6])
	return z, nil
}

// OrdersFile loads an NDJSON orders file into book; rejected lines are
// reported on log and counted, as the contract asks of bad input.
func OrdersFile(path string, book *processor.OrderBook, zones *geo.Zones, log *slog.Logger) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open orders file: %w", err)
	}
	defer f.Close()
	lr := NewLineReader(f, 1<<20)
	n, rejects := processor.LoadOrders(func() ([]byte, bool) {
		line, _, err := lr.Next()
		return line, err == nil
	}, book, zones)
	if err := lr.Err(); err != nil {
		return n, fmt.Errorf("read orders file %s: %w", path, err)
	}
	for _, r := range rejects {
		log.Warn("order rejected", "file", path, "err", r)
	}
	return n, nil
}

// LineReader yields lines of any length without holding more than max bytes
// of one: a longer line is passed over and reported as too long.
type LineReader struct {
	r   *bufio.Reader
	max int
	err error // the first read error other than the end
}

func NewLineReader(r io.Reader, limit int) *LineReader {
	return &LineReader{r: bufio.NewReaderSize(r, max(64<<10, limit+1)), max: limit}
}

// Next returns the next line without its newline. The slice is valid until
// the next call.
func (l *LineReader) Next() (line []byte, tooLong bool, err error) {
	for {
		chunk, err := l.r.ReadSlice('\n')
		switch {
		case err == nil:
			if tooLong {
				return nil, true, nil
			}
			return bytes.TrimSuffix(chunk, []byte("\n")), len(chunk)-1 > l.max, nil
		case errors.Is(err, bufio.ErrBufferFull):
			tooLong = true
		case errors.Is(err, io.EOF) && (len(chunk) > 0 || tooLong):
			return chunk, tooLong || len(chunk) > l.max, nil
		default:
			l.err = err
			return nil, false, err
		}
	}
}

// Err is the read error that ended the lines, nil at a clean end of input.
func (l *LineReader) Err() error {
	if errors.Is(l.err, io.EOF) {
		return nil
	}
	return l.err
}

// VerifyKeys reads passes.verify_keys_file; "" is none.
func VerifyKeys(path string) ([]ed25519.PublicKey, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("passes.verify_keys_file: %w", err)
	}
	keys, err := processor.ParseVerifyKeys(data)
	if err != nil {
		return nil, fmt.Errorf("passes.verify_keys_file %s: %w", path, err)
	}
	return keys, nil
}

// PassesFile loads an NDJSON passes file into book; rejected lines are
// logged. Unlike the topic reader it holds every pass: a file is the
// operator's, and small.
func PassesFile(path string, book *processor.PassBook, dec processor.PassDecoder, log *slog.Logger) (held int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open passes file: %w", err)
	}
	defer f.Close()
	lr := NewLineReader(f, 1<<20)
	for n := 1; ; n++ {
		line, _, err := lr.Next()
		if err != nil {
			break
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		p, err := dec.Decode(nil, line)
		if err == nil {
			_, err = book.Apply(p) // an older version than a line before it is stale
		}
		if err != nil {
			log.Warn("pass rejected", "file", path, "line", n, "err", err)
			continue
		}
		held++
	}
	if err := lr.Err(); err != nil {
		return held, fmt.Errorf("read passes file %s: %w", path, err)
	}
	return held, nil
}
