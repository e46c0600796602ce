// Package local starts the servers qfence's demo and tests run against on
// one machine: the embedded Kafka-protocol broker (kfake, `brokers:
// embedded` and `qfence broker`) and a private clickhouse-server from
// Debian's package (the Makefile installs it: make clickhouse). Nothing in
// production depends on it but the embedded broker.
package local
