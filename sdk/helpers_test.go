package sdk

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/gowatchtower/watchtower/semconv"
)

// liveness bounds waits that only detect a deadlock; no test asserts how long anything takes.
const liveness = 30 * time.Second

// Test-only options reaching the unexported hooks of config.
func withReader(r sdkmetric.Reader) Option {
	return optionFunc(func(c *config) { c.extraReaders = append(c.extraReaders, r) })
}

// withSampler sets a sampler that OTEL_TRACES_SAMPLER cannot name.
func withSampler(s sdktrace.Sampler) Option {
	return optionFunc(func(c *config) { c.sampler = s })
}

// noTimerExports sets OTEL_BSP_SCHEDULE_DELAY far beyond any test, so that spans are only
// exported by a full batch, ForceFlush or Shutdown.
func noTimerExports(t *testing.T) {
	t.Helper()
	t.Setenv(envBSPScheduleDelay, "3600000")
}

// clearEnv blanks every variable Start or the OTLP exporters read, so that the machine's
// environment cannot leak into a test; t.Setenv restores them afterwards.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
		}
	}
	for _, k := range []string{envPodName, envPodNamespace, envPodUID, envNodeName} {
		t.Setenv(k, "")
	}
}

// startTest calls Start with a private Prometheus registry (which the bridge then reads too, so
// its filter is always exercised), no globals, and the given options on top; Shutdown runs at
// cleanup.
func startTest(t *testing.T, opts ...Option) *Telemetry {
	t.Helper()
	reg := prometheus.NewRegistry()
	base := []Option{WithoutGlobal(), WithPrometheusRegisterer(reg)}
	tel, err := Start(context.Background(), append(base, opts...)...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), liveness)
		defer cancel()
		_ = tel.Shutdown(ctx)
	})
	return tel
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), liveness)
	t.Cleanup(cancel)
	return ctx
}

func endSpans(tel *Telemetry, name string, n int) {
	tr := tel.TracerProvider().Tracer("test")
	for range n {
		_, s := tr.Start(context.Background(), name)
		s.End()
	}
}

// collect reads a manual reader, failing the test on error.
func collect(t *testing.T, r sdkmetric.Reader) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect: %v", err)
	}
	return rm
}

// sumValue is the value of the int64 sum named name with exactly attrs, 0 if absent.
func sumValue(rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) int64 {
	want := attribute.NewSet(attrs...)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range s.DataPoints {
					if dp.Attributes.Equals(&want) {
						return dp.Value
					}
				}
			}
		}
	}
	return 0
}

func droppedTraces(rm metricdata.ResourceMetrics, reason attribute.KeyValue) int64 {
	return sumValue(rm, semconv.TelemetryDroppedName, semconv.TelemetrySignalTraces, reason)
}

func exportedTraces(rm metricdata.ResourceMetrics) int64 {
	return sumValue(rm, semconv.TelemetryExportedName, semconv.TelemetrySignalTraces)
}

// blockingSpanExporter holds every export until release is closed (or the export's ctx is
// done), announcing each batch's size on entered first.
type blockingSpanExporter struct {
	entered chan int
	release chan struct{}

	mu       sync.Mutex
	exported int
}

func newBlockingSpanExporter() *blockingSpanExporter {
	return &blockingSpanExporter{entered: make(chan int, 1000), release: make(chan struct{})}
}

func (e *blockingSpanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.entered <- len(spans)
	select {
	case <-e.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exported += len(spans)
	return nil
}

func (*blockingSpanExporter) Shutdown(context.Context) error { return nil }

func (e *blockingSpanExporter) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.exported
}

// failingSpanExporter rejects every batch, like an OTLP exporter that gave up its retries.
type failingSpanExporter struct{}

func (failingSpanExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	return errors.New("collector unavailable")
}
func (failingSpanExporter) Shutdown(context.Context) error { return nil }

// metricSnapshot is what memMetricExporter keeps of one export: the ResourceMetrics passed
// to Export are reused by the SDK afterwards, so only plain values are kept.
type metricSnapshot struct {
	points int
	names  []string                      // every metric name, in order, duplicates kept
	sums   map[string]map[string]float64 // name -> attribute set encoding -> value
	res    map[string]string
}

// memMetricExporter is an in-memory metric exporter; fail makes Export return an error.
type memMetricExporter struct {
	mu    sync.Mutex
	fail  bool
	snaps []metricSnapshot
}

func (*memMetricExporter) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return sdkmetric.DefaultTemporalitySelector(k)
}

func (*memMetricExporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

func (e *memMetricExporter) Export(_ context.Context, rm *metricdata.ResourceMetrics) error {
	snap := metricSnapshot{points: dataPoints(rm), sums: map[string]map[string]float64{}, res: map[string]string{}}
	for _, kv := range rm.Resource.Attributes() {
		snap.res[string(kv.Key)] = kv.Value.String()
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			snap.names = append(snap.names, m.Name)
			vals := map[string]float64{}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					vals[dp.Attributes.Encoded(attribute.DefaultEncoder())] = float64(dp.Value)
				}
			case metricdata.Sum[float64]:
				for _, dp := range d.DataPoints {
					vals[dp.Attributes.Encoded(attribute.DefaultEncoder())] = dp.Value
				}
			}
			snap.sums[m.Name] = vals
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.snaps = append(e.snaps, snap)
	if e.fail {
		return errors.New("collector unavailable")
	}
	return nil
}

func (*memMetricExporter) ForceFlush(context.Context) error { return nil }
func (*memMetricExporter) Shutdown(context.Context) error   { return nil }

func (e *memMetricExporter) setFail(f bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fail = f
}

func (e *memMetricExporter) last(t *testing.T) metricSnapshot {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.snaps) == 0 {
		t.Fatal("no metric export happened")
	}
	return e.snaps[len(e.snaps)-1]
}

func encoded(kvs ...attribute.KeyValue) string {
	s := attribute.NewSet(kvs...)
	return s.Encoded(attribute.DefaultEncoder())
}
