package otelctrl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/types"
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
	resultRequeue
	resultRequeueAfter
	resultPanic
	numResults
)

var resultAttrs = [numResults]attribute.KeyValue{
	resultSuccess:       semconv.ReconcileResultSuccess,
	resultError:         semconv.ReconcileResultError,
	resultTerminalError: semconv.ReconcileResultTerminalError,
	resultRequeue:       semconv.ReconcileResultRequeue,
	resultRequeueAfter:  semconv.ReconcileResultRequeueAfter,
	resultPanic:         semconv.ReconcileResultPanic,
}

// WithGroupKind names the API group and kind a reconciler reconciles, for the
// watchtower.controller.group and watchtower.controller.kind attributes of NewReconciler and
// NewTypedReconciler. NewControllerManagedBy sets it from For.
func WithGroupKind(group, kind string) Option {
	return optionFunc(func(c *config) { c.group, c.kind = group, kind })
}

// NewReconciler wraps r so that every reconcile is a root span named "reconcile
// <controllerName>" with the API calls it makes as children, and is counted and timed in the
// reconcile metrics. The result is classified as success, error, terminal_error, requeue,
// requeue_after or panic. A panic is recorded and re-raised unchanged, so controller-runtime's
// recovery, its panic counter and its requeue behave exactly as without the wrapper.
//
// controllerName should be the name controller-runtime knows the controller by (the builder's
// Named, or the lower-cased kind of For), so that the reconcile metrics line up with
// controller_runtime_reconcile_total.
func NewReconciler(controllerName string, r reconcile.Reconciler, opts ...Option) reconcile.Reconciler {
	return NewTypedReconciler[reconcile.Request](controllerName, r, opts...)
}

// NewTypedReconciler is NewReconciler for reconcile.TypedReconciler. For a request type other
// than reconcile.Request, the object attributes come from its String method if it has one.
func NewTypedReconciler[req comparable](controllerName string, r reconcile.TypedReconciler[req], opts ...Option) reconcile.TypedReconciler[req] {
	cfg := newConfig(opts)
	in := instrumentsFor(cfg.meterProvider)
	d := &reconciler[req]{
		inner:   r,
		cfg:     cfg,
		name:    controllerName,
		tracer:  cfg.tracerProvider.Tracer(ScopeName),
		in:      in,
		active:  in.activeFor(controllerName),
		spanNam: semconv.ReconcileSpanName(controllerName),
	}
	ctrlAttrs := []attribute.KeyValue{
		semconv.ControllerName(controllerName),
		semconv.ControllerGroup(cfg.group),
		semconv.ControllerKind(cfg.kind),
	}
	d.startOpts = []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithNewRoot(), // a reconcile is a unit of work of its own, whatever the caller's context holds
		trace.WithAttributes(ctrlAttrs...),
	}
	for res := range numResults {
		set := attribute.NewSet(append(ctrlAttrs[:3:3], resultAttrs[res])...)
		d.recordOpts[res] = []metric.RecordOption{metric.WithAttributeSet(set)}
		d.addOpts[res] = []metric.AddOption{metric.WithAttributeSet(set)}
	}
	d.waitOpts = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(semconv.ControllerName(controllerName)))}
	return d
}

type reconciler[req comparable] struct {
	inner     reconcile.TypedReconciler[req]
	cfg       config
	name      string
	spanNam   string
	tracer    trace.Tracer
	in        *instruments
	active    interface{ Add(int64) int64 }
	startOpts []trace.SpanStartOption

	recordOpts [numResults][]metric.RecordOption
	addOpts    [numResults][]metric.AddOption
	waitOpts   []metric.RecordOption
}

func (d *reconciler[req]) Reconcile(ctx context.Context, r req) (res reconcile.Result, err error) {
	start := time.Now()
	wait, retries, queued := takeQueueWait(d.name, r, start)

	ctx, span := d.tracer.Start(ctx, d.spanNam, d.startOpts...)
	st := &reconcileState{controller: d.name, span: span}
	if nn, ok := any(r).(reconcile.Request); ok {
		st.object = nn.NamespacedName
		st.hasObject = true
	}
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 5)
		if st.hasObject {
			attrs = append(attrs, semconv.ObjectNamespace(st.object.Namespace), semconv.ObjectName(st.object.Name))
		} else if s, ok := any(r).(fmt.Stringer); ok {
			attrs = append(attrs, semconv.ObjectName(s.String()))
		}
		if id := controller.ReconcileIDFromContext(ctx); id != "" {
			attrs = append(attrs, semconv.ReconcileID(string(id)))
		}
		if queued {
			attrs = append(attrs, semconv.QueueWait(wait.Seconds()), semconv.QueueRetries(retries))
		}
		span.SetAttributes(attrs...)
	}
	if queued {
		d.in.queueWait.Record(ctx, wait.Seconds(), d.waitOpts...)
	}
	ctx = contextWithState(ctx, st)
	if d.cfg.logCorrelation {
		ctx = contextWithTraceLogger(ctx, st)
	}
	if st.hasObject {
		activeReconciles.add(st)
	}
	d.active.Add(1)

	defer func() {
		if p := recover(); p != nil {
			span.RecordError(fmt.Errorf("panic: %v", p), trace.WithStackTrace(true))
			span.SetStatus(codes.Error, fmt.Sprintf("panic: %v", p))
			d.finish(ctx, st, start, resultPanic)
			panic(p) // re-raised: controller-runtime's recovery and panic counter must see it
		}
	}()
	res, err = d.inner.Reconcile(ctx, r)

	result := classify(res, err)
	switch result {
	case resultError, resultTerminalError:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	case resultRequeueAfter:
		if span.IsRecording() {
			span.SetAttributes(semconv.ReconcileRequeueAfter(res.RequeueAfter.Seconds()))
		}
	}
	d.finish(ctx, st, start, result)
	return res, err
}

func (d *reconciler[req]) finish(ctx context.Context, st *reconcileState, start time.Time, result reconcileResult) {
	d.active.Add(-1)
	if st.hasObject {
		activeReconciles.remove(st)
	}
	st.span.SetAttributes(resultAttrs[result])
	st.span.End()
	d.in.reconcileDuration.Record(ctx, time.Since(start).Seconds(), d.recordOpts[result]...)
	d.in.reconciles.Add(ctx, 1, d.addOpts[result]...)
}

// classify maps a reconcile's return values to a result, in the order controller-runtime
// itself applies them: an error wins over any requeue request.
func classify(res reconcile.Result, err error) reconcileResult {
	switch {
	case err != nil && errors.Is(err, reconcile.TerminalError(nil)):
		return resultTerminalError
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

// reconcileState is what the client, transport and event wrappers need to know about the
// reconcile a call belongs to.
type reconcileState struct {
	controller string
	span       trace.Span
	object     types.NamespacedName
	hasObject  bool
	prevActive *reconcileState // see activeSet
}

type stateKey struct{}

func contextWithState(ctx context.Context, st *reconcileState) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

func stateFromContext(ctx context.Context) *reconcileState {
	st, _ := ctx.Value(stateKey{}).(*reconcileState)
	return st
}
