// Package sdk sets up OpenTelemetry for a Kubernetes operator process with one call.
//
// In a kubebuilder cmd/main.go, start it before the manager and shut it down explicitly after
// the manager returns, before any os.Exit (which skips deferred calls), with a fresh context
// (the signal context is done by then):
//
//	ctx := ctrl.SetupSignalHandler()
//	tel, err := sdk.Start(ctx)
//	if err != nil {
//		setupLog.Error(err, "unable to set up OpenTelemetry")
//		os.Exit(1)
//	}
//	// ... create the manager and the instrumented reconcilers ...
//	runErr := mgr.Start(ctx)
//	if err := tel.Shutdown(context.Background()); err != nil { // bounded: 5s by default
//		setupLog.Error(err, "unable to flush telemetry")
//	}
//	if runErr != nil {
//		setupLog.Error(runErr, "problem running manager")
//		os.Exit(1)
//	}
//
// Configure it in the manager's Deployment, with the OpenTelemetry environment variables:
// OTEL_SERVICE_NAME names the operator, OTEL_EXPORTER_OTLP_ENDPOINT points at the collector
// (port 4318 for the default protocol, http/protobuf, or port 4317 with
// OTEL_EXPORTER_OTLP_PROTOCOL=grpc). docs/sdk.md in the repository has the whole main.go, a
// table of every variable with what Start does with it, and the Downward API snippet.
//
// # What Start sets up
//
// A resource describing the process: service.name (OTEL_SERVICE_NAME, else service.name in
// OTEL_RESOURCE_ATTRIBUTES, else the executable's name), a per-process service.instance.id,
// and k8s.pod.name, k8s.namespace.name, k8s.pod.uid and k8s.node.name from the Downward API
// variables POD_NAME, POD_NAMESPACE, POD_UID and NODE_NAME. OTEL_RESOURCE_ATTRIBUTES is merged
// in (service.version=v1.2.3, for instance).
//
// A tracer provider exporting over OTLP (http/protobuf by default, or gRPC). Its span
// processor is this package's own bounded batcher: ending a span never blocks, the queue
// never grows past OTEL_BSP_MAX_QUEUE_SIZE, and every span is counted either as exported or
// as dropped (see below).
//
// A meter provider with two readers: a periodic OTLP push that also carries the Prometheus
// metrics controller-runtime registers on its metrics.Registry (reconcile, workqueue, REST
// client), bridged with go.opentelemetry.io/contrib/bridges/prometheus; and an OpenTelemetry
// Prometheus exporter registered on that same registry, so the manager's existing /metrics
// endpoint serves the OpenTelemetry metrics too, without a second port, labelled like
// controller-runtime's series (no otel_scope_* labels unless WithPrometheusScopeLabels).
// Families the Prometheus exporter produced are kept out of the bridge, so no metric reaches
// the collector twice.
//
// Unless WithoutGlobal is given, both providers and the propagators of OTEL_PROPAGATORS (W3C
// tracecontext and baggage by default) become OpenTelemetry's globals, which is where
// instrumentation/controllerruntime looks by default.
//
// # Configuration
//
// What the OpenTelemetry specification's environment variables can say comes from them and
// from nowhere else: the service name and resource, the exporters (OTEL_TRACES_EXPORTER,
// OTEL_METRICS_EXPORTER: otlp, console or none), every OTEL_EXPORTER_OTLP_* setting, the
// sampler, the propagators, the span batching (OTEL_BSP_*), the metric interval, and
// OTEL_SDK_DISABLED. The options cover what no variable does (the Prometheus registry, the
// logger, the shutdown bound, globals, exporters for tests); an option always wins over the
// environment. Start validates what it will use, including what the exporters read themselves
// and would otherwise silently replace with a default, and fails with an error that names the
// variable and its value, for example
//
//	OTEL_TRACES_SAMPLER_ARG="1.5": must be a number between 0 and 1
//
// so that a typo in a Deployment fails the rollout instead of silently sending telemetry
// nowhere. OTEL_SDK_DISABLED=true makes Start return no-op providers.
//
// # Never block the operator
//
// A slow or unreachable collector must cost telemetry, not reconciles. Spans that find the
// queue full and batches whose export fails are dropped and counted; so are metric exports
// that fail. The SDK reports on itself through the same meter provider:
//
//	watchtower.telemetry.dropped{watchtower.telemetry.signal, watchtower.telemetry.drop_reason}
//	watchtower.telemetry.exported{watchtower.telemetry.signal}
//
// (watchtower_telemetry_dropped_total and watchtower_telemetry_exported_total on /metrics).
// The exported span count is exact: it equals the number of spans the exporter accepted.
//
// Failed exports are logged to the operator's logger (controller-runtime's, or WithLogger's),
// at most once per distinct error per 30s with a count of the repeats, instead of to stderr
// (WithoutGlobal leaves OpenTelemetry's global error handler to the process, though). Start
// also logs a warning when an endpoint's port is the other protocol's (4317 is gRPC, 4318 is
// HTTP): every export would fail. Shutdown is bounded, 5s by default (WithShutdownTimeout),
// whatever the collector does.
//
// Tests use WithSpanExporter and WithMetricExporter with in-memory exporters,
// WithPrometheusRegisterer(prometheus.NewRegistry()) so that they do not share
// controller-runtime's global registry, WithoutGlobal, and t.Setenv for any variable.
package sdk
