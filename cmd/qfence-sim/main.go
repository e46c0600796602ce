// Command qfence-sim generates quarantine orders and pings with ground
// truth, produces them to Kafka or writes them to files, and scores events
// against the truth.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/qfence/qfence/cmd/internal/load"
	"github.com/qfence/qfence/sinks/clickhouse"
	qkafka "github.com/qfence/qfence/sinks/kafka"

	"github.com/segmentio/kafka-go"
	"github.com/spf13/cobra"

	"github.com/qfence/qfence/cmd/internal/sim"
	"github.com/qfence/qfence/processor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{Use: "qfence-sim", Short: "Simulate patients for qfence and score its events", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newGenerate(), newProduce(), newScore())
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "qfence-sim:", err)
		os.Exit(1)
	}
}

func newGenerate() *cobra.Command {
	var (
		p       sim.Params
		out     string
		minutes int
		rules   = processor.DefaultRules()
	)
	cmd := &cobra.Command{
		Use:   "generate --out DIR",
		Short: "Write orders.ndjson, zones.geojson, passes.ndjson (with pass-keys.txt), checkin-keys.json, pings.ndjson and truth.ndjson for N patients",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p.Duration = time.Duration(minutes) * time.Minute
			if p.Start.IsZero() {
				p.Start = time.Now().UTC().Add(-p.Duration).Truncate(time.Second)
			}
			p.Rules = rules
			s := sim.Generate(p)
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			if err := writeScenario(out, s); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d orders, %d pings (%d broken), %d truth events to %s; behaviours %v\n",
				len(s.Orders), len(s.Pings), s.Bad, len(s.Truth), out, s.Counts)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "sim", "directory to write to")
	cmd.Flags().IntVar(&p.Patients, "patients", 10000, "patients")
	cmd.Flags().IntVar(&minutes, "minutes", 20, "simulated minutes")
	cmd.Flags().DurationVar(&p.Interval, "interval", 30*time.Second, "time between a phone's pings")
	cmd.Flags().DurationVar(&p.Recur, "recur", 0, "how often a mislocated phone's access point is all it sees again, at the same wrong place (0: once)")
	cmd.Flags().Uint64Var(&p.Seed, "seed", 1, "random seed (the same seed gives the same files)")
	cmd.Flags().DurationVar(&rules.BreachAfter, "breach-after", rules.BreachAfter, "the rules.breach_after qfence will use (shapes the trips)")
	cmd.Flags().DurationVar(&rules.SignalTimeout, "signal-timeout", rules.SignalTimeout, "the rules.signal_timeout qfence will use (shapes the silences)")
	cmd.Flags().TimeVar(&p.Start, "start", time.Time{}, []string{time.RFC3339}, "first ping (default: so that the last is now)")
	return cmd
}

func writeScenario(dir string, s *sim.Scenario) error {
	write := func(name string, fn func(w *bufio.Writer) error) error {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		if err := fn(w); err != nil {
			f.Close()
			return err
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return errors.Join(
		write("orders.ndjson", func(w *bufio.Writer) error {
			for _, l := range s.Orders {
				w.WriteString(l + "\n")
			}
			return nil
		}),
		write("zones.geojson", func(w *bufio.Writer) error { _, err := w.Write(s.Zones); return err }),
		write("passes.ndjson", func(w *bufio.Writer) error {
			for _, l := range s.Passes {
				w.WriteString(l + "\n")
			}
			return nil
		}),
		// The demo issuer's key pair: the public key for
		// passes.verify_keys_file, the private seed to sign more passes.
		write("pass-keys.txt", func(w *bufio.Writer) error { _, err := w.WriteString(s.PublicKey() + "\n"); return err }),
		write("pass-signing.key", func(w *bufio.Writer) error {
			_, err := w.WriteString(base64.StdEncoding.EncodeToString(s.Key.Seed()) + "\n")
			return err
		}),
		// The check-in verification service's public key (a JWKS):
		// checkins.verify_keys_file; the app's answers carry its statements.
		write("checkin-keys.json", func(w *bufio.Writer) error { _, err := w.Write(s.CheckinKeys()); return err }),
		write("pings.ndjson", func(w *bufio.Writer) error {
			for _, p := range s.Pings {
				w.Write(p.Value)
				w.WriteByte('\n')
			}
			return nil
		}),
		write("truth.ndjson", func(w *bufio.Writer) error {
			enc := json.NewEncoder(w)
			for _, t := range s.Truth {
				if err := enc.Encode(t); err != nil {
					return err
				}
			}
			return nil
		}),
	)
}

func newProduce() *cobra.Command {
	var dir string
	var rate int
	cmd := &cobra.Command{
		Use:   "produce --dir DIR",
		Short: "Produce a generated scenario's orders and passes, then its pings, to Kafka (config: --config and QFENCE_*)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load.Config(cmd)
			if err != nil {
				return err
			}
			orders, err := readLines(filepath.Join(dir, "orders.ndjson"))
			if err != nil {
				return err
			}
			pings, err := readLines(filepath.Join(dir, "pings.ndjson"))
			if err != nil {
				return err
			}
			k, err := qkafka.NewClient(cfg.Kafka, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
			if err != nil {
				return err
			}
			defer k.Close()
			ctx := cmd.Context()
			if err := k.Publish(ctx, cfg.Kafka.Topics.Orders, sim.Messages(sim.Lines(orders)), 0, cmd.ErrOrStderr()); err != nil {
				return err
			}
			if passes, err := readLines(filepath.Join(dir, "passes.ndjson")); err == nil && passes[0] != "" {
				if err := k.Publish(ctx, cfg.Kafka.Topics.Passes, sim.PassMessages(passes), 0, cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			return k.Publish(ctx, cfg.Kafka.Topics.Pings, sim.Messages(sim.Lines(pings)), rate, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().String("config", "", "qfence config file (for kafka.brokers and the topics)")
	cmd.Flags().StringVar(&dir, "dir", "sim", "the directory generate wrote")
	cmd.Flags().IntVar(&rate, "rate", 0, "pings per second (0: as fast as possible)")
	return cmd
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n"), nil
}

func newScore() *cobra.Command {
	var truthPath, fromTopic string
	var fromClickHouse bool
	cmd := &cobra.Command{
		Use:   "score --truth truth.ndjson [EVENTS.ndjson | --topic violations | --clickhouse]",
		Short: "Precision, recall and detection delay of events against the truth",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			truthLines, err := readLines(truthPath)
			if err != nil {
				return err
			}
			var truth []sim.Truth
			for _, l := range truthLines {
				var t sim.Truth
				if err := json.Unmarshal([]byte(l), &t); err != nil {
					return fmt.Errorf("truth file: %w", err)
				}
				truth = append(truth, t)
			}
			var events []sim.Event
			add := func(b []byte) {
				var e sim.Event
				if json.Unmarshal(b, &e) == nil {
					events = append(events, e)
				}
			}
			switch {
			case fromClickHouse:
				cfg, err := load.Config(cmd)
				if err != nil {
					return err
				}
				conn, err := clickhouse.Connect(cmd.Context(), cfg.ClickHouse)
				if err != nil {
					return err
				}
				defer conn.Close()
				rows, err := conn.Query(cmd.Context(), "SELECT patient_id, toString(type), at, started_at, toString(reason) FROM "+cfg.ClickHouse.Database+".events FINAL")
				if err != nil {
					return fmt.Errorf("read events from clickhouse: %w", err)
				}
				for rows.Next() {
					var e sim.Event
					var at, started time.Time
					if err := rows.Scan(&e.PatientID, &e.Type, &at, &started, &e.Reason); err != nil {
						rows.Close()
						return err
					}
					e.At, e.StartedAt = at.UTC().Format(time.RFC3339), started.UTC().Format("2006-01-02T15:04:05.000Z")
					events = append(events, e)
				}
				rows.Close()
			case fromTopic != "":
				cfg, err := load.Config(cmd)
				if err != nil {
					return err
				}
				k, err := qkafka.NewClient(cfg.Kafka, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					return err
				}
				defer k.Close()
				if err := k.ReadAll(cmd.Context(), fromTopic, func(m kafka.Message) { add(m.Value) }); err != nil {
					return err
				}
			case len(args) == 1:
				lines, err := readLines(args[0])
				if err != nil {
					return err
				}
				for _, l := range lines {
					add([]byte(l))
				}
			default:
				return errors.New("give an events file or --topic")
			}
			cfg, err := load.Config(cmd)
			if err != nil {
				return err
			}
			rules := cfg.EngineRules()
			fmt.Fprintf(cmd.OutOrStdout(), "%d events against %d truth entries\n", len(events), len(truth))
			sim.Score(truth, events, &rules.Checkins).Print(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().String("config", "", "qfence config file (the topic's brokers, ClickHouse, the check-in rules)")
	cmd.Flags().StringVar(&truthPath, "truth", "sim/truth.ndjson", "the truth file generate wrote")
	cmd.Flags().StringVar(&fromTopic, "topic", "", "read events from this Kafka topic instead of a file")
	cmd.Flags().BoolVar(&fromClickHouse, "clickhouse", false, "read events from ClickHouse's events table (clickhouse.* of --config; pseudonymised ids will not match)")
	return cmd
}
