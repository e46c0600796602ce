package daemon

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The daemon's parts stop newest first, each after the later one has
// returned; a part that fails while running fails the daemon; a stopped
// part's context error or closed server is not a failure.
func TestPartsStopInReverseOrder(t *testing.T) {
	var (
		mu    sync.Mutex
		order []string
	)
	failed := make(chan error, 1)
	ps := newParts(func(err error) { failed <- err })
	for _, name := range []string{"broker", "metrics", "sink"} {
		ps.start(name, func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(time.Millisecond) // a later part still stopping must hold the earlier ones
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			if name == "metrics" {
				return http.ErrServerClosed
			}
			return ctx.Err()
		})
	}
	if err := ps.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if got := strings.Join(order, " "); got != "sink metrics broker" {
		t.Errorf("stopped %s, want sink metrics broker", got)
	}
	select {
	case err := <-failed:
		t.Errorf("a part stopped in order failed the daemon: %v", err)
	default:
	}

	ps = newParts(func(err error) { failed <- err })
	ps.start("api", func(context.Context) error { return errors.New("address in use") })
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "api: address in use") {
			t.Errorf("failure %v does not name the part", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a failing part did not fail the daemon")
	}
	if err := ps.stop(); err == nil || !strings.Contains(err.Error(), "api") {
		t.Errorf("stop returned %v, want the api's error", err)
	}

	// kill (shutdown_timeout reached) ends every part at once, hard first.
	ps = newParts(func(error) {})
	hardSeen := make(chan struct{})
	ps.start("sink", func(ctx context.Context) error {
		<-ps.hard.Done()
		close(hardSeen)
		return nil
	})
	ps.kill()
	select {
	case <-hardSeen:
	case <-time.After(10 * time.Second):
		t.Fatal("kill did not end the hard context")
	}
	_ = ps.stop()
}
