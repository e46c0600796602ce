package kafka_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
	"github.com/qfence/qfence/sinks/local"
)

// TestKafkaOverTLSWithSCRAM: against a broker that requires TLS and
// SCRAM-SHA-512, every connection qfence makes (group, orders reader,
// producers, changelog) authenticates, and pings flow.
func TestKafkaOverTLSWithSCRAM(t *testing.T) {
	ca := local.NewTestCA(t.TempDir())
	if ca.Err != nil {
		t.Fatal(ca.Err)
	}
	cert, caFile := ca.Server, ca.CAFile
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.NumBrokers(1), kfake.DefaultNumPartitions(4),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "qfence", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	cfg := kafkatest.Config(addr)
	cfg.Kafka.TLS = config.TLS{Enabled: true, CAFile: caFile}
	cfg.Kafka.SASL = config.SASL{Mechanism: "SCRAM-SHA-512", Username: "qfence", Password: "s3cret"}
	k, err := kafkatest.NewClient(t, cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureTopics(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The gateway side publishes with the same TLS and SASL (the path
	// qfence-sim produce takes).
	d := kafkatest.GenData(8, 200, 4000, 0)
	if err := k.Publish(context.Background(), cfg.Kafka.Topics.Orders, d.Orders, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := k.Publish(context.Background(), cfg.Kafka.Topics.Pings, d.Pings, 0, nil); err != nil {
		t.Fatal(err)
	}
	sink := kafkatest.NewRecorder()
	svc := kafkatest.RunService(t, cfg, processor.NewOrderBook(), sink, func() time.Time { return d.End })
	kafkatest.WaitFor(t, time.Minute, "every ping stored", func() bool { u, _ := sink.Count(); return u == d.Valid })
	svc.Stop(t)

	// And a client without credentials is turned away.
	bad := cfg.Kafka
	bad.SASL = config.SASL{}
	kb, err := kafkatest.NewClient(t, bad)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := kb.Reachable(ctx); err == nil {
		t.Error("a client without SASL credentials was served")
	}
}
