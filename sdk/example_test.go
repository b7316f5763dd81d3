package sdk_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/gowatchtower/watchtower/sdk"
	"github.com/gowatchtower/watchtower/semconv"
)

// Start with in-memory exporters instead of OTLP, as a unit test of an operator would.
func Example() {
	ctx := context.Background()
	spans := tracetest.NewInMemoryExporter()
	tel, err := sdk.Start(ctx,
		sdk.WithServiceName("memcached-operator"),
		sdk.WithoutGlobal(),
		sdk.WithSpanExporter(spans),
		sdk.WithMetricExporter(discard{}),
		// A private registry: tests must not share controller-runtime's global one.
		sdk.WithPrometheusRegisterer(prometheus.NewRegistry()),
		sdk.WithPrometheusGatherer(nil),
	)
	if err != nil {
		fmt.Println(err)
		return
	}

	tracer := tel.TracerProvider().Tracer("example")
	rctx, reconcile := tracer.Start(ctx, semconv.ReconcileSpanName("memcached"))
	_, get := tracer.Start(rctx, semconv.APICallSpanName("get", "Memcached"))
	get.End()
	reconcile.End()

	if err := tel.ForceFlush(ctx); err != nil {
		fmt.Println(err)
	}
	for _, s := range spans.GetSpans() {
		service, _ := s.Resource.Set().Value("service.name")
		fmt.Printf("%s (service %s, child of the reconcile: %t)\n",
			s.Name, service.AsString(), s.Parent.SpanID() == reconcile.SpanContext().SpanID())
	}
	if err := tel.Shutdown(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// get Memcached (service memcached-operator, child of the reconcile: true)
	// reconcile memcached (service memcached-operator, child of the reconcile: false)
}

// The OpenTelemetry metrics are served by the Prometheus registry the manager already
// serves (controller-runtime's metrics.Registry by default; a private one here).
func Example_prometheus() {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	tel, err := sdk.Start(ctx,
		sdk.WithoutGlobal(),
		sdk.WithSpanExporter(tracetest.NewNoopExporter()),
		sdk.WithMetricExporter(discard{}),
		sdk.WithPrometheusRegisterer(reg),
		sdk.WithPrometheusGatherer(reg),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = tel.Shutdown(ctx) }()

	reconciles, _ := tel.MeterProvider().Meter("example").Int64Counter(semconv.ReconcilesName)
	reconciles.Add(ctx, 1, metric.WithAttributes(semconv.ControllerName("memcached")))

	families, _ := reg.Gather()
	for _, f := range families {
		fmt.Println(f.GetName())
	}
	// Output:
	// target_info
	// watchtower_reconciles_total
}

// A kubebuilder cmd/main.go: start telemetry before the manager, shut it down after the
// manager returns. The manager's metrics server (":8080" here) then serves the OpenTelemetry
// metrics next to controller-runtime's own, and both are pushed over OTLP to the endpoint in
// OTEL_EXPORTER_OTLP_ENDPOINT.
func Example_kubebuilderMain() {
	setupLog := ctrl.Log.WithName("setup")
	ctx := ctrl.SetupSignalHandler()

	tel, err := sdk.Start(ctx,
		sdk.WithServiceName("memcached-operator"),
		sdk.WithServiceVersion("v0.1.0"),
	)
	if err != nil {
		setupLog.Error(err, "unable to set up OpenTelemetry")
		os.Exit(1)
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Metrics: metricsserver.Options{BindAddress: ":8080"},
	})
	if err != nil {
		setupLog.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	// ... set up the reconcilers with instrumentation/controllerruntime here ...

	runErr := mgr.Start(ctx)

	// ctx is cancelled by now (that is why the manager returned): give the final flush a
	// fresh, bounded one, so a missing collector delays the pod's exit by at most 10s.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := tel.Shutdown(shutdownCtx); err != nil {
		setupLog.Error(err, "flushing telemetry")
	}
	cancel()
	if runErr != nil {
		setupLog.Error(runErr, "problem running the manager")
		os.Exit(1)
	}
}

// discard is a metric exporter that drops everything. Real programs keep the default OTLP
// exporter, or pass another backend's exporter (e.g. stdoutmetric) to WithMetricExporter.
type discard struct{}

func (discard) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return sdkmetric.DefaultTemporalitySelector(k)
}

func (discard) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}
func (discard) Export(context.Context, *metricdata.ResourceMetrics) error { return nil }
func (discard) ForceFlush(context.Context) error                          { return nil }
func (discard) Shutdown(context.Context) error                            { return nil }
