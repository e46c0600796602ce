package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
)

// Produce writes msgs to topic with the Java client's key partitioner, at
// most rate messages per second (0: as fast as the broker takes them),
// printing progress to w every few seconds.
func Produce(ctx context.Context, brokers []string, topic string, msgs []Ping, rate int, w io.Writer) error {
	tr := &kafka.Transport{} // its own, closed after: the default one lives forever
	defer tr.CloseIdleConnections()
	wr := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 2000, BatchTimeout: 5 * time.Millisecond, BatchBytes: 900 << 10, Transport: tr}
	defer wr.Close()
	const chunk = 2000
	start, last := time.Now(), time.Now()
	batch := make([]kafka.Message, 0, chunk)
	for i := 0; i < len(msgs); i += chunk {
		batch = batch[:0]
		for _, m := range msgs[i:min(len(msgs), i+chunk)] {
			batch = append(batch, kafka.Message{Key: m.Key, Value: m.Value})
		}
		for attempt := 0; ; attempt++ {
			err := wr.WriteMessages(ctx, batch...)
			if err == nil {
				break
			}
			if ctx.Err() != nil || attempt == 20 {
				return fmt.Errorf("produce to %s: %.300v", topic, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		done := i + len(batch)
		if rate > 0 { // pace: where we should be by now
			if ahead := time.Duration(float64(done)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				select {
				case <-time.After(ahead):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if w != nil && (time.Since(last) > 5*time.Second || done == len(msgs)) {
			last = time.Now()
			fmt.Fprintf(w, "  %s: %d/%d messages (%.0f%%), %.0f/s\n", topic, done, len(msgs), 100*float64(done)/float64(len(msgs)),
				float64(done)/time.Since(start).Seconds())
		}
	}
	return nil
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
