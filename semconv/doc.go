// Package semconv is GoWatchtower's vocabulary: the attribute keys, span names and metric
// names, units and descriptions the instrumentation emits, generated from registry.yaml (the
// single source of truth) by `make generate`. The same run writes docs/semconv.md.
//
// The reconciled object and the reconcile use the project's own prefix, "watchtower.":
// OpenTelemetry has no convention for them, and its k8s.* resource attributes describe where
// the operator itself runs. Attributes documented as unbounded (object names, IDs, event
// messages) appear on spans only; metrics never carry them.
//
// Each metric has a Name, Unit and Description for its OpenTelemetry instrument, and a
// PrometheusName: how it appears on the manager's /metrics endpoint and in Prometheus.
package semconv

//go:generate go run ./internal/cmd/semconvgen -registry registry.yaml -go semconv.gen.go -doc ../docs/semconv.md
