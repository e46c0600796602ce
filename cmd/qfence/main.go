// Command qfence is the quarantine geofence daemon and its tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/qfence/qfence/cmd/internal/daemon"
	"github.com/qfence/qfence/cmd/internal/load"
	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/config/contract"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "qfence:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a status and no further message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "qfence",
		Short:         "Quarantine geofence monitoring: pings in, honest violations out",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "YAML config file (every key can be overridden by QFENCE_* environment variables)")
	root.Version = versionLine()
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newRun(), newMigrate(), newReplay(), newBroker(), newDemo(), newDossier(), newOutcomes(), newVersion(), newCheck())
	return root
}

// versionLine is what qfence version prints: the build, the commit, the Go
// version and the contract it implements.
func versionLine() string {
	version, commit, goVersion := daemon.Build()
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("qfence %s (commit %s, %s, contract %s)", version, commit, goVersion, contract.Version())
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit, the Go version and the contract version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), versionLine()) },
	}
}

// newCheck loads and validates the configuration exactly as run does (keys,
// ranges, files, templates, keys files) and prints it, secrets redacted,
// without touching Kafka or ClickHouse.
func newCheck() *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration as run would (keys, ranges, files, templates, keys) and print it with secrets redacted; touches neither Kafka nor ClickHouse",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load.Config(cmd)
			if err != nil {
				return err
			}
			if err := errors.Join(checkFiles(cfg)...); err != nil {
				return err
			}
			out, err := cfg.Effective()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# the configuration is valid; as qfence run would use it (secrets redacted):\n%s", out)
			return nil
		},
	}
}

// checkFiles reads what run reads at start besides the configuration: the
// zones, the orders and passes files, the pass issuers' keys, the API's
// tokens.
func checkFiles(cfg *config.Config) []error {
	var errs []error
	zones, err := load.Zones(cfg.Zones.File, cfg.Zones.AllowEmpty)
	if err != nil {
		errs = append(errs, err)
	}
	discard := slog.New(slog.DiscardHandler)
	if cfg.Orders.File != "" && zones != nil {
		if _, err := load.OrdersFile(cfg.Orders.File, processor.NewOrderBook(), zones, discard); err != nil {
			errs = append(errs, err)
		}
	}
	keys, err := load.VerifyKeys(cfg.Passes.VerifyKeysFile)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.Passes.File != "" {
		if _, err := load.PassesFile(cfg.Passes.File, processor.NewPassBook(), cfg.PassDecoder(keys), discard); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.API.Listen != "" {
		if _, err := api.LoadTokens(cfg.API.TokensFile); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
