// Package pipeline runs qfence's consume → decide → emit → checkpoint →
// commit loop, one goroutine per assigned partition, around the pure engine
// of package processor. It declares the small interfaces it needs (Fetcher,
// Sink, Producer, Checkpointer, Committer) and the edges under sinks/
// implement them; it holds the at-least-once bookkeeping (Tracker) and the
// engine's Prometheus metrics.
package pipeline
