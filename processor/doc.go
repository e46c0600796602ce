// Package processor is qfence's pure engine: it decodes pings and orders,
// runs the per-patient state machine (Step, Engine) and encodes events. It
// does no I/O, starts no goroutine, reads no clock and knows no config file
// format: time comes in with the pings (and the caller's watermark), rules
// are plain Go values. The runtime loop around it is processor/pipeline;
// Kafka and ClickHouse live under sinks/.
//
// OrderBook is the one shared structure: the orders table that every
// partition reads while the orders reader writes it, so it is safe for
// concurrent use (sharded locks), but it starts nothing itself.
package processor
