package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/qfence/qfence/cmd/internal/daemon"
	"github.com/qfence/qfence/cmd/internal/load"
	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/sinks/clickhouse"
)

func newDossier() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "dossier EVENT_ID [--out FILE]",
		Short: "Write the dossier of an event (one self-contained HTML page) from ClickHouse",
		Long: `Dossier reads an event, the patient's stored pings from 30 minutes before the
episode to 30 minutes after it and the passes in force from ClickHouse, draws
them with the zones of zones.file, and writes one HTML page (no script, nothing
fetched when viewed; it prints on A4) to --out or stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load.Config(cmd)
			if err != nil {
				return err
			}
			zones, err := load.Zones(cfg.Zones.File, true)
			if err != nil {
				return err
			}
			r, err := clickhouse.NewReader(cmd.Context(), cfg.ClickHouse, cfg.Privacy.PseudonymizeKey != "")
			if err != nil {
				return err
			}
			defer r.Close()
			page, err := daemon.NewDossiers(r, func() *geo.Zones { return zones }).Dossier(cmd.Context(), args[0], nil)
			if err != nil {
				return fmt.Errorf("dossier of %s: %w (is the event_id right, and clickhouse.database the one qfence writes?)", args[0], err)
			}
			if out == "" {
				_, err = cmd.OutOrStdout().Write(page)
				return err
			}
			return os.WriteFile(out, page, 0o644)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the page to this file (default: stdout)")
	return cmd
}
