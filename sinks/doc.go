// Package sinks holds qfence's edges, one package per system it talks to,
// each implementing the small interfaces of processor/pipeline and none
// importing another:
//
//   - sinks/kafka: the consumer group, the orders table, the producers, the
//     state changelog and topic administration;
//   - sinks/clickhouse: the analysts' tables: schema and migrations, the
//     batched native inserts, retention and pseudonyms;
//   - sinks/edge: what both share (TLS, the retry schedule, sink metrics);
//   - sinks/local: the embedded broker and a private clickhouse-server, for
//     the demo and the tests.
package sinks
