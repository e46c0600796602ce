package local

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is the embedded Kafka-protocol broker (kfake) behind `brokers:
// embedded` and `qfence broker`: for demos and tests, never production.
type Broker struct {
	c *kfake.Cluster
}

// StartBroker listens on addr (host must be a loopback address). With a
// dataDir its topics, offsets and groups survive restarts.
func StartBroker(addr, dataDir string, partitions int) (*Broker, error) {
	return StartBrokerCompacting(addr, dataDir, partitions, DefaultCompactEvery)
}

// DefaultCompactEvery is how often the embedded broker compacts its
// compacted topics: as often as a real cluster's log cleaner would (kfake's
// own default is hourly), since the qfence-state changelog would otherwise
// grow with every checkpoint and a partition's restore read it all (the
// soak found a restore after a broker restart taking a minute). kfake
// compacts in its one request loop, answering nothing meanwhile: with
// millions of records in a compacted topic (ten million orders or passes)
// a compaction outlasts this interval and the broker stalls (README,
// "What the embedded broker holds").
const DefaultCompactEvery = 15 * time.Second

// StartBrokerCompacting is StartBroker compacting every compactEvery.
func StartBrokerCompacting(addr, dataDir string, partitions int, compactEvery time.Duration) (*Broker, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("broker listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("broker listen address %q: port: %w", addr, err)
	}
	opts := []kfake.Opt{kfake.Ports(port), kfake.DefaultNumPartitions(partitions), kfake.NumBrokers(1),
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": strconv.FormatInt(compactEvery.Milliseconds(), 10)}),
		// Every kafka.session_timeout qfence accepts (config.MinSessionTimeout
		// to config.MaxSessionTimeout) is one this broker takes; kfake's own
		// range is 6s–5m, Kafka's default 6s–30m.
		kfake.GroupMinSessionTimeout(3 * time.Second), kfake.GroupMaxSessionTimeout(30 * time.Minute),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		})}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded broker on %s: %w (is another broker or qfence already listening there?)", addr, err)
	}
	return &Broker{c: c}, nil
}

// Addr is where the broker listens.
func (b *Broker) Addr() string { return b.c.ListenAddrs()[0] }

// Run serves until ctx ends, then closes the broker (persisting its data).
func (b *Broker) Run(ctx context.Context, log *slog.Logger) error {
	log.Info("embedded kafka broker listening", "addr", b.Addr())
	<-ctx.Done()
	b.c.Close()
	return nil
}

// Close stops the broker now.
func (b *Broker) Close() { b.c.Close() }
