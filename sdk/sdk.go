package sdk

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	promBridge "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Telemetry is the OpenTelemetry setup of one operator process, as returned by Start. Its
// providers stay usable until Shutdown.
type Telemetry struct {
	tp       trace.TracerProvider
	mp       metric.MeterProvider
	flush    func(context.Context) error
	shutdown func(context.Context) error

	shutdownTimeout time.Duration // applied when Shutdown's ctx has no deadline

	shutdownStarted atomic.Bool
	shutdownDone    chan struct{}
	shutdownErr     error // written before shutdownDone is closed
}

// TracerProvider returns the tracer provider (a no-op one when OTEL_SDK_DISABLED=true).
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MeterProvider returns the meter provider (a no-op one when OTEL_SDK_DISABLED=true).
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.mp }

// ForceFlush exports the spans ended so far, then collects and pushes the metrics, waiting at
// most until ctx is done. An operator does not need it (Shutdown flushes); it is for a process
// about to exit without Shutdown and for tests. After Shutdown it does nothing.
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if t.shutdownStarted.Load() {
		return nil
	}
	return t.flush(ctx)
}

// Shutdown flushes the spans, then the metrics (so that the final span counts are included),
// stops the exporters and releases the Prometheus registerer. It returns when done or when ctx
// is, whichever comes first, with every error joined; with the collector unreachable or not
// answering it returns at ctx's deadline, counting what it could not send as dropped. A ctx
// without a deadline gets one, 5s away unless WithShutdownTimeout says otherwise, so that
// Shutdown(context.Background()) in a main.go cannot outlast the pod's termination grace
// period. It is idempotent: later calls return the first call's result (waiting for it,
// within their own ctx).
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t.shutdownStarted.CompareAndSwap(false, true) {
		if _, ok := ctx.Deadline(); !ok && t.shutdownTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t.shutdownTimeout)
			defer cancel()
		}
		t.shutdownErr = t.shutdown(ctx)
		close(t.shutdownDone)
		return t.shutdownErr
	}
	select {
	case <-t.shutdownDone:
		return t.shutdownErr
	case <-ctx.Done():
		return fmt.Errorf("sdk: waiting for a concurrent Shutdown: %w", ctx.Err())
	}
}

func noopTelemetry() *Telemetry {
	nop := func(context.Context) error { return nil }
	return &Telemetry{
		tp:           tracenoop.NewTracerProvider(),
		mp:           metricnoop.NewMeterProvider(),
		flush:        nop,
		shutdown:     nop,
		shutdownDone: make(chan struct{}),
	}
}

// Start sets up OpenTelemetry for the process: the resource, a tracer provider exporting over
// OTLP through a bounded queue, and a meter provider that pushes over OTLP (with
// controller-runtime's Prometheus metrics bridged in) and serves on controller-runtime's
// Prometheus registry. Unless WithoutGlobal is given, it installs both providers, the
// propagators (W3C tracecontext and baggage by default) and an error handler that logs to
// WithLogger's logger as OpenTelemetry's globals.
//
// Start is configured by the OTEL_* environment variables of the OpenTelemetry specification
// (docs/sdk.md lists each one and what Start does with it); options win over them. Invalid
// configuration is reported all at once, each problem naming the option or variable and its
// value. With OTEL_SDK_DISABLED=true, Start returns no-op providers and touches nothing.
//
// ctx is only used while starting; call Shutdown on the result before the process exits.
func Start(ctx context.Context, opts ...Option) (*Telemetry, error) {
	s, err := newSettings(os.Getenv, opts)
	if err != nil {
		return nil, fmt.Errorf("sdk: invalid configuration: %w", err)
	}
	if s.disabled {
		return noopTelemetry(), nil
	}
	return start(ctx, s)
}

func start(ctx context.Context, s *settings) (_ *Telemetry, retErr error) {
	warnEndpointPorts(s)
	for _, w := range s.warnings {
		s.log().Info(w.msg, w.kvs...)
	}
	errLog := newErrorLog(s.log)

	res, err := newResource(ctx, s)
	if err != nil {
		return nil, err
	}

	// Everything started so far, undone in reverse if a later step fails.
	var undo []func(context.Context) error
	defer func() {
		if retErr != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				_ = undo[i](ctx)
			}
		}
	}()

	spanExp, err := newSpanExporter(ctx, s)
	if err != nil {
		return nil, err
	}
	if spanExp != nil {
		undo = append(undo, spanExp.Shutdown)
	}
	metricExp, err := newMetricExporter(ctx, s)
	if err != nil {
		return nil, err
	}

	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	// own holds the Prometheus exporter's collector alone: what it gathers is exactly the
	// families this Telemetry serves, which the bridge must not push a second time.
	var own *prometheus.Registry
	if s.promRegisterer != nil {
		own = prometheus.NewRegistry()
	}
	var counting *countingMetricExporter
	if metricExp != nil {
		counting = &countingMetricExporter{Exporter: metricExp}
		pushOpts := []sdkmetric.PeriodicReaderOption{
			sdkmetric.WithInterval(s.metricInterval),
			sdkmetric.WithTimeout(s.metricTimeout),
		}
		if s.promGatherer != nil {
			pushOpts = append(pushOpts, sdkmetric.WithProducer(
				promBridge.NewMetricProducer(promBridge.WithGatherer(bridgeGatherer{g: s.promGatherer, own: own}))))
		}
		push := sdkmetric.NewPeriodicReader(counting, pushOpts...)
		// Until the meter provider owns the reader, shutting the reader down is what releases
		// the metric exporter.
		undo = append(undo, push.Shutdown)
		mpOpts = append(mpOpts, sdkmetric.WithReader(push))
	}

	var releaseRegisterer func()
	if reg := s.promRegisterer; reg != nil {
		guard, err := registerGuard(reg)
		if err != nil {
			return nil, err
		}
		releaseRegisterer = func() { reg.Unregister(guard) }
		undo = append(undo, func(context.Context) error { releaseRegisterer(); return nil })

		promOpts := []otelprom.Option{otelprom.WithRegisterer(teeRegisterer{Registerer: reg, own: own})}
		if !s.scopeLabels {
			promOpts = append(promOpts, otelprom.WithoutScopeInfo())
		}
		pull, err := otelprom.New(promOpts...)
		if pull != nil {
			// Shutting the reader down turns the exporter's collector, which cannot be
			// unregistered, into one that collects nothing.
			undo = append(undo, pull.Shutdown)
		}
		if err != nil {
			return nil, fmt.Errorf("sdk: creating the Prometheus exporter: %w", err)
		}
		mpOpts = append(mpOpts, sdkmetric.WithReader(pull))
	}
	for _, r := range s.extraReaders {
		mpOpts = append(mpOpts, sdkmetric.WithReader(r))
	}

	mp := sdkmetric.NewMeterProvider(mpOpts...)
	undo = append(undo, mp.Shutdown)
	self, err := newSelfMetrics(mp)
	if err != nil {
		return nil, fmt.Errorf("sdk: creating the self-observability counters: %w", err)
	}
	if counting != nil {
		counting.counters.Store(self)
	}

	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(s.sampler)}
	// With OTEL_TRACES_EXPORTER=none spans are still sampled and carry IDs: the reconcile's log
	// lines and the traceparent sent to the API server keep working, nothing is exported.
	var bsp *boundedBatchProcessor
	if spanExp != nil {
		bsp = newBoundedBatchProcessor(spanExp, self, errLog, s)
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(bsp))
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)

	if !s.noGlobal {
		otel.SetTracerProvider(tp)
		otel.SetMeterProvider(mp)
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(s.propagators...))
		// The OpenTelemetry SDK reports failed exports (the periodic metric push, the OTLP
		// exporters) only there; its default writes every one of them to stderr.
		otel.SetErrorHandler(errLog)
	}

	return &Telemetry{
		tp: tp,
		mp: mp,
		flush: func(ctx context.Context) error {
			// Spans first, so that the counts their export recorded go out with the metrics.
			return errors.Join(tp.ForceFlush(ctx), mp.ForceFlush(ctx))
		},
		shutdown: func(ctx context.Context) error {
			var errs []error
			if err := tp.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("sdk: shutting down the tracer provider: %w", err))
			}
			// The tracer provider skips its processors when ctx is already done; the processor
			// must still stop its worker and count what it holds.
			if bsp != nil {
				if err := bsp.Shutdown(ctx); err != nil {
					errs = append(errs, err)
				}
			}
			if err := mp.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("sdk: shutting down the meter provider: %w", err))
			}
			if releaseRegisterer != nil {
				releaseRegisterer()
			}
			return errors.Join(errs...)
		},
		shutdownTimeout: s.shutdownTimeout,
		shutdownDone:    make(chan struct{}),
	}, nil
}

// instanceID is service.instance.id: one random UUID per process, so that every Start in the
// process (and every restart of a pod) is told apart, while all signals of one process agree.
var instanceID = sync.OnceValue(uuid.NewString)

// newResource merges, lowest precedence first: the SDK and host attributes, the defaults
// (executable name, instance ID), the Downward API variables, OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME.
func newResource(ctx context.Context, s *settings) (*resource.Resource, error) {
	defaults := []attribute.KeyValue{
		semconv.ServiceName(executableName()),
		semconv.ServiceInstanceID(instanceID()),
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(defaults...),
		resource.WithAttributes(s.k8sAttrs...),
		resource.WithAttributes(s.envAttrs...),
	)
	if err != nil {
		return nil, fmt.Errorf("sdk: building the resource: %w", err)
	}
	return res, nil
}

// newSpanExporter returns WithSpanExporter's exporter or the one OTEL_TRACES_EXPORTER names;
// nil for none.
func newSpanExporter(ctx context.Context, s *settings) (sdktrace.SpanExporter, error) {
	if s.spanExporter != nil {
		return s.spanExporter, nil
	}
	switch s.tracesExporter {
	case exporterNone:
		return nil, nil
	case exporterConsole:
		// os.Stdout as it is now: the exporter's own default is the one of its init.
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
		if err != nil {
			return nil, fmt.Errorf("sdk: creating the console span exporter: %w", err)
		}
		return exp, nil
	}
	exp, err := newOTLPSpanExporter(ctx, s.traces)
	if err != nil {
		return nil, fmt.Errorf("sdk: creating the OTLP span exporter (%s): %w", s.traces.protocol, err)
	}
	return exp, nil
}

// newMetricExporter returns WithMetricExporter's exporter or the push exporter
// OTEL_METRICS_EXPORTER names; nil for none.
func newMetricExporter(ctx context.Context, s *settings) (sdkmetric.Exporter, error) {
	if s.metricExporter != nil {
		return s.metricExporter, nil
	}
	switch s.metricsExporter {
	case exporterNone:
		return nil, nil
	case exporterConsole:
		exp, err := stdoutmetric.New(stdoutmetric.WithWriter(os.Stdout))
		if err != nil {
			return nil, fmt.Errorf("sdk: creating the console metric exporter: %w", err)
		}
		return exp, nil
	}
	exp, err := newOTLPMetricExporter(ctx, s.metrics)
	if err != nil {
		return nil, fmt.Errorf("sdk: creating the OTLP metric exporter (%s): %w", s.metrics.protocol, err)
	}
	return exp, nil
}

// newOTLPSpanExporter passes only the default endpoint; the exporter reads everything else
// from the environment, which newSettings has validated.
func newOTLPSpanExporter(ctx context.Context, o otlpSettings) (sdktrace.SpanExporter, error) {
	if o.protocol == protocolHTTPProtobuf {
		var opts []otlptracehttp.Option
		if o.defaultEndpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(signalURL(o.defaultEndpoint, "v1/traces")))
		}
		return otlptracehttp.New(ctx, opts...)
	}
	var opts []otlptracegrpc.Option
	if o.defaultEndpoint != "" {
		opts = append(opts, otlptracegrpc.WithEndpointURL(o.defaultEndpoint))
	}
	return otlptracegrpc.New(ctx, opts...)
}

func newOTLPMetricExporter(ctx context.Context, o otlpSettings) (sdkmetric.Exporter, error) {
	if o.protocol == protocolHTTPProtobuf {
		var opts []otlpmetrichttp.Option
		if o.defaultEndpoint != "" {
			opts = append(opts, otlpmetrichttp.WithEndpointURL(signalURL(o.defaultEndpoint, "v1/metrics")))
		}
		return otlpmetrichttp.New(ctx, opts...)
	}
	var opts []otlpmetricgrpc.Option
	if o.defaultEndpoint != "" {
		opts = append(opts, otlpmetricgrpc.WithEndpointURL(o.defaultEndpoint))
	}
	return otlpmetricgrpc.New(ctx, opts...)
}

// signalURL turns a base endpoint into a signal's OTLP/HTTP URL, as the specification does for
// OTEL_EXPORTER_OTLP_ENDPOINT: http://collector:4318 becomes http://collector:4318/v1/traces.
func signalURL(base, signalPath string) string {
	u, err := url.JoinPath(base, signalPath)
	if err != nil {
		return base // unreachable: base is a constant URL
	}
	return u
}

// Compile-time checks of the interfaces the pieces are plugged into.
var (
	_ sdktrace.SpanProcessor = (*boundedBatchProcessor)(nil)
	_ sdkmetric.Exporter     = (*countingMetricExporter)(nil)
	_ prometheus.Collector   = registrationGuard{}
	_ prometheus.Gatherer    = bridgeGatherer{}
	_ prometheus.Registerer  = teeRegisterer{}
)
