package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/gowatchtower/watchtower/sdk"
	"github.com/gowatchtower/watchtower/semconv"
)

// Start with in-memory exporters instead of OTLP, as a unit test of an operator would. The
// service name comes from OTEL_SERVICE_NAME, as everything the environment can say does; a
// Deployment sets it, a test sets it with t.Setenv.
func Example() {
	defer setenv("OTEL_SERVICE_NAME", "memcached-operator")()

	ctx := context.Background()
	spans := tracetest.NewInMemoryExporter()
	testOptions := []sdk.Option{
		sdk.WithoutGlobal(),
		sdk.WithSpanExporter(spans),
		sdk.WithMetricExporter(discard{}),
		// A private registry: tests must not share controller-runtime's global one.
		sdk.WithPrometheusRegisterer(prometheus.NewRegistry()),
	}
	tel, err := sdk.Start(ctx, testOptions...)
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
// serves (controller-runtime's metrics.Registry by default; a private one here), labelled like
// controller-runtime's own series.
func Example_prometheus() {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	tel, err := sdk.Start(ctx,
		sdk.WithoutGlobal(),
		sdk.WithSpanExporter(tracetest.NewNoopExporter()),
		sdk.WithMetricExporter(discard{}),
		sdk.WithPrometheusRegisterer(reg),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = tel.Shutdown(ctx) }()

	reconciles, _ := tel.MeterProvider().Meter("example").Int64Counter(semconv.ReconcilesName)
	reconciles.Add(ctx, 1, metric.WithAttributes(semconv.ControllerName("memcached")))

	printSeries(reg, semconv.ReconcilesPrometheusName)
	// Output:
	// watchtower_reconciles_total{watchtower_controller_name="memcached"} 1
}

// WithPrometheusScopeLabels keeps the labels naming the meter that recorded each series.
func ExampleWithPrometheusScopeLabels() {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	tel, err := sdk.Start(ctx,
		sdk.WithPrometheusScopeLabels(),
		sdk.WithoutGlobal(),
		sdk.WithSpanExporter(tracetest.NewNoopExporter()),
		sdk.WithMetricExporter(discard{}),
		sdk.WithPrometheusRegisterer(reg),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = tel.Shutdown(ctx) }()

	reconciles, _ := tel.MeterProvider().Meter("example").Int64Counter(semconv.ReconcilesName)
	reconciles.Add(ctx, 1, metric.WithAttributes(semconv.ControllerName("memcached")))

	printSeries(reg, semconv.ReconcilesPrometheusName)
	// Output:
	// watchtower_reconciles_total{otel_scope_name="example",otel_scope_schema_url="",otel_scope_version="",watchtower_controller_name="memcached"} 1
}

// printSeries prints the series of one family in the text exposition format.
func printSeries(g prometheus.Gatherer, family string) {
	families, err := g.Gather()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range families {
		if f.GetName() != family {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			fmt.Printf("%s{%s} %g\n", family, strings.Join(labels, ","), m.GetCounter().GetValue())
		}
	}
}

// A kubebuilder cmd/main.go: start telemetry before the manager, shut it down after the
// manager returns and before os.Exit. The manager's metrics server (":8080" here) then serves
// the OpenTelemetry metrics next to controller-runtime's own, and both are pushed over OTLP to
// the endpoint in OTEL_EXPORTER_OTLP_ENDPOINT (port 4318 for the default http/protobuf, 4317
// with OTEL_EXPORTER_OTLP_PROTOCOL=grpc).
func Example_kubebuilderMain() {
	setupLog := ctrl.Log.WithName("setup")
	ctx := ctrl.SetupSignalHandler()

	// OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT and the other variables come from the
	// Deployment (docs/sdk.md).
	tel, err := sdk.Start(ctx)
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

	// Not deferred: os.Exit below would skip it. ctx is cancelled by now (that is why the
	// manager returned), hence a fresh one; Shutdown bounds it (5s by default), so a missing
	// collector cannot hold the pod past its termination grace period.
	if err := tel.Shutdown(context.Background()); err != nil {
		setupLog.Error(err, "unable to flush telemetry")
	}
	if runErr != nil {
		setupLog.Error(runErr, "problem running the manager")
		os.Exit(1)
	}
}

// WithLogger sends the SDK's own messages to the operator's logger (funcr printing to stdout
// here; controller-runtime's logger by default). Here the endpoint has the OTLP/gRPC port while
// the protocol is the default http/protobuf, so Start warns, once, with the fix.
func ExampleWithLogger() {
	defer setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otelcol-watchtower.observability:4317")()

	logger := funcr.New(func(_, args string) { fmt.Println(args) }, funcr.Options{})
	tel, err := sdk.Start(context.Background(),
		sdk.WithLogger(logger),
		sdk.WithoutGlobal(),
		sdk.WithMetricExporter(discard{}),
		sdk.WithPrometheusRegisterer(prometheus.NewRegistry()),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = tel.Shutdown(context.Background()) // nothing was recorded: nothing is sent
	// Output:
	// "level"=0 "msg"="OTLP endpoint port does not match the protocol: every export will fail and be counted as dropped" "signals"="traces" "endpoint"="http://otelcol-watchtower.observability:4317" "endpointFrom"="OTEL_EXPORTER_OTLP_ENDPOINT" "protocol"="http/protobuf" "protocolFrom"="default" "fix"="4317 is the OTLP/gRPC port: use port 4318 in OTEL_EXPORTER_OTLP_ENDPOINT for http/protobuf, or set OTEL_EXPORTER_OTLP_PROTOCOL=grpc"
}

// Shutdown(context.Background()) is bounded even when the collector accepts connections and
// never answers: here by one second instead of the default five.
func ExampleWithShutdownTimeout() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lis.Close()
	go func() {
		var held []net.Conn // held open, never answered
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			held = append(held, conn)
		}
	}()

	defer setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())()

	ctx := context.Background()
	tel, err := sdk.Start(ctx,
		sdk.WithShutdownTimeout(time.Second),
		sdk.WithLogger(logr.Discard()),
		sdk.WithoutGlobal(),
		sdk.WithPrometheusRegisterer(prometheus.NewRegistry()),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, span := tel.TracerProvider().Tracer("example").Start(ctx, semconv.ReconcileSpanName("memcached"))
	span.End()

	start := time.Now()
	err = tel.Shutdown(ctx)
	fmt.Println("returned within the bound:", time.Since(start) < 3*time.Second)
	fmt.Println("gave up at the deadline:", errors.Is(err, context.DeadlineExceeded))
	// Output:
	// returned within the bound: true
	// gave up at the deadline: true
}

// setenv sets an environment variable until the returned function restores it: examples
// have no t.Setenv.
func setenv(name, value string) (restore func()) {
	old, had := os.LookupEnv(name)
	_ = os.Setenv(name, value)
	return func() {
		if had {
			_ = os.Setenv(name, old)
		} else {
			_ = os.Unsetenv(name)
		}
	}
}

// discard is a metric exporter that drops everything. Real programs keep the exporter that
// OTEL_METRICS_EXPORTER selects (OTLP by default), or pass another backend's exporter to
// WithMetricExporter.
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

// An operator that sets up its own tracer provider (not sdk.Start) keeps chains of linked
// reconciles whole under a ratio by wrapping its sampler.
func ExampleSampleLinked() {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdk.SampleLinked(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01)))))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	writer := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true})
	_, span := tp.Tracer("example").Start(context.Background(), "reconcile workload", trace.WithLinks(trace.Link{SpanContext: writer}))
	defer span.End()
	fmt.Println("sampled:", span.SpanContext().IsSampled())
	// Output: sampled: true
}
