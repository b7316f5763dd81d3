package otelctrl

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/gowatchtower/watchtower/semconv"
)

// widgetKind is the kind the test reconcilers reconcile unless told otherwise.
var widgetKind = schema.GroupKind{Group: "demo.example.com", Kind: "Widget"}

// testReconciler is the decorator as the builder sets it up for a controller of widgets,
// without a queue or a manager.
func testReconciler(name string, r reconcile.Reconciler, opts ...Option) reconcile.Reconciler {
	return newReconciler[reconcile.Request](name, r, newConfig(opts), widgetKind, nil, nil)
}

// testClient is c traced as NewManager traces the manager's client; marked says whether its
// reads are told apart as cache reads.
func testClient(c client.WithWatch, marked bool, opts ...Option) client.Client {
	return traceClient(c, newCallTracer(c.Scheme(), marked, opts))
}

// testTelemetry is an in-memory tracer and meter provider pair.
type testTelemetry struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	opts   []Option
}

func newTestTelemetry(t testing.TB) *testTelemetry {
	t.Helper()
	tt := &testTelemetry{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tt.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(tt.reader))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	tt.opts = []Option{WithTracerProvider(tp), WithMeterProvider(mp)}
	return tt
}

func (tt *testTelemetry) metrics(t testing.TB) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tt.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// counterValue sums the points of an int64 counter whose attributes include all of want.
func counterValue(t testing.TB, data metricdata.Aggregation, want ...attribute.KeyValue) int64 {
	t.Helper()
	sum, ok := data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("want an int64 sum, got %T", data)
	}
	var total int64
	for _, dp := range sum.DataPoints {
		if hasAll(dp.Attributes, want) {
			total += dp.Value
		}
	}
	return total
}

// histogramCount sums the counts of a float64 histogram whose attributes include all of want.
func histogramCount(t testing.TB, data metricdata.Aggregation, want ...attribute.KeyValue) uint64 {
	t.Helper()
	h, ok := data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("want a float64 histogram, got %T", data)
	}
	var total uint64
	for _, dp := range h.DataPoints {
		if hasAll(dp.Attributes, want) {
			total += dp.Count
		}
	}
	return total
}

func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// seriesCount counts data points across all metrics: the number of time series.
func seriesCount(t testing.TB, tt *testTelemetry) int {
	t.Helper()
	n := 0
	for _, data := range tt.metrics(t) {
		switch d := data.(type) {
		case metricdata.Sum[int64]:
			n += len(d.DataPoints)
		case metricdata.Histogram[float64]:
			n += len(d.DataPoints)
		case metricdata.Gauge[int64]:
			n += len(d.DataPoints)
		default:
			t.Fatalf("unexpected aggregation %T", data)
		}
	}
	return n
}

func spanAttr(s sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// forTrigger is the trigger predicate the builder appends to a For watch of widgets, recording
// into the tap tap returns.
func forTrigger(tap func() *queueTap[reconcile.Request]) *keyedTrigger {
	return &keyedTrigger{
		watchTrigger: watchTrigger{watch: semconv.TriggerWatchFor, gk: widgetKind},
		record:       func(r reconcile.Request, t trig) { tap().trigger(r, t) },
	}
}
