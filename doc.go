// Package watchtower is the root of GoWatchtower, OpenTelemetry-native observability for
// Kubernetes operators written with controller-runtime.
//
// The library lives in its subpackages:
//
//   - semconv: the attribute and metric vocabulary, generated from one registry file;
//   - sdk: one call that sets up OpenTelemetry for an operator process;
//   - instrumentation/controllerruntime: the reconcile, API-call, queue, event and log
//     instrumentation an operator author adds in a few lines.
//
// The collector distribution (otelcol-watchtower) and the integration tests (integration)
// are separate Go modules so that importing the library never pulls collector, Kafka or
// Kubernetes server code into an operator's build.
package watchtower
