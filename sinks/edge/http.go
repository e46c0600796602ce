package edge

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// The bounds of every HTTP listener qfence runs (operators' and API): a
// client that never finishes its headers, or keeps a connection idle, is
// cut off, and at most MaxHTTPConns connections are served at once (the
// caller wraps its listener in netutil.LimitListener).
const (
	MaxHTTPConns = 256
	// IdleTimeout closes a kept-alive connection left silent (Prometheus
	// scrapes every 15 s or more and reconnects, which is cheap).
	IdleTimeout = 10 * time.Second
)

// HTTPServer is an http.Server with those bounds; write bounds a response.
func HTTPServer(h http.Handler, write time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: write, IdleTimeout: IdleTimeout, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
}

// MaxConnsPerAddr is how many connections one remote address may hold at
// once: 300 idle connections from one client once slowed a police pass
// check from 3 ms to seconds, and 600 starved /healthz.
const MaxConnsPerAddr = 32

// LimitListener bounds l to MaxHTTPConns connections at once, and each
// remote address to MaxConnsPerAddr of them: a connection beyond is closed
// as soon as it is accepted.
func LimitListener(l net.Listener) net.Listener {
	return &perAddr{Listener: netutil.LimitListener(l, MaxHTTPConns), n: map[string]int{}}
}

type perAddr struct {
	net.Listener
	mu sync.Mutex
	n  map[string]int
}

func (p *perAddr) Accept() (net.Conn, error) {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(c.RemoteAddr().String())
		if err != nil {
			host = c.RemoteAddr().String()
		}
		p.mu.Lock()
		if p.n[host] >= MaxConnsPerAddr {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.n[host]++
		p.mu.Unlock()
		return &addrConn{Conn: c, p: p, host: host}, nil
	}
}

type addrConn struct {
	net.Conn
	p    *perAddr
	host string
	once sync.Once
}

func (c *addrConn) Close() error {
	c.once.Do(func() {
		c.p.mu.Lock()
		if c.p.n[c.host]--; c.p.n[c.host] <= 0 {
			delete(c.p.n, c.host)
		}
		c.p.mu.Unlock()
	})
	return c.Conn.Close()
}
