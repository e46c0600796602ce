package sim

import (
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/qfence/qfence/sinks/edge"
	"github.com/segmentio/kafka-go"
)

// Messages are the pings as Kafka messages, in order.
func Messages(pings []Ping) []kafka.Message {
	out := make([]kafka.Message, len(pings))
	for i, p := range pings {
		out[i] = kafka.Message{Key: p.Key, Value: p.Value}
	}
	return out
}

// Lines turns NDJSON lines into messages keyed by their patient_id (no key
// for a line without one).
func Lines(lines []string) []Ping {
	out := make([]Ping, len(lines))
	for i, l := range lines {
		var v struct {
			PatientID string `json:"patient_id"`
		}
		_ = json.Unmarshal([]byte(l), &v)
		out[i] = Ping{Key: []byte(v.PatientID), Value: []byte(l)}
	}
	return out
}

// PassMessages turns pass lines into messages keyed by their pass_id.
func PassMessages(lines []string) []kafka.Message {
	out := make([]kafka.Message, len(lines))
	for i, l := range lines {
		var v struct {
			PassID string `json:"pass_id"`
		}
		_ = json.Unmarshal([]byte(l), &v)
		out[i] = kafka.Message{Key: []byte(v.PassID), Value: []byte(l)}
	}
	return out
}

// Queue is where the app leaves its answers for Stream: safe for the app's
// goroutine and the streamer's.
type Queue struct {
	mu    sync.Mutex
	items []Ping
}

// Put adds an answer.
func (q *Queue) Put(p Ping) {
	q.mu.Lock()
	q.items = append(q.items, p)
	q.mu.Unlock()
}

func (q *Queue) take() []Ping {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}

// Stream publishes the pings at rate per second (in delivery order) with
// publish, merging in the app's answers from q by their ts: an answer goes
// out just before the first ping dated after it, as the phone would have
// sent it. An answer dated before what was already sent goes out at once
// (a slow app: qfence takes it as late). Answers dated after the last
// ping are dropped: the simulated world has ended. It prints progress to
// w every few seconds, and returns the answers it published.
func Stream(ctx context.Context, publish func(context.Context, []kafka.Message) error, pings []Ping, rate int, q *Queue, w io.Writer) ([]Ping, error) {
	chunk := max(rate/10, 50)
	var (
		pending answers
		clock   int64
		sent    int
		sentAns []Ping
		start   = time.Now()
		last    = start
	)
	for i := 0; i < len(pings); i += chunk {
		for _, a := range q.take() {
			heap.Push(&pending, a)
		}
		var batch []kafka.Message
		for _, p := range pings[i:min(len(pings), i+chunk)] {
			clock = max(clock, p.TS)
			for pending.Len() > 0 && pending[0].TS <= clock {
				a := heap.Pop(&pending).(Ping)
				batch = append(batch, kafka.Message{Key: a.Key, Value: a.Value})
				sentAns = append(sentAns, a)
			}
			batch = append(batch, kafka.Message{Key: p.Key, Value: p.Value})
		}
		if err := publish(ctx, batch); err != nil {
			return sentAns, err
		}
		sent = min(len(pings), i+chunk)
		if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
			if err := edge.Sleep(ctx, ahead); err != nil {
				return sentAns, err
			}
		}
		if w != nil && (time.Since(last) > 5*time.Second || sent == len(pings)) {
			last = time.Now()
			fmt.Fprintf(w, "  pings: %d/%d (%.0f%%), %d check-in answers from the app\n", sent, len(pings), 100*float64(sent)/float64(len(pings)), len(sentAns))
		}
	}
	return sentAns, nil
}
