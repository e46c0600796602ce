// Package processor is qfence's engine: it decodes pings and orders, runs
// the per-patient state machine, and drives the consume → decide → emit →
// commit loop through the small interfaces it declares (Sink, Emitter).
// It does no I/O of its own: Kafka and ClickHouse live in sinks/ and cmd/.
package processor
