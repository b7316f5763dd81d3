package otelctrl

import (
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every span and metric this package emits.
const ScopeName = "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"

// Option configures the instrumentation.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
	// apiSpansOutsideReconcile starts a root span for client calls made outside any reconcile.
	apiSpansOutsideReconcile bool
	// logCorrelation adds trace_id and span_id to the reconcile context's logger.
	logCorrelation bool
	// writerAnnotation sets tracing.k8s.io/traceparent on the objects the client writes.
	writerAnnotation bool
	// The hot-loop and stuck thresholds (loops.go).
	hotLoopReconciles int
	hotLoopWindow     time.Duration
	stuckAfter        time.Duration
}

func newConfig(opts []Option) config {
	c := config{logCorrelation: true, writerAnnotation: true,
		hotLoopReconciles: defaultHotLoopReconciles, hotLoopWindow: defaultHotLoopWindow, stuckAfter: defaultStuckAfter}
	for _, o := range opts {
		o.apply(&c)
	}
	if c.tracerProvider == nil {
		c.tracerProvider = otel.GetTracerProvider()
	}
	if c.meterProvider == nil {
		c.meterProvider = otel.GetMeterProvider()
	}
	if c.propagator == nil {
		c.propagator = otel.GetTextMapPropagator()
	}
	return c
}

// WithTracerProvider sets the tracer provider; the default is the global one.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tracerProvider = tp })
}

// WithMeterProvider sets the meter provider; the default is the global one.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// WithPropagator sets the propagator the transport injects into API requests; the default is
// the global one (package sdk sets W3C trace context and baggage).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.propagator = p })
}

// WithAPISpansOutsideReconcile makes client calls and API requests made outside any reconcile
// (at startup, in a runnable, by leader election) start root spans of their own. By default
// they are measured in metrics but not traced, so that background traffic does not flood the
// trace backend with one-span traces.
func WithAPISpansOutsideReconcile() Option {
	return optionFunc(func(c *config) { c.apiSpansOutsideReconcile = true })
}

// WithoutLogCorrelation stops the decorator from adding trace_id and span_id to the logger in
// the reconcile context.
func WithoutLogCorrelation() Option {
	return optionFunc(func(c *config) { c.logCorrelation = false })
}

// WithoutTraceparentAnnotation stops the client from writing the tracing.k8s.io/traceparent and
// tracing.k8s.io/tracestate annotations (KEP-5915) on the objects it creates, updates and
// patches. The annotations cost about 70 bytes per written object; without them, a reconcile
// of what this operator wrote no longer links to the write (docs/causality.md).
func WithoutTraceparentAnnotation() Option {
	return optionFunc(func(c *config) { c.writerAnnotation = false })
}
