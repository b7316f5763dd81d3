package otelctrl

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gowatchtower/watchtower/semconv"
)

// reconcileResult indexes the precomputed per-result attribute sets.
type reconcileResult int

const (
	resultSuccess reconcileResult = iota
	resultError
	resultTerminalError
	resultConflict
	resultRequeue
	resultRequeueAfter
	resultPanic
	numResults
)

var resultAttrs = [numResults]attribute.KeyValue{
	resultSuccess:       semconv.ReconcileResultSuccess,
	resultError:         semconv.ReconcileResultError,
	resultTerminalError: semconv.ReconcileResultTerminalError,
	resultConflict:      semconv.ReconcileResultConflict,
	resultRequeue:       semconv.ReconcileResultRequeue,
	resultRequeueAfter:  semconv.ReconcileResultRequeueAfter,
	resultPanic:         semconv.ReconcileResultPanic,
}

// newReconciler wraps r so that every reconcile is a root span named "reconcile
// <controllerName>" with the API calls it makes as children, and is counted and timed in the
// reconcile metrics. The result is classified as success, error, terminal_error, conflict,
// requeue, requeue_after or panic. A panic is recorded and re-raised unchanged, so
// controller-runtime's recovery, its panic counter and its requeue behave exactly as without
// the wrapper.
//
// controllerName is the name controller-runtime knows the controller by (the builder's Named,
// or the lower-cased kind of For), so that the reconcile metrics line up with
// controller_runtime_reconcile_total. gk is the reconciled kind (empty without For); link
// brings the queue's tap (nil: no queue wait on the span); active is the manager's set of
// reconciles in flight, for its event recorders (nil: none).
func newReconciler[req comparable](controllerName string, r reconcile.TypedReconciler[req], cfg config, gk schema.GroupKind, link *tapLink[req], active *activeSet) reconcile.TypedReconciler[req] {
	in := instrumentsFor(cfg.meterProvider)
	d := &reconciler[req]{
		inner:    r,
		cfg:      cfg,
		id:       &controllerID{name: controllerName},
		gk:       gk,
		link:     link,
		set:      active,
		tracer:   cfg.tracerProvider.Tracer(ScopeName),
		in:       in,
		inFlight: in.activeFor(controllerName),
		spanNam:  semconv.ReconcileSpanName(controllerName),
		loops:    newLoopDetector(controllerName, cfg),
	}
	in.loops.Store(d.loops, struct{}{})
	ctrlAttrs := []attribute.KeyValue{
		semconv.ControllerName(controllerName),
		semconv.ControllerGroup(gk.Group),
		semconv.ControllerKind(gk.Kind),
	}
	d.ctrlAttrs = ctrlAttrs
	// No attributes at start: passing them costs an allocation per span even when the span is
	// not sampled; they are set once in finish.
	d.startOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
	// A reconcile is a unit of work of its own: if the caller's context holds a span (a test, a
	// wrapper of ours), the reconcile still starts a new trace.
	d.newRootOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal), trace.WithNewRoot()}
	for res := range numResults {
		set := attribute.NewSet(ctrlAttrs[0], resultAttrs[res]) // controller-runtime's labels: controller, result
		d.recordOpts[res] = []metric.RecordOption{metric.WithAttributeSet(set)}
		d.addOpts[res] = []metric.AddOption{metric.WithAttributeSet(set)}
	}
	d.waitOpts = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(semconv.ControllerName(controllerName)))}
	return d
}

type reconciler[req comparable] struct {
	inner       reconcile.TypedReconciler[req]
	cfg         config
	id          *controllerID
	gk          schema.GroupKind
	link        *tapLink[req]
	set         *activeSet
	spanNam     string
	tracer      trace.Tracer
	in          *instruments
	inFlight    interface{ Add(int64) int64 }
	startOpts   []trace.SpanStartOption
	newRootOpts []trace.SpanStartOption
	ctrlAttrs   []attribute.KeyValue

	recordOpts [numResults][]metric.RecordOption
	addOpts    [numResults][]metric.AddOption
	waitOpts   []metric.RecordOption
	loops      *loopDetector
}

func (d *reconciler[req]) Reconcile(ctx context.Context, r req) (res reconcile.Result, err error) {
	start := time.Now()
	startOpts := d.startOpts
	if trace.SpanContextFromContext(ctx).IsValid() {
		startOpts = d.newRootOpts
	}
	// What the queue recorded comes first: the triggers are the span's links, which samplers
	// see at its start.
	tap, taken, queued := d.takeQueued(r)
	ts := taken.trig
	if ts != nil && ts.sampled {
		startOpts = append(startOpts[:len(startOpts):len(startOpts)], trace.WithLinks(ts.links()...))
	}
	ctx, span := d.tracer.Start(ctx, d.spanNam, startOpts...)
	if ts != nil && !ts.sampled && span.IsRecording() {
		for i := range ts.recs {
			span.AddLink(ts.recs[i].link())
		}
	}
	if queued {
		tap.reconciling(r, span.SpanContext()) // until the worker marks r done
	}
	st := &reconcileState{ctrl: d.id, span: span, start: start}
	st.wait, st.retries, st.queued, st.trig = taken.wait, taken.retries, queued, taken.trig
	if nn, ok := any(r).(reconcile.Request); ok {
		st.object = activeKey{gk: d.gk, NamespacedName: nn.NamespacedName}
		st.hasObject = true
	} else if s, ok := any(r).(fmt.Stringer); ok && span.IsRecording() {
		st.objectString = s.String()
	}
	if st.queued {
		d.in.queueWait.Record(ctx, st.wait.Seconds(), d.waitOpts...)
	}
	st.parent = ctx
	ctx = st // the state is the context: one allocation instead of two
	if d.cfg.logCorrelation {
		ctx = contextWithTraceLogger(ctx, st)
	}
	if st.hasObject && d.set != nil {
		d.set.add(st)
	}
	d.inFlight.Add(1)

	defer d.recoverPanic(st)
	res, err = d.inner.Reconcile(ctx, r)

	result := classify(res, err)
	switch result {
	case resultError, resultTerminalError:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	case resultConflict:
		// Recorded, but the span's status stays unset: error-based tail sampling and error
		// ratios must not count a conflict as a failure.
		span.RecordError(err)
	case resultRequeueAfter:
		st.requeueAfter = res.RequeueAfter
	}
	d.finish(st, result)
	return res, err
}

// takeQueued returns what the controller's queue tap recorded when a worker took r, and the tap.
func (d *reconciler[req]) takeQueued(r req) (*queueTap[req], started, bool) {
	if d.link == nil {
		return nil, started{}, false
	}
	tap := d.link.tap.Load()
	if tap == nil {
		return nil, started{}, false
	}
	s, ok := tap.take(r)
	return tap, s, ok
}

// recoverPanic records a panic and re-raises it: controller-runtime's recovery, panic counter
// and requeue must see it exactly as without the decorator.
func (d *reconciler[req]) recoverPanic(st *reconcileState) {
	if p := recover(); p != nil {
		st.span.RecordError(fmt.Errorf("panic: %v", p), trace.WithStackTrace(true))
		st.span.SetStatus(codes.Error, fmt.Sprintf("panic: %v", p))
		d.finish(st, resultPanic)
		panic(p)
	}
}

// finish ends the span and records the metrics. The span's attributes are set here, in one
// call: one allocation in the SDK instead of one per call, and none for unsampled spans.
// (Samplers therefore see only the controller attributes given at start.)
func (d *reconciler[req]) finish(st *reconcileState, result reconcileResult) {
	d.inFlight.Add(-1)
	if st.hasObject && d.set != nil {
		d.set.remove(st)
	}
	if st.span.IsRecording() {
		a := make([]attribute.KeyValue, 0, 14)
		a = append(a, d.ctrlAttrs...)
		if st.hasObject {
			a = append(a, semconv.ObjectNamespace(st.object.Namespace), semconv.ObjectName(st.object.Name))
		} else if st.objectString != "" {
			a = append(a, semconv.ObjectName(st.objectString))
		}
		if id := controller.ReconcileIDFromContext(st.parent); id != "" {
			a = append(a, semconv.ReconcileID(string(id)))
		}
		if st.queued {
			a = append(a, semconv.QueueWait(st.wait.Seconds()), semconv.QueueRetries(st.retries))
		}
		if st.requeueAfter > 0 {
			a = append(a, semconv.ReconcileRequeueAfter(st.requeueAfter.Seconds()))
		}
		if st.trig != nil {
			a = append(a, triggerEventAttrs[st.trig.first], semconv.TriggerCount(st.trig.count))
		}
		a = append(a, resultAttrs[result])
		st.span.SetAttributes(a...)
	}
	if st.hasObject {
		gen, known := forGeneration(st.trig)
		d.loops.observe(st.parent, st.object, gen, known, st.start, result, st.span)
	}
	st.span.End()
	// The span's context goes with the measurement only when the span is sampled: then the
	// histogram can keep it as an exemplar (a trace ID next to the bucket). Otherwise the SDK
	// would walk the context for nothing.
	ctx := context.Background()
	if st.span.SpanContext().IsSampled() {
		ctx = st.parent
	}
	d.in.reconcileDuration.Record(ctx, time.Since(st.start).Seconds(), d.recordOpts[result]...)
	d.in.reconciles.Add(ctx, 1, d.addOpts[result]...)
	if st.trig != nil {
		st.trig.release() // its links, if any, were copied into the span
		st.trig = nil
	}
}

// classify maps a reconcile's return values to a result, in the order controller-runtime
// itself applies them: an error wins over any requeue request.
func classify(res reconcile.Result, err error) reconcileResult {
	switch {
	case err != nil && errors.Is(err, reconcile.TerminalError(nil)):
		return resultTerminalError
	case err != nil && apierrors.IsConflict(err):
		// Optimistic concurrency at work (a stale cache read, a concurrent writer): requeued
		// like an error, but no reason to page anyone.
		return resultConflict
	case err != nil:
		return resultError
	case res.RequeueAfter > 0:
		return resultRequeueAfter
	case res.Requeue: //lint:ignore SA1019 controller-runtime still honours Requeue, so it must be classified
		return resultRequeue
	default:
		return resultSuccess
	}
}

// reconcileState is what the client, transport, event and log wrappers need to know about the
// reconcile a call belongs to. It is also the context.Context the reconciler receives: it answers
// for its own key and delegates everything else to the context it wraps, which saves an
// allocation per reconcile over context.WithValue.
type reconcileState struct {
	parent     context.Context
	ctrl       *controllerID
	span       trace.Span
	start      time.Time
	object     activeKey
	hasObject  bool
	prevActive *reconcileState // see activeSet

	objectString string // the object of a typed request, from its String method
	wait         time.Duration
	retries      int
	queued       bool
	requeueAfter time.Duration
	trig         *triggers // what added the request, if the queue recorded it

	logSink traceSink // the reconcile's log sink, see contextWithTraceLogger

	// calls counts the client calls in flight and cacheReads the reads the cache served, for
	// the client wrapper to tell a cache read without an allocation (callTracer.startInfo).
	calls      atomic.Int32
	cacheReads atomic.Uint64
}

type stateKey struct{}

func (st *reconcileState) Deadline() (time.Time, bool) { return st.parent.Deadline() }
func (st *reconcileState) Done() <-chan struct{}       { return st.parent.Done() }
func (st *reconcileState) Err() error                  { return st.parent.Err() }
func (st *reconcileState) Value(key any) any {
	if key == (stateKey{}) || key == (cacheMarkKey{}) {
		return st
	}
	return st.parent.Value(key)
}

func contextWithState(ctx context.Context, st *reconcileState) context.Context {
	st.parent = ctx
	return st
}

func stateFromContext(ctx context.Context) *reconcileState {
	st, _ := ctx.Value(stateKey{}).(*reconcileState)
	return st
}

// forGeneration is the generation of the reconciled object as its latest For event told it.
func forGeneration(ts *triggers) (int64, bool) {
	if ts == nil {
		return 0, false
	}
	for i := len(ts.recs) - 1; i >= 0; i-- {
		if w := ts.recs[i].watch; w != nil && w.watch == semconv.TriggerWatchFor {
			return ts.recs[i].gen, true
		}
	}
	return 0, false
}
