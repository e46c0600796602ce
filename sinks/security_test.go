package sinks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/processor"
)

// testCA makes a CA and a server certificate for 127.0.0.1, and writes the
// CA's PEM to a file for the client side.
func testCA(t *testing.T) (server tls.Certificate, caFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "qfence test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caFile
}

// TestKafkaOverTLSWithSCRAM: against a broker that requires TLS and
// SCRAM-SHA-512, every connection qfence makes (group, orders reader,
// producers, changelog) authenticates, and pings flow.
func TestKafkaOverTLSWithSCRAM(t *testing.T) {
	cert, caFile := testCA(t)
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.NumBrokers(1), kfake.DefaultNumPartitions(4),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "qfence", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	cfg := testConfig(addr)
	cfg.Kafka.TLS = config.TLS{Enabled: true, CAFile: caFile}
	cfg.Kafka.SASL = config.SASL{Mechanism: "SCRAM-SHA-512", Username: "qfence", Password: "s3cret"}
	k, err := newTestKafka(t, cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureTopics(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The gateway side publishes with the same TLS and SASL (the path
	// qfence-sim produce takes).
	d := genData(8, 200, 4000, 0)
	if err := k.Publish(context.Background(), cfg.Kafka.Topics.Orders, d.orders, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := k.Publish(context.Background(), cfg.Kafka.Topics.Pings, d.pings, 0, nil); err != nil {
		t.Fatal(err)
	}
	sink := newRecorder()
	svc := runService(t, cfg, processor.NewOrderBook(), sink, func() time.Time { return d.end })
	waitFor(t, time.Minute, "every ping stored", func() bool { u, _ := sink.count(); return u == d.valid })
	svc.stop(t)

	// And a client without credentials is turned away.
	bad := cfg.Kafka
	bad.SASL = config.SASL{}
	kb, err := newTestKafka(t, bad)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := kb.Reachable(ctx); err == nil {
		t.Error("a client without SASL credentials was served")
	}
}

// writeKeyPair writes a certificate and its key as PEM files (what
// clickhouse-server's openSSL section reads).
func writeKeyPair(t *testing.T, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestClickHouseOverTLSWithPassword: against a private clickhouse-server
// with a TLS native port and a password-protected user, migrations and the
// sink work through clickhouse.tls, clickhouse.username and
// clickhouse.password; a wrong password and an unknown certificate
// authority are refused with errors that say what to check.
func TestClickHouseOverTLSWithPassword(t *testing.T) {
	cert, caFile := testCA(t)
	certFile, keyFile := writeKeyPair(t, cert)
	ctx := context.Background()
	srv, err := startClickHouseServer(ctx, testLog(t), chServerOptions{certFile: certFile, keyFile: keyFile, user: "qfence", password: "s3cret-pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	cfg := config.Default().ClickHouse
	cfg.Addr, cfg.Database, cfg.Username, cfg.Password = srv.SecureAddr, "tls_test", "qfence", "s3cret-pw"
	cfg.TLS = config.TLS{Enabled: true, CAFile: caFile}
	cfg.FlushInterval, cfg.Timeout = 200*time.Millisecond, 10*time.Second
	_, tracks, events := tracksFor(5, 1000, 20_000)
	write(t, openSink(t, cfg, ""), tracks, events)
	plain := chConn(t, srv.Addr) // the default user on the plain port sees what came over TLS
	if n := count(t, plain, "SELECT count() FROM tls_test.pings"); n != uint64(len(tracks)) {
		t.Fatalf("%d ping rows over TLS, want %d", n, len(tracks))
	}

	wrong := cfg
	wrong.Password = "not-the-password"
	if err := Migrate(ctx, wrong, testLog(t)); err == nil || !strings.Contains(err.Error(), "clickhouse.password") {
		t.Fatalf("a wrong password: %v, want a refusal that names clickhouse.password", err)
	}
	untrusted := cfg
	untrusted.TLS.CAFile = "" // the system roots do not know the test CA
	if err := Migrate(ctx, untrusted, testLog(t)); err == nil || !strings.Contains(err.Error(), "clickhouse.tls") {
		t.Fatalf("an unknown certificate authority: %v, want a refusal that names clickhouse.tls", err)
	}
}
