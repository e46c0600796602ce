package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/qfence/qfence/cmd/internal/load"
	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/processor"
)

func newReplay() *cobra.Command {
	var ordersFile, zonesFile, passesFile, notificationsFile string
	cmd := &cobra.Command{
		Use:   "replay --orders ORDERS.ndjson [--zones ZONES.geojson] [--passes PASSES.ndjson] [--notifications FILE] PINGS.ndjson",
		Short: "Run a pings file (or - for stdin) through the engine as one partition; events as NDJSON on stdout",
		Long: `Replay runs the pings through the same engine as qfence run, as one partition
in file order, with no Kafka and no ClickHouse. Events go to stdout as NDJSON,
one per line, in emission order; counts and rejected lines go to stderr.
It works in event time only: the watermark is the newest ts seen, and at the
end of input every patient is checked against it once more. With
--notifications, the notifications to patients go to that file as NDJSON,
as qfence run produces them to the notifications topic.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load.Config(cmd)
			if err != nil {
				return err
			}
			if zonesFile == "" {
				zonesFile = cfg.Zones.File
			}
			in := io.Reader(os.Stdin)
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("open pings file: %w", err)
				}
				defer f.Close()
				in = f
			}
			if passesFile == "" {
				passesFile = cfg.Passes.File
			}
			var notes io.Writer
			if notificationsFile != "" {
				f, err := os.Create(notificationsFile)
				if err != nil {
					return fmt.Errorf("create notifications file: %w", err)
				}
				defer f.Close()
				notes = f
			}
			if err := replay(cfg, replayInputs{orders: ordersFile, zones: zonesFile, passes: passesFile}, in, cmd.OutOrStdout(), notes, cmd.ErrOrStderr()); err != nil {
				return err
			}
			if f, ok := notes.(*os.File); ok {
				if err := f.Close(); err != nil {
					return fmt.Errorf("write notifications file: %w", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ordersFile, "orders", "", "orders as NDJSON (required)")
	cmd.Flags().StringVar(&zonesFile, "zones", "", "zones as a GeoJSON FeatureCollection (default: zones.file)")
	cmd.Flags().StringVar(&passesFile, "passes", "", "QR passes as NDJSON (default: passes.file); verified with passes.verify_keys_file when set")
	cmd.Flags().StringVar(&notificationsFile, "notifications", "", "write the notifications to patients to this file as NDJSON")
	_ = cmd.MarkFlagRequired("orders")
	return cmd
}

// replayInputs are the files a replay reads besides the pings.
type replayInputs struct{ orders, zones, passes string }

// replay writes events to stdout and, when notes is not nil, the
// notifications to it.
func replay(cfg *config.Config, files replayInputs, in io.Reader, stdout, notes, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	zones, err := load.Zones(files.zones, cfg.Zones.AllowEmpty)
	if err != nil {
		return err
	}
	book := processor.NewOrderBook()
	if _, err := load.OrdersFile(files.orders, book, zones, log); err != nil {
		return err
	}
	passes := processor.NewPassBook()
	if files.passes != "" {
		keys, err := load.VerifyKeys(cfg.Passes.VerifyKeysFile)
		if err != nil {
			return err
		}
		if _, err := load.PassesFile(files.passes, passes, cfg.PassDecoder(keys), log); err != nil {
			return err
		}
	}
	dec := cfg.PingDecoder()
	dec.MaxSkew = 0 // replay has no wall clock: nothing is in the future
	eng := processor.NewEngine(cfg.EngineRules(), book)
	eng.UsePasses(passes)
	notifier, err := cfg.Notifier()
	if err != nil {
		return err
	}
	out := bufio.NewWriterSize(stdout, 1<<16)
	var notesOut *bufio.Writer
	if notes != nil {
		notesOut = bufio.NewWriterSize(notes, 1<<16)
	}
	var (
		sent     []processor.Notification
		ping     processor.Ping
		events   []processor.Event
		buf      []byte
		outcomes = map[processor.Outcome]int{}
		rejected = map[processor.Reason]int{}
		lines    int
		start    = time.Now()
		lastLog  = start
	)
	emit := func() error {
		for i := range events {
			buf = events[i].AppendJSON(buf[:0], eng.Rules())
			buf = append(buf, '\n')
			if _, err := out.Write(buf); err != nil {
				return fmt.Errorf("write events: %w", err)
			}
			if notesOut == nil {
				continue
			}
			sent = notifier.For(&events[i], sent[:0])
			for j := range sent {
				buf = append(sent[j].AppendJSON(buf[:0]), '\n')
				if _, err := notesOut.Write(buf); err != nil {
					return fmt.Errorf("write notifications: %w", err)
				}
			}
		}
		events = events[:0]
		return nil
	}
	lr := load.NewLineReader(in, cfg.Limits.MaxMessageBytes+1)
	for {
		line, tooLong, err := lr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("read pings: %w", err)
		}
		lines++
		if len(bytes.TrimSpace(line)) == 0 && !tooLong {
			continue
		}
		if tooLong {
			err = &processor.Reject{Reason: processor.TooLarge, Msg: fmt.Sprintf("line is more than limits.max_message_bytes (%d)", cfg.Limits.MaxMessageBytes)}
		} else {
			err = dec.Decode(line, 0, &ping)
		}
		if err != nil {
			var rj *processor.Reject
			if !errors.As(err, &rj) {
				return fmt.Errorf("BUG: decoder returned %w", err)
			}
			if rejected[rj.Reason]++; rejected[rj.Reason] <= 3 {
				log.Warn("ping rejected", "line", lines, "reason", rj.Reason, "err", rj.Msg)
			}
			continue
		}
		var outcome processor.Outcome
		events, outcome, _ = eng.Process(&ping, zones, events)
		outcomes[outcome]++
		if err := emit(); err != nil {
			return err
		}
		if lines&0xffff == 0 && time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			fmt.Fprintf(stderr, "replay: %d lines, %.0f lines/s\n", lines, float64(lines)/time.Since(start).Seconds())
		}
	}
	events = eng.Sweep(events)
	if err := emit(); err != nil {
		return err
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	if notesOut != nil {
		if err := notesOut.Flush(); err != nil {
			return fmt.Errorf("write notifications: %w", err)
		}
	}
	nrej := 0
	for _, n := range rejected {
		nrej += n
	}
	elapsed := time.Since(start)
	fmt.Fprintf(stderr, "replay: %d lines in %s (%.0f lines/s): accepted %d, no_order %d, late %d, duplicate %d, rejected %d\n",
		lines, elapsed.Round(time.Millisecond), float64(lines)/elapsed.Seconds(), outcomes[processor.Accepted],
		outcomes[processor.NoOrder], outcomes[processor.Late], outcomes[processor.Duplicate], nrej)
	for _, r := range slices.Sorted(maps.Keys(rejected)) {
		fmt.Fprintf(stderr, "replay: rejected %s: %d\n", r, rejected[r])
	}
	return nil
}
