# qfence — `make help` lists the targets.
GO      ?= go
PKGS    := ./...
# Packages that start goroutines run under the race detector in `make test`;
# the pure ones run without it (it would only slow them down).
RACE_PKGS := ./processor/pipeline/... ./sinks/... ./cmd/...
PURE_PKGS := ./geo/... ./config/... ./processor/ ./processor/dossier/
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help build test bench fuzz lint demo soak clean clickhouse chromium prometheus

help: ## List the targets and what they do.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

demo: clickhouse ## The whole system on this machine (private ClickHouse, embedded Kafka, simulator), ending in a summary.
	$(GO) run ./cmd/qfence demo $(if $(KEEP),--keep)

build: ## Build bin/qfence and bin/qfence-sim.
	$(GO) build -o bin/ ./cmd/...

test: clickhouse chromium prometheus ## Every test (real ClickHouse started privately, embedded Kafka), with the race detector where goroutines run.
	$(GO) vet $(PKGS)
	QFENCE_REQUIRE_CLICKHOUSE=1 QFENCE_REQUIRE_PROMETHEUS=1 $(GO) test -count=1 $(PURE_PKGS)
	QFENCE_REQUIRE_CLICKHOUSE=1 QFENCE_REQUIRE_PROMETHEUS=1 QFENCE_SOAK=$${SOAK_CI:-60s} $(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

soak: clickhouse ## A day of load, compressed: qfence at half its capacity for SOAK (default 30m) with a ClickHouse stop and a broker restart; writes testdata/soak/.
	mkdir -p testdata/soak
	QFENCE_SOAK=$${SOAK:-30m} QFENCE_SOAK_REPORT=$(CURDIR)/testdata/soak $(GO) test -count=1 -run TestSoak -v -timeout 0 ./cmd/qfence/

BENCHSTAT := golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

bench: clickhouse ## Benchmarks (6 runs of the hot paths, 3 of the big ones) and their medians: the table of BENCHMARKS.md.
	$(GO) test -run '^$$' -bench 'DecodeDecide|Decode$$|DecodeOrder|Lookup|Distance|EventJSON|FormatTS' -benchmem -count 6 ./geo/ ./processor/ | tee bench.txt
	$(GO) test -run '^$$' -bench HeapPerPatient -benchtime 1x -count 3 ./processor/ | tee -a bench.txt
	$(GO) test -run '^$$' -bench Replay -benchtime 3x -count 3 ./cmd/qfence/ | tee -a bench.txt
	$(GO) test -run '^$$' -bench SinkThroughput -benchtime 1x -count 3 -timeout 30m ./sinks/clickhouse/ | tee -a bench.txt
	$(GO) test -run '^$$' -bench Drain -benchtime 1x -count 3 -timeout 30m ./cmd/qfence/ | tee -a bench.txt
	$(GO) run $(BENCHSTAT) bench.txt

fuzz: ## Fuzz every decoder for FUZZTIME each (default 30s).
	$(GO) test -run '^$$' -fuzz FuzzPingDecode -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz '^FuzzOrderDecode$$' -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz FuzzOrderDecodeMatchesJSON -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz FuzzPassDecode -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz FuzzExactDecimal -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz FuzzFormatTS -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz FuzzAttestation -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz FuzzParseTemplate -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz FuzzDispositionDecode -fuzztime $${FUZZTIME:-30s} ./processor/
	$(GO) test -run '^$$' -fuzz FuzzParseZones -fuzztime $${FUZZTIME:-30s} ./geo/
	$(GO) test -run '^$$' -fuzz FuzzConfig -fuzztime $${FUZZTIME:-30s} ./config/

lint: ## go vet, staticcheck and gofmt.
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo 'gofmt: run gofmt -w on the files above'; exit 1; }

clickhouse: ## Install Debian's clickhouse-server package if it is missing (the tests and the demo start private servers from it).
	@command -v clickhouse-server >/dev/null || test -x /usr/sbin/clickhouse-server || { \
	  echo "installing clickhouse-server (Debian package)…"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq clickhouse-server clickhouse-client; }

chromium: ## Install Debian's chromium if it is missing (the dossier is tested in a real headless browser).
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing chromium (Debian package)…"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

prometheus: ## Install Debian's prometheus (with promtool) if it is missing (the alert rules and the dashboard are tested against it).
	@command -v promtool >/dev/null || { \
	  echo "installing prometheus (Debian package)…"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus; }

clean: ## Remove build output.
	rm -rf bin bench.txt
