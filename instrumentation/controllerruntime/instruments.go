package otelctrl

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/gowatchtower/watchtower/semconv"
)

// secondsBuckets are histogram boundaries for durations in seconds, from a millisecond (a cache
// read) to a minute (a reconcile stuck behind a slow API server). OpenTelemetry's default
// boundaries are meant for milliseconds and would put every reconcile in the first bucket.
var secondsBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// instruments are the metric instruments of one meter provider; they are created once per
// provider and shared by every wrapper that uses it.
type instruments struct {
	reconcileDuration metric.Float64Histogram
	reconciles        metric.Int64Counter
	queueWait         metric.Float64Histogram
	queueAdds         metric.Int64Counter
	apiDuration       metric.Float64Histogram
	events            metric.Int64Counter

	// active holds an in-flight counter per controller, read by an observable gauge: a gauge
	// callback costs nothing on the reconcile path, two UpDownCounter.Add calls would.
	active sync.Map // controller name -> *atomic.Int64

	// loops holds every controller's hot-loop and stuck detector, read by two gauges.
	loops sync.Map // *loopDetector -> struct{}

	// apiSets caches the attribute sets of API-call metrics: building a set per call is the most
	// expensive part of recording a measurement, and the combinations are few.
	apiSets sync.Map // apiSetKey -> []metric.RecordOption

	// cacheReads are the series of watchtower.api.cache_reads, read by an observable counter:
	// a cache read then costs one atomic add, where a synchronous instrument would cost more
	// than the read itself. Bounded by controllers × verbs × kinds × codes.
	cacheMu    sync.Mutex
	cacheReads map[apiSetKey]*cacheSeries
}

// cacheSeries is one series of watchtower.api.cache_reads.
type cacheSeries struct {
	n    atomic.Int64
	opts []metric.ObserveOption
}

var (
	instrumentsMu sync.Mutex
	instrumentsBy = map[metric.MeterProvider]*instruments{}
)

// instrumentsFor returns the shared instruments of mp, creating them on first use. Instrument
// creation errors are not fatal: the OpenTelemetry API returns usable no-op instruments with
// the error, and telemetry problems must never stop an operator.
func instrumentsFor(mp metric.MeterProvider) *instruments {
	instrumentsMu.Lock()
	defer instrumentsMu.Unlock()
	if in, ok := instrumentsBy[mp]; ok {
		return in
	}
	m := mp.Meter(ScopeName)
	in := &instruments{cacheReads: map[apiSetKey]*cacheSeries{}}
	in.reconcileDuration, _ = m.Float64Histogram(semconv.ReconcileDurationName,
		metric.WithUnit(semconv.ReconcileDurationUnit), metric.WithDescription(semconv.ReconcileDurationDescription),
		metric.WithExplicitBucketBoundaries(secondsBuckets...))
	in.reconciles, _ = m.Int64Counter(semconv.ReconcilesName,
		metric.WithUnit(semconv.ReconcilesUnit), metric.WithDescription(semconv.ReconcilesDescription))
	in.queueWait, _ = m.Float64Histogram(semconv.QueueWaitName,
		metric.WithUnit(semconv.QueueWaitUnit), metric.WithDescription(semconv.QueueWaitDescription),
		metric.WithExplicitBucketBoundaries(secondsBuckets...))
	in.queueAdds, _ = m.Int64Counter(semconv.QueueAddsName,
		metric.WithUnit(semconv.QueueAddsUnit), metric.WithDescription(semconv.QueueAddsDescription))
	in.apiDuration, _ = m.Float64Histogram(semconv.APIDurationName,
		metric.WithUnit(semconv.APIDurationUnit), metric.WithDescription(semconv.APIDurationDescription),
		metric.WithExplicitBucketBoundaries(secondsBuckets...))
	_, _ = m.Int64ObservableCounter(semconv.APICacheReadsName,
		metric.WithUnit(semconv.APICacheReadsUnit), metric.WithDescription(semconv.APICacheReadsDescription),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			in.cacheMu.Lock()
			defer in.cacheMu.Unlock()
			for _, s := range in.cacheReads {
				o.Observe(s.n.Load(), s.opts...)
			}
			return nil
		}))
	in.events, _ = m.Int64Counter(semconv.EventsName,
		metric.WithUnit(semconv.EventsUnit), metric.WithDescription(semconv.EventsDescription))
	_, _ = m.Int64ObservableUpDownCounter(semconv.ReconcileActiveName,
		metric.WithUnit(semconv.ReconcileActiveUnit), metric.WithDescription(semconv.ReconcileActiveDescription),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			in.active.Range(func(k, v any) bool {
				o.Observe(v.(*atomic.Int64).Load(), metric.WithAttributes(semconv.ControllerName(k.(string))))
				return true
			})
			return nil
		}))
	hotGauge, _ := m.Int64ObservableGauge(semconv.ControllerHotLoopingObjectsName,
		metric.WithUnit(semconv.ControllerHotLoopingObjectsUnit), metric.WithDescription(semconv.ControllerHotLoopingObjectsDescription))
	stuckGauge, _ := m.Int64ObservableGauge(semconv.ControllerStuckObjectsName,
		metric.WithUnit(semconv.ControllerStuckObjectsUnit), metric.WithDescription(semconv.ControllerStuckObjectsDescription))
	// One callback for both: each collection sweeps every detector once (sweep ends hot loops
	// of objects no longer reconciled, and finds objects stuck without a retry).
	_, _ = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := time.Now()
		in.loops.Range(func(k, _ any) bool {
			d := k.(*loopDetector)
			hot, stuck := d.sweep(now)
			opt := metric.WithAttributeSet(attribute.NewSet(semconv.ControllerName(d.controller)))
			o.ObserveInt64(hotGauge, int64(hot), opt)
			o.ObserveInt64(stuckGauge, int64(stuck), opt)
			return true
		})
		return nil
	}, hotGauge, stuckGauge)
	instrumentsBy[mp] = in
	return in
}

// activeFor returns the in-flight counter of a controller.
func (in *instruments) activeFor(controller string) *atomic.Int64 {
	v, _ := in.active.LoadOrStore(controller, new(atomic.Int64))
	return v.(*atomic.Int64)
}

type apiSetKey struct {
	controller, verb, group, kind, subresource string
	code                                       int
}

// set is the attribute set of an API-call metric: what both API metrics carry, and extra.
func (k apiSetKey) set(extra ...attribute.KeyValue) attribute.Set {
	return attribute.NewSet(append([]attribute.KeyValue{
		semconv.ControllerName(k.controller),
		semconv.APIVerbKey.String(k.verb),
		semconv.APIGroup(k.group),
		semconv.APIKind(k.kind),
		semconv.APICode(k.code),
	}, extra...)...)
}

func (in *instruments) apiRecordOpts(k apiSetKey) []metric.RecordOption {
	if v, ok := in.apiSets.Load(k); ok {
		return v.([]metric.RecordOption)
	}
	set := k.set(semconv.APISubresource(k.subresource))
	opts := []metric.RecordOption{metric.WithAttributeSet(set)}
	v, _ := in.apiSets.LoadOrStore(k, opts)
	return v.([]metric.RecordOption)
}

// cacheSeriesFor returns the watchtower.api.cache_reads series of k, creating it on first use.
func (in *instruments) cacheSeriesFor(k apiSetKey) *cacheSeries {
	in.cacheMu.Lock()
	defer in.cacheMu.Unlock()
	if s, ok := in.cacheReads[k]; ok {
		return s
	}
	s := &cacheSeries{opts: []metric.ObserveOption{metric.WithAttributeSet(k.set())}}
	in.cacheReads[k] = s
	return s
}
