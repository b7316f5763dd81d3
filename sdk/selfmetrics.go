package sdk

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/gowatchtower/watchtower/semconv"
)

// instrumentationName is the scope of the SDK's own metrics.
const instrumentationName = "github.com/gowatchtower/watchtower/sdk"

// selfMetrics counts what the SDK exported and what it dropped, per signal and reason. The
// attribute sets are built once: OnEnd records on the reconcile's path and must not allocate.
type selfMetrics struct {
	dropped  metric.Int64Counter
	exported metric.Int64Counter

	tracesQueueFull    metric.AddOption
	tracesExportFailed metric.AddOption
	tracesExported     metric.AddOption
	metricsFailed      metric.AddOption
	metricsExported    metric.AddOption
}

func newSelfMetrics(mp metric.MeterProvider) (*selfMetrics, error) {
	m := mp.Meter(instrumentationName)
	dropped, err := m.Int64Counter(semconv.TelemetryDroppedName,
		metric.WithUnit(semconv.TelemetryDroppedUnit),
		metric.WithDescription(semconv.TelemetryDroppedDescription))
	if err != nil {
		return nil, err
	}
	exported, err := m.Int64Counter(semconv.TelemetryExportedName,
		metric.WithUnit(semconv.TelemetryExportedUnit),
		metric.WithDescription(semconv.TelemetryExportedDescription))
	if err != nil {
		return nil, err
	}
	set := func(kvs ...attribute.KeyValue) metric.AddOption {
		return metric.WithAttributeSet(attribute.NewSet(kvs...))
	}
	return &selfMetrics{
		dropped:            dropped,
		exported:           exported,
		tracesQueueFull:    set(semconv.TelemetrySignalTraces, semconv.TelemetryDropReasonQueueFull),
		tracesExportFailed: set(semconv.TelemetrySignalTraces, semconv.TelemetryDropReasonExportFailed),
		tracesExported:     set(semconv.TelemetrySignalTraces),
		metricsFailed:      set(semconv.TelemetrySignalMetrics, semconv.TelemetryDropReasonExportFailed),
		metricsExported:    set(semconv.TelemetrySignalMetrics),
	}, nil
}

// countingMetricExporter wraps the push exporter so that every export is counted: its data
// points as exported on success, as dropped{export_failed} on error. The counts are recorded
// on the same meter provider, so they reach the collector with the next export.
type countingMetricExporter struct {
	sdkmetric.Exporter
	// counters is bound after the meter provider exists (it needs this exporter first); an
	// export before that (impossible with a positive interval, but cheap to guard) is not
	// counted.
	counters atomic.Pointer[selfMetrics]
}

func (e *countingMetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	n := int64(dataPoints(rm))
	err := e.Exporter.Export(ctx, rm)
	if c := e.counters.Load(); c != nil && n > 0 {
		// The export's ctx may be done already; the counters must still record.
		if err != nil {
			c.dropped.Add(context.Background(), n, c.metricsFailed)
		} else {
			c.exported.Add(context.Background(), n, c.metricsExported)
		}
	}
	return err
}

// dataPoints counts the points of every aggregation the SDK and the Prometheus bridge emit.
func dataPoints(rm *metricdata.ResourceMetrics) int {
	n := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				n += len(d.DataPoints)
			case metricdata.Gauge[float64]:
				n += len(d.DataPoints)
			case metricdata.Sum[int64]:
				n += len(d.DataPoints)
			case metricdata.Sum[float64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[int64]:
				n += len(d.DataPoints)
			case metricdata.Histogram[float64]:
				n += len(d.DataPoints)
			case metricdata.ExponentialHistogram[int64]:
				n += len(d.DataPoints)
			case metricdata.ExponentialHistogram[float64]:
				n += len(d.DataPoints)
			case metricdata.Summary:
				n += len(d.DataPoints)
			}
		}
	}
	return n
}
