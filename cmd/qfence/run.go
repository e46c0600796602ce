package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/qfence/qfence/cmd/internal/daemon"
	"github.com/qfence/qfence/cmd/internal/load"
	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/local"
)

func newRun() *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "The daemon: consume pings, decide, emit events, store tracks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load.Config(cmd)
			if err != nil {
				return err
			}
			return daemon.Run(cmd.Context(), cfg, daemon.NewLogger(cfg.Log, os.Stderr), nil)
		},
	}
}

func newMigrate() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the ClickHouse schema (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load.Config(cmd)
			if err != nil {
				return err
			}
			return clickhouse.Migrate(cmd.Context(), cfg.ClickHouse, daemon.NewLogger(cfg.Log, os.Stderr))
		},
	}
}

func newBroker() *cobra.Command {
	var listen, dataDir string
	var partitions int
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run the embedded Kafka-protocol broker alone (demos and tests, not production)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			b, err := local.StartBroker(listen, dataDir, partitions)
			if err != nil {
				return err
			}
			return b.Run(cmd.Context(), log)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", config.EmbeddedBroker, "address to listen on (loopback)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "persist topics, offsets and groups here across restarts")
	cmd.Flags().IntVar(&partitions, "partitions", 4, "partitions of topics created without a count")
	return cmd
}
