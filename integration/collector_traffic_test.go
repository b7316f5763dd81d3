// Hand-built operator traffic for the collector tests: reconcile traces and reconcile metrics
// with the project's vocabulary (semconv), sent over OTLP/gRPC with the OpenTelemetry Go SDK,
// as an instrumented operator would send them.
//
// Package-level names of the collector tests start with "col": the integration package is
// shared with other tests.
package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/gowatchtower/watchtower/semconv"
)

// The reconciles the collector tests send: fast successful ones, slow successful ones and fast
// failed ones. The gateway keeps the slow (≥ its threshold) and the failed ones.
const (
	colFast   = "fast"
	colSlow   = "slow"
	colFailed = "failed"

	colController        = "workload"
	colSpansPerReconcile = 3 // the reconcile span and two API call spans
	colFastTime          = 20 * time.Millisecond
	colFailedTime        = 30 * time.Millisecond
	colSlowTime          = 1500 * time.Millisecond
	colSlowThreshold     = 500 * time.Millisecond
)

// colBuckets are the explicit bucket boundaries (seconds) of the reconcile duration
// histogram the tests record.
var colBuckets = []float64{0.01, 0.05, 0.1, 0.5, 1, 5}

// colTrace is one reconcile trace a test sent.
type colTrace struct {
	Kind     string
	TraceID  string
	SpanIDs  []string // root first
	Duration time.Duration
}

// colPlan is how many reconciles of each kind to send.
type colPlan struct{ Fast, Slow, Failed int }

func (p colPlan) total() int { return p.Fast + p.Slow + p.Failed }

// colUniqueService returns a service name no other test run uses, so that Jaeger and Prometheus
// queries see only this test's data.
func colUniqueService(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// colSendTraces sends the plan's reconcile traces over OTLP/gRPC to endpoint as service.
// Each trace is a "reconcile workload" root span with a "get Workload" and an "update Workload"
// child. The children are exported first, then afterChildren runs (a test waits there, e.g.
// until the children are in Kafka, so that each trace reaches Kafka in more than one record),
// then the roots end and are exported. Timestamps are explicit, so a slow reconcile costs no
// wall time.
func colSendTraces(ctx context.Context, t *testing.T, endpoint, service string, plan colPlan, afterChildren func()) []colTrace {
	t.Helper()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is exported until ForceFlush: the test decides what goes in which export.
	bsp := sdktrace.NewBatchSpanProcessor(exp,
		sdktrace.WithBatchTimeout(time.Hour),
		sdktrace.WithMaxQueueSize(100_000),
		sdktrace.WithMaxExportBatchSize(100_000),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(bsp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	)
	defer func() {
		if err := tp.Shutdown(context.Background()); err != nil {
			t.Errorf("trace provider shutdown: %v", err)
		}
	}()
	tracer := tp.Tracer("github.com/gowatchtower/watchtower/integration")

	type open struct {
		sent *colTrace
		root trace.Span
		end  time.Time
	}
	var kinds []string
	for range plan.Fast {
		kinds = append(kinds, colFast)
	}
	for range plan.Slow {
		kinds = append(kinds, colSlow)
	}
	for range plan.Failed {
		kinds = append(kinds, colFailed)
	}
	now := time.Now()
	var roots []open
	for i, kind := range kinds {
		d := colFastTime
		switch kind {
		case colSlow:
			d = colSlowTime
		case colFailed:
			d = colFailedTime
		}
		start := now.Add(-d - time.Duration(i)*time.Millisecond)
		result := semconv.ReconcileResultSuccess
		if kind == colFailed {
			result = semconv.ReconcileResultError
		}
		rctx, root := tracer.Start(ctx, semconv.ReconcileSpanName(colController),
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithTimestamp(start),
			trace.WithAttributes(
				semconv.ControllerName(colController),
				semconv.ControllerGroup("apps.example.com"),
				semconv.ControllerKind("Workload"),
				semconv.ObjectNamespace("default"),
				semconv.ObjectName(fmt.Sprintf("%s-%d", kind, i)),
				semconv.ReconcileID(fmt.Sprintf("%08x-%s", i, kind)),
				result,
			))
		st := &colTrace{Kind: kind, TraceID: root.SpanContext().TraceID().String(), SpanIDs: []string{root.SpanContext().SpanID().String()}, Duration: d}
		for j, verb := range []string{"get", "update"} {
			cs := start.Add(time.Millisecond + time.Duration(j)*(d/2))
			_, child := tracer.Start(rctx, semconv.APICallSpanName(verb, "Workload"),
				trace.WithSpanKind(trace.SpanKindClient),
				trace.WithTimestamp(cs),
				trace.WithAttributes(semconv.APIVerbKey.String(verb), semconv.APIKindKey.String("Workload"), semconv.APICodeKey.Int(200)))
			child.End(trace.WithTimestamp(cs.Add(d / 4)))
			st.SpanIDs = append(st.SpanIDs, child.SpanContext().SpanID().String())
		}
		roots = append(roots, open{sent: st, root: root, end: start.Add(d)})
	}
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatalf("export the API call spans: %v", err)
	}
	if afterChildren != nil {
		afterChildren()
	}
	var sent []colTrace
	for _, r := range roots {
		if r.sent.Kind == colFailed {
			err := errors.New("workload default/failed: admission webhook denied the update")
			r.root.RecordError(err)
			r.root.SetStatus(codes.Error, err.Error())
		}
		r.root.End(trace.WithTimestamp(r.end))
		sent = append(sent, *r.sent)
	}
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatalf("export the reconcile spans: %v", err)
	}
	return sent
}

// colCountingExporter counts the metric points its wrapped exporter exported successfully, by
// metric name: exactly what the collector was handed.
type colCountingExporter struct {
	sdkmetric.Exporter
	mu     sync.Mutex
	points map[string]int
}

func (e *colCountingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	if err := e.Exporter.Export(ctx, rm); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			n := 0
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				n = len(d.DataPoints)
			case metricdata.Histogram[int64]:
				n = len(d.DataPoints)
			case metricdata.Sum[int64]:
				n = len(d.DataPoints)
			case metricdata.Sum[float64]:
				n = len(d.DataPoints)
			case metricdata.Gauge[int64]:
				n = len(d.DataPoints)
			case metricdata.Gauge[float64]:
				n = len(d.DataPoints)
			}
			e.points[m.Name] += n
		}
	}
	return nil
}

func (e *colCountingExporter) exported() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.points {
		out[k] = v
	}
	return out
}

// colSendMetrics records the reconcile duration histogram and the reconcile counter for
// the plan's reconciles and exports them over OTLP/gRPC to endpoint, `exports` times in all
// (cumulative: every export repeats every series). It returns the points exported, by metric
// name.
func colSendMetrics(ctx context.Context, t *testing.T, endpoint, service string, plan colPlan, exports int) map[string]int {
	t.Helper()
	exp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(endpoint), otlpmetricgrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	counting := &colCountingExporter{Exporter: exp, points: map[string]int{}}
	// Exports happen only when the test flushes (and once more at shutdown).
	reader := sdkmetric.NewPeriodicReader(counting, sdkmetric.WithInterval(time.Hour))
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(reader),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	)
	meter := mp.Meter("github.com/gowatchtower/watchtower/integration")
	duration, err := meter.Float64Histogram(semconv.ReconcileDurationName,
		metric.WithUnit(semconv.ReconcileDurationUnit),
		metric.WithDescription(semconv.ReconcileDurationDescription),
		metric.WithExplicitBucketBoundaries(colBuckets...))
	if err != nil {
		t.Fatal(err)
	}
	reconciles, err := meter.Int64Counter(semconv.ReconcilesName,
		metric.WithUnit(semconv.ReconcilesUnit),
		metric.WithDescription(semconv.ReconcilesDescription))
	if err != nil {
		t.Fatal(err)
	}
	record := func(n int, d time.Duration, result attribute.KeyValue) {
		attrs := metric.WithAttributes(semconv.ControllerName(colController), result)
		for range n {
			duration.Record(ctx, d.Seconds(), attrs)
			reconciles.Add(ctx, 1, attrs)
		}
	}
	record(plan.Fast, colFastTime, semconv.ReconcileResultSuccess)
	record(plan.Slow, colSlowTime, semconv.ReconcileResultSuccess)
	record(plan.Failed, colFailedTime, semconv.ReconcileResultError)
	for i := 1; i < exports; i++ {
		if err := mp.ForceFlush(ctx); err != nil {
			t.Fatalf("metrics export %d: %v", i, err)
		}
	}
	if err := mp.Shutdown(ctx); err != nil { // the last export
		t.Fatalf("metrics export at shutdown: %v", err)
	}
	return counting.exported()
}
