package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/qfence/qfence/cmd/internal/load"
	"github.com/qfence/qfence/sinks/clickhouse"
)

func newOutcomes() *cobra.Command {
	var since, until string
	cmd := &cobra.Command{
		Use:   "outcomes [--since RFC3339] [--until RFC3339]",
		Short: "Print what people decided about the events, per district and type, from ClickHouse",
		Long: `Outcomes reads the rule_outcomes view and prints, per district and event type,
how many events were confirmed, dismissed (by reason) and contested, how many
wait for a decision, and the dismissal rate (dismissed of decided): how often
the rules were wrong by the reviewers' account. Each event counts once, by its
newest disposition. --since and --until bound the event's day.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load.Config(cmd)
			if err != nil {
				return err
			}
			from, err := optTime("--since", since)
			if err != nil {
				return err
			}
			to, err := optTime("--until", until)
			if err != nil {
				return err
			}
			r, err := clickhouse.NewReader(cmd.Context(), cfg.ClickHouse, cfg.Privacy.PseudonymizeKey != "")
			if err != nil {
				return err
			}
			defer r.Close()
			out, err := r.Outcomes(cmd.Context(), from, to)
			if err != nil {
				return fmt.Errorf("%w (is clickhouse.database the one qfence writes, and migrated? run qfence migrate)", err)
			}
			return writeOutcomes(cmd.OutOrStdout(), out)
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "from this day (RFC 3339, as 2026-04-01T00:00:00Z)")
	cmd.Flags().StringVar(&until, "until", "", "to this day (RFC 3339)")
	return cmd
}

func optTime(flag, v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want an RFC 3339 time, as 2026-04-01T00:00:00Z", flag, v)
	}
	return t.UnixMilli(), nil
}

// writeOutcomes prints the outcomes as a table (the demo's last table too).
func writeOutcomes(w io.Writer, out []clickhouse.Outcome) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "district\ttype\tevents\tconfirmed\tdismissed\tcontested\twaiting\tdismissal rate\tnetwork only\t")
	for _, o := range out {
		var reasons []string
		for r, n := range o.Dismissed {
			reasons = append(reasons, fmt.Sprintf("%d %s", n, r))
		}
		slices.Sort(reasons)
		dismissed := strings.Join(reasons, ", ")
		if dismissed == "" {
			dismissed = "0"
		}
		district := o.District
		if district == "" {
			district = "(none)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%.0f%%\t%d\t\n", district, o.Type, o.Events, o.Confirmed, dismissed, o.Contested, o.Waiting,
			100*o.DismissalRate, o.NetworkOnly)
	}
	if len(out) == 0 {
		fmt.Fprintln(tw, "(no escalation and no decision in ClickHouse for this span)\t\t\t\t\t\t\t\t\t")
	}
	return tw.Flush()
}
