// Package sinks is qfence's edge: Kafka (the consumer group, the orders
// table, the producers, the state changelog, the embedded broker) and
// ClickHouse. It implements the interfaces processor declares.
package sinks
