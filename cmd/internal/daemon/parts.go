package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
)

// parts are the daemon's long-lived parts (the broker, the HTTP servers,
// the ClickHouse sink, the zones reloader): each started with one call,
// stopped newest first, each only after the one started after it has
// returned, so the sink flushes before the servers and the broker go. A
// part that fails while not stopped fails the daemon (fail), which then
// stops the rest in the same order.
type parts struct {
	fail func(error)
	// hard ends when what is left must stop at once (shutdown_timeout
	// reached): a part that waits on a server gives up.
	hard context.Context
	kill context.CancelFunc
	mu   sync.Mutex
	list []*part
}

type part struct {
	name   string
	cancel context.CancelFunc
	done   chan error
}

func newParts(fail func(error)) *parts {
	hard, kill := context.WithCancel(context.Background())
	return &parts{fail: fail, hard: hard, kill: kill}
}

// start runs f in a goroutine until stop: its context ends only then (or
// at kill), not with the daemon's, so the order of stopping is stop's.
func (ps *parts) start(name string, f func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(ps.hard)
	p := &part{name: name, cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := f(ctx)
		if err != nil && ctx.Err() == nil {
			ps.fail(fmt.Errorf("%s: %w", name, err))
		}
		p.done <- err
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
}

// stop stops every part, newest first, and returns the first error one
// returned (a part stopped may return its context's error or a closed
// server's: those are not failures).
func (ps *parts) stop() error {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	var first error
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		p.cancel()
		err := <-p.done
		if err != nil && first == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, http.ErrServerClosed) {
			first = fmt.Errorf("%s: %w", p.name, err)
		}
	}
	ps.kill()
	return first
}
