package otelctrl

import (
	"context"
	"io"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// The benchmarks come in families measured in the same process, so that `make bench`
// (hack/benchreport) can report each instrumentation cost as a ratio to the OpenTelemetry SDK
// floor of the same run:
//
//   BenchmarkFloor/{sampled,unsampled}      one root span start+end, one histogram Record and one
//                                           counter Add with precomputed attribute sets
//   BenchmarkReconcile/{sampled,unsampled}  the decorator around a no-op reconciler
//   BenchmarkChildSpan/{sampled,unsampled}  one bare child span start+end
//   BenchmarkChildSpanWithAttributes        the same, sampled, with an API call's seven attributes
//   BenchmarkClientGet/{bare,sampled,unsampled}  a Get from a stand-in of the informer cache,
//                                           unwrapped and wrapped, inside a reconcile
//   BenchmarkParallelReconcile/{bare,sampled,unsampled}  8 goroutines reconciling with a real
//                                           logger and a cached Get, without and with both wrappers
//   BenchmarkReconcileFromQueue/{sampled,unsampled}/{plain,trigger}  through the tapped queue,
//                                           without and with a recorded watch event (its link)

// notHotLooping: a benchmark reconciles the same objects millions of times a second, which is a
// hot loop by any threshold; the benchmarks measure the normal path, where no object is (two
// reconciles within a nanosecond never happen), not the hot-loop span event.
var notHotLooping = WithHotLoopThreshold(2, time.Nanosecond)

// discard is a span processor that drops ended spans: the exporter's cost is the same with and
// without the instrumentation and would only blur the comparison.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }

func benchProviders(b *testing.B, sampled bool) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
	sampler := sdktrace.NeverSample()
	if sampled {
		sampler = sdktrace.AlwaysSample()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSpanProcessor(discard{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	return tp, mp
}

var modes = []struct {
	name    string
	sampled bool
}{{"sampled", true}, {"unsampled", false}}

// floor is the SDK floor's instruments: a tracer, and a histogram and a counter with
// precomputed attribute sets.
type floor struct {
	tracer  trace.Tracer
	hist    metric.Float64Histogram
	ctr     metric.Int64Counter
	recOpts []metric.RecordOption
	addOpts []metric.AddOption
}

func newFloor(b *testing.B, sampled bool) floor {
	tp, mp := benchProviders(b, sampled)
	meter := mp.Meter("floor")
	hist, _ := meter.Float64Histogram("floor.duration")
	ctr, _ := meter.Int64Counter("floor.count")
	set := attribute.NewSet(attribute.String("controller", "widget"), attribute.String("result", "success"))
	return floor{
		tracer:  tp.Tracer("floor"),
		hist:    hist,
		ctr:     ctr,
		recOpts: []metric.RecordOption{metric.WithAttributeSet(set)},
		addOpts: []metric.AddOption{metric.WithAttributeSet(set)},
	}
}

// record is the floor's one histogram Record and one counter Add.
func (f floor) record(ctx context.Context) {
	f.hist.Record(ctx, 0.001, f.recOpts...)
	f.ctr.Add(ctx, 1, f.addOpts...)
}

func BenchmarkFloor(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			f := newFloor(b, m.sampled)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, span := f.tracer.Start(ctx, "reconcile widget")
				span.End()
				f.record(ctx)
			}
		})
	}
}

// BenchmarkFloorWithAttributes is the floor plus the attributes a reconcile span carries (11,
// set once): it separates what the SDK charges for span attributes (a copy, and a
// deduplication map when the span ends) from what the decorator itself costs.
func BenchmarkFloorWithAttributes(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			f := newFloor(b, m.sampled)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, span := f.tracer.Start(ctx, "reconcile widget")
				if span.IsRecording() {
					span.SetAttributes(
						attribute.String("a1", "widget"), attribute.String("a2", "demo.example.com"), attribute.String("a3", "Widget"),
						attribute.String("a4", "default"), attribute.String("a5", "widget-1"), attribute.String("a6", "5f1d9c2e-7a4b-4c1e-9f55-0b6f3a2d8e11"),
						attribute.Float64("a7", 0.001), attribute.Int("a8", 0), attribute.String("a9", "success"), attribute.Float64("a10", 1), attribute.Int("a11", 2))
				}
				span.End()
				f.record(ctx)
			}
		})
	}
}

func BenchmarkReconcile(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			tp, mp := benchProviders(b, m.sampled)
			r := testReconciler("widget", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
				return reconcile.Result{}, nil
			}), WithTracerProvider(tp), WithMeterProvider(mp), notHotLooping)
			rq := req("default", "widget-1")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, _ = r.Reconcile(ctx, rq)
			}
		})
	}
}

func BenchmarkChildSpan(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			tp, _ := benchProviders(b, m.sampled)
			tracer := tp.Tracer("child")
			ctx, parent := tracer.Start(context.Background(), "parent")
			defer parent.End()
			b.ReportAllocs()
			for b.Loop() {
				_, span := tracer.Start(ctx, "get ConfigMap", trace.WithSpanKind(trace.SpanKindClient))
				span.End()
			}
		})
	}
}

// memCache stands in for controller-runtime's informer cache reader (pkg/cache/internal
// CacheReader.Get), doing the same work per read: a keyed lookup under a read lock, a deep copy,
// the copy set into the caller's object and its GroupVersionKind set. The real cache needs
// running informers; its cost per read is this one's, and a fake client's (a JSON round trip
// per Get) would drown the wrapper's cost in noise.
type memCache struct {
	mu   sync.RWMutex
	objs map[client.ObjectKey]*corev1.ConfigMap
}

func (m *memCache) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	m.mu.RLock()
	src, ok := m.objs[key]
	m.mu.RUnlock()
	if !ok {
		return apierrors.NewNotFound(corev1.Resource("configmaps"), key.Name)
	}
	cp := src.DeepCopyObject()
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(cp).Elem())
	obj.GetObjectKind().SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
	return nil
}

func (m *memCache) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return nil
}

// BenchmarkClientGet is a cached Get inside a reconcile: "bare" reads the cache stand-in
// directly; sampled and unsampled read it through the client wrapper and the cache marker, as
// the manager's client built by NewManager does.
// BenchmarkChildSpanWithAttributes is BenchmarkChildSpan with the seven attributes an
// API-server call's span carries: what the SDK alone would charge a cache read's span to carry
// them too.
func BenchmarkChildSpanWithAttributes(b *testing.B) {
	tp, _ := benchProviders(b, true)
	tracer := tp.Tracer("child")
	ctx, parent := tracer.Start(context.Background(), "parent")
	defer parent.End()
	attrs := []attribute.KeyValue{
		attribute.String("watchtower.api.verb", "get"), attribute.String("watchtower.api.group", ""), attribute.String("watchtower.api.kind", "ConfigMap"),
		attribute.String("watchtower.api.source", "cache"), attribute.Int("watchtower.api.code", 200),
		attribute.String("watchtower.object.namespace", "default"), attribute.String("watchtower.object.name", "cm"),
	}
	b.ReportAllocs()
	for b.Loop() {
		_, span := tracer.Start(ctx, "get ConfigMap", trace.WithSpanKind(trace.SpanKindInternal))
		span.SetAttributes(attrs...)
		span.End()
	}
}

func BenchmarkClientGet(b *testing.B) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cm", Labels: map[string]string{"app": "widget"}},
		Data: map[string]string{"config.yaml": "replicas: 3\nimage: widget:1.2.3\n"}}
	key := client.ObjectKeyFromObject(cm)
	cache := &memCache{objs: map[client.ObjectKey]*corev1.ConfigMap{key: cm}}
	run := func(b *testing.B, c client.Reader, ctx context.Context) {
		var out corev1.ConfigMap
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Get(ctx, key, &out); err != nil {
				b.Fatal(err)
			}
		}
	}
	reconcileContext := func(tp trace.TracerProvider) (context.Context, func()) {
		ctx, span := tp.Tracer("x").Start(context.Background(), "reconcile widget")
		return contextWithState(ctx, &reconcileState{ctrl: &controllerID{name: "widget"}, span: span}), func() { span.End() }
	}
	b.Run("bare", func(b *testing.B) {
		tp, _ := benchProviders(b, true)
		ctx, end := reconcileContext(tp)
		defer end()
		run(b, cache, ctx)
	})
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			tp, mp := benchProviders(b, m.sampled)
			inner := cachedClient{WithWatch: fake.NewClientBuilder().Build(), cache: &cacheMarker{Reader: cache}}
			c := testClient(inner, true, WithTracerProvider(tp), WithMeterProvider(mp))
			ctx, end := reconcileContext(tp)
			defer end()
			run(b, c, ctx)
		})
	}
}

// BenchmarkParallelReconcile is the decorator and the client wrapper under contention: eight
// goroutines (as a controller with MaxConcurrentReconciles 8) reconcile objects of one
// controller, each reconcile writing one log line through a real zap logger (JSON, to
// io.Discard, as controller-runtime's default) and making one cached Get (memCache). "bare" is the same
// reconciler and client without the instrumentation, in the same process.
func BenchmarkParallelReconcile(b *testing.B) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cm"}}
	key := client.ObjectKeyFromObject(cm)
	cache := &memCache{objs: map[client.ObjectKey]*corev1.ConfigMap{key: cm}}
	logger := crzap.New(crzap.WriteTo(io.Discard), crzap.JSONEncoder())
	body := func(c client.Client) reconcile.Reconciler {
		return reconcile.Func(func(ctx context.Context, rq reconcile.Request) (reconcile.Result, error) {
			log.FromContext(ctx).Info("reconciling", "namespace", rq.Namespace, "name", rq.Name)
			var out corev1.ConfigMap
			return reconcile.Result{}, c.Get(ctx, key, &out)
		})
	}
	run := func(b *testing.B, r reconcile.Reconciler) {
		ctx := log.IntoContext(context.Background(), logger.WithValues("controller", "widget"))
		// Eight goroutines whatever GOMAXPROCS is.
		b.SetParallelism((8 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if _, err := r.Reconcile(ctx, req("default", "widget-"+strconv.Itoa(i%64))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("bare", func(b *testing.B) {
		run(b, body(cachedClient{WithWatch: fake.NewClientBuilder().Build(), cache: cache}))
	})
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			tp, mp := benchProviders(b, m.sampled)
			opts := []Option{WithTracerProvider(tp), WithMeterProvider(mp), notHotLooping}
			c := testClient(cachedClient{WithWatch: fake.NewClientBuilder().Build(), cache: &cacheMarker{Reader: cache}}, true, opts...)
			run(b, testReconciler("widget", body(c), opts...))
		})
	}
}

// BenchmarkReconcileFromQueue/{sampled,unsampled}/{plain,trigger}: a request through the queue
// tap to the decorator, as a controller's worker takes it (added, taken, reconciled, done);
// with "trigger", the For watch's event is recorded first and becomes the reconcile span's
// link. The workqueue itself is driven through the tap's own hooks rather than run: its
// goroutines cost the same with and without triggers and would bury a 200 ns difference in
// their noise. The difference is what the triggers cost per reconcile (docs/performance.md).
func BenchmarkReconcileFromQueue(b *testing.B) {
	for _, m := range modes {
		for _, withTrigger := range []bool{false, true} {
			name := m.name + "/plain"
			if withTrigger {
				name = m.name + "/trigger"
			}
			b.Run(name, func(b *testing.B) {
				tp, mp := benchProviders(b, m.sampled)
				cfg := newConfig([]Option{WithTracerProvider(tp), WithMeterProvider(mp), notHotLooping})
				in := instrumentsFor(cfg.meterProvider)
				tap := newQueueTap[reconcile.Request]("widget", in)
				link := &tapLink[reconcile.Request]{}
				link.tap.Store(tap)
				r := newReconciler[reconcile.Request]("widget", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
					return reconcile.Result{}, nil
				}), cfg, widgetKind, link, nil)
				forP, ev, rq := benchForEvent(tap)
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if withTrigger {
						forP.Update(ev) // the predicate, as the informer's handler runs it
					}
					tap.becomesDue(rq, time.Now()) // Add
					tap.got(rq, false)             // Get
					_, _ = r.Reconcile(ctx, rq)
					tap.done(rq) // Done
				}
			})
		}
	}
}

// BenchmarkTriggerRecording/{plain,trigger}: the queue tap's bookkeeping of one request (added,
// taken, done), without and with a For watch's update event recorded for it and its record
// released after the reconcile — all that triggers add to an unsampled reconcile, measured
// without the reconcile around it, whose noise is larger than the difference.
func BenchmarkTriggerRecording(b *testing.B) {
	for _, withTrigger := range []bool{false, true} {
		name := "plain"
		if withTrigger {
			name = "trigger"
		}
		b.Run(name, func(b *testing.B) {
			tap := newQueueTap[reconcile.Request]("widget", instrumentsFor(newConfig(nil).meterProvider))
			forP, ev, rq := benchForEvent(tap)
			b.ReportAllocs()
			for b.Loop() {
				if withTrigger {
					forP.Update(ev)
				}
				tap.becomesDue(rq, time.Time{})
				tap.got(rq, false)
				if s, _ := tap.take(rq); s.trig != nil {
					s.trig.release()
				}
			}
		})
	}
}

// benchForEvent is the For watch's trigger predicate recording into tap, an update event of
// the widget (a new resourceVersion), and the request it enqueues.
func benchForEvent(tap *queueTap[reconcile.Request]) (*keyedTrigger, event.UpdateEvent, reconcile.Request) {
	obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "widget-1", ResourceVersion: "42", Generation: 3}}
	ev := event.UpdateEvent{ObjectOld: obj, ObjectNew: obj.DeepCopy()}
	ev.ObjectNew.SetResourceVersion("43")
	return forTrigger(func() *queueTap[reconcile.Request] { return tap }), ev, req("default", "widget-1")
}
