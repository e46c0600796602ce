package edge

import (
	"log/slog"
	"net/http"
	"time"
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
