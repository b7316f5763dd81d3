// Package kafka reads what GoWatchtower's gateway writes to Kafka — every span and metric
// point its operators send — as OpenTelemetry data, for consumers outside the pipeline: a
// data lake loader, a cost report, a team's own alerting. docs/kafka.md is the contract it
// implements: topics, encodings, record keys, ordering, and what may change between versions.
//
// A Consumer joins a consumer group, decodes each record (OTLP protobuf or JSON) into pdata
// (ptrace.Traces or pmetric.Metrics) and hands it to a Handler, one record at a time per
// consumer. Offsets are committed only after the handler returned nil, so a record is handled
// at least once: after a crash or a rebalance the records since the last commit are handled
// again. A handler error is retried with backoff, never skipped; a record that cannot be
// decoded is counted, reported and skipped.
package kafka
