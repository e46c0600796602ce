// Package nettest puts a real TCP proxy with faults (Shopify's toxiproxy,
// embedded: its Go server and toxics, no binary) between qfence and the
// systems it talks to, for tests: latency, a thin pipe, connections reset
// by the peer, a black hole that never answers, a slow close.
package nettest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// Leaks are goleak options for the goroutines toxiproxy v2.5.0 leaves
// behind when a proxy stops with connections whose toxics were in the
// middle of a send (its links do not all watch for the stop): they are the
// proxy's, not the code under test's.
var Leaks = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).write"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
}

// Proxy forwards Addr to an upstream address through toxics.
type Proxy struct {
	p     *toxiproxy.Proxy
	names []string
}

// NewProxy starts a proxy listening on listen ("127.0.0.1:0" for any free
// port) in front of upstream; it stops when the test ends.
func NewProxy(t testing.TB, name, listen, upstream string) *Proxy {
	t.Helper()
	zerolog.SetGlobalLevel(zerolog.Disabled) // the toxics log through the global logger, at trace level
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(server, name, listen, upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start proxy %s: %v", name, err)
	}
	t.Cleanup(p.Stop)
	return &Proxy{p: p}
}

// Addr is where the proxy listens.
func (p *Proxy) Addr() string { return p.p.Listen }

// Toxic is one fault, as toxiproxy names it: Type latency (attributes
// latency, jitter in ms), bandwidth (rate in KB/s), reset_peer (timeout in
// ms: connections are reset that long after they start or the toxic is
// added), timeout (timeout 0: data is swallowed and nothing closes),
// slow_close (delay in ms).
type Toxic struct {
	Type       string
	Attributes map[string]any
}

// Add applies the toxic to both directions of every connection, present
// and future.
func (p *Proxy) Add(t testing.TB, x Toxic) {
	t.Helper()
	for _, stream := range []string{"downstream", "upstream"} {
		name := fmt.Sprintf("%s-%s-%d", x.Type, stream, len(p.names))
		b, err := json.Marshal(map[string]any{"name": name, "type": x.Type, "stream": stream, "toxicity": 1.0, "attributes": x.Attributes})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.p.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
			t.Fatalf("add toxic %s: %v", name, err)
		}
		p.names = append(p.names, name)
	}
}

// Clear removes every toxic.
func (p *Proxy) Clear(t testing.TB) {
	t.Helper()
	for _, name := range p.names {
		if err := p.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
			t.Fatalf("remove toxic %s: %v", name, err)
		}
	}
	p.names = nil
}

// Advertised wraps a listener so that it reports addr as its address: a
// Kafka broker behind a proxy must advertise the proxy, or its clients
// would follow the metadata around it.
func Advertised(l net.Listener, addr string) net.Listener {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		panic("BUG: advertised address " + addr + ": " + err.Error())
	}
	return advertised{l, a}
}

type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }
