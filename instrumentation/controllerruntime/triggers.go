package otelctrl

import (
	"context"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gowatchtower/watchtower/semconv"
)

// Why a reconcile ran. controller-runtime's workqueue deduplicates requests, so by the time a
// worker takes one, what enqueued it is gone. The queue tap keeps it: every watch event and
// requeue that adds a request is recorded against that request until a worker takes it, and
// the reconcile span links to each (up to maxTriggerLinks; the rest are counted).
//
// Watch events are recorded where the request is known exactly:
//   - For and Owns: a predicate appended after the watch's own (so it sees only events that
//     pass them) computes the request the builder's handler will add — the object itself for
//     For, its controller owner of the For kind for Owns — exactly as those handlers do;
//   - Watches: the handler is wrapped, and the queue it is given records every request it adds.
//
// Requeues are recorded when the controller re-adds the request after its reconcile (rate
// limited or after a delay), linking to that reconcile's span.

// maxTriggerLinks bounds the links of one reconcile span.
const maxTriggerLinks = 8

// maxPendingTriggers bounds the requests with recorded triggers not yet taken by a worker: the
// queue deduplicates requests, so this is only reached by a queue of that many distinct
// objects; beyond it, further requests get no links (their reconciles still run and count).
const maxPendingTriggers = 100_000

// The annotations of KEP-5915: a writer's span context on the object it wrote.
const (
	TraceparentAnnotation = "tracing.k8s.io/traceparent"
	TracestateAnnotation  = "tracing.k8s.io/tracestate"
)

type triggerEvent uint8

const (
	evCreate triggerEvent = iota
	evUpdate
	evDelete
	evGeneric
	evResync
	evRequeue
	evRequeueAfter
	numTriggerEvents
)

var triggerEventAttrs = [numTriggerEvents]attribute.KeyValue{
	evCreate:       semconv.TriggerEventCreate,
	evUpdate:       semconv.TriggerEventUpdate,
	evDelete:       semconv.TriggerEventDelete,
	evGeneric:      semconv.TriggerEventGeneric,
	evResync:       semconv.TriggerEventResync,
	evRequeue:      semconv.TriggerEventRequeue,
	evRequeueAfter: semconv.TriggerEventRequeueAfter,
}

// requeueLinkAttrs are shared, read-only: a requeue's link costs no allocation.
var requeueLinkAttrs = [numTriggerEvents][]attribute.KeyValue{
	evRequeue:      {semconv.TriggerEventRequeue},
	evRequeueAfter: {semconv.TriggerEventRequeueAfter},
}

// trig is one trigger as recorded: plain fields, no allocation. Its span link, and the link's
// attributes, are built only for a reconcile span that records it.
type trig struct {
	ev           triggerEvent
	watch        *watchTrigger // nil for a requeue
	ns, name, rv string
	gen          int64
	sc           trace.SpanContext // the writer's (a watch event) or the previous reconcile's (a requeue)
}

// link is the trigger's span link: its attributes name the event, the watch and the object;
// its span context is the writer's (the KEP-5915 annotation) when the object had one, so that
// the reconcile links to the span that wrote it, or the previous reconcile's for a requeue.
func (t *trig) link() trace.Link {
	if t.watch == nil {
		return trace.Link{SpanContext: t.sc, Attributes: requeueLinkAttrs[t.ev]}
	}
	return trace.Link{SpanContext: t.sc, Attributes: []attribute.KeyValue{
		triggerEventAttrs[t.ev], t.watch.watch,
		semconv.TriggerObjectGroup(t.watch.gk.Group), semconv.TriggerObjectKind(t.watch.gk.Kind),
		semconv.TriggerObjectNamespace(t.ns), semconv.TriggerObjectName(t.name),
		semconv.TriggerObjectResourceVersion(t.rv), semconv.TriggerObjectGeneration(int(t.gen)),
	}}
}

// triggers is what the queue coalesced into one request since a worker last took it.
type triggers struct {
	first triggerEvent
	count int
	// sampled: some trigger's span context is sampled, so the links go to the sampler at the
	// span's start (a sampler can then keep a chain whole); otherwise they are added only to a
	// span that records, and an unsampled reconcile pays nothing for them.
	sampled bool
	recs    []trig // at most maxTriggerLinks
	one     [1]trig
}

func (ts *triggers) add(t trig) {
	if ts.count == 0 {
		ts.first = t.ev
		ts.recs = ts.one[:0]
	}
	ts.count++
	ts.sampled = ts.sampled || t.sc.IsSampled()
	if len(ts.recs) < maxTriggerLinks {
		ts.recs = append(ts.recs, t)
	}
}

// triggersPool recycles the trigger records of finished reconciles: recording the triggers of
// a request then allocates nothing in the steady state.
var triggersPool = sync.Pool{New: func() any { return new(triggers) }}

// release returns ts to the pool; nothing may use it afterwards.
func (ts *triggers) release() {
	*ts = triggers{}
	triggersPool.Put(ts)
}

// links builds the span links of the recorded triggers.
func (ts *triggers) links() []trace.Link {
	out := make([]trace.Link, len(ts.recs))
	for i := range ts.recs {
		out[i] = ts.recs[i].link()
	}
	return out
}

// trigger records that item was added for tr.
func (t *queueTap[req]) trigger(item req, tr trig) {
	t.mu.Lock()
	t.triggerLocked(item, tr)
	t.mu.Unlock()
}

func (t *queueTap[req]) triggerLocked(item req, tr trig) {
	p, ok := t.due[item]
	if p.trig == nil {
		if !ok && len(t.due) >= maxPendingTriggers {
			return
		}
		p.trig = triggersPool.Get().(*triggers)
		t.due[item] = p
	}
	p.trig.add(tr)
}

// requeued records that the controller re-added item after its reconcile, linking to that
// reconcile's span. A request not being reconciled (a handler calling AddAfter) is not a
// requeue: its watch trigger is recorded where the event was seen.
func (t *queueTap[req]) requeued(item req, ev triggerEvent) {
	t.mu.Lock()
	if sc, ok := t.running[item]; ok {
		t.triggerLocked(item, trig{ev: ev, sc: sc})
	}
	t.mu.Unlock()
}

// reconciling records the span of item's reconcile, for the links of its requeues; Done ends it.
func (t *queueTap[req]) reconciling(item req, sc trace.SpanContext) {
	t.mu.Lock()
	t.running[item] = sc
	t.mu.Unlock()
}

// watchTrigger is one watch of a controller: the kind it watches and how it was declared.
type watchTrigger struct {
	watch attribute.KeyValue
	gk    schema.GroupKind
}

// trigger is the record of an event about obj seen by this watch.
func (w *watchTrigger) trigger(ev triggerEvent, obj client.Object) trig {
	return trig{ev: ev, watch: w, ns: obj.GetNamespace(), name: obj.GetName(), rv: obj.GetResourceVersion(), gen: obj.GetGeneration(), sc: writerSpanContext(obj)}
}

// writerSpanContext is the span context in obj's tracing.k8s.io/traceparent annotation (with
// its tracestate), or an invalid one.
func writerSpanContext(obj client.Object) trace.SpanContext {
	tp, ok := obj.GetAnnotations()[TraceparentAnnotation]
	if !ok {
		return trace.SpanContext{}
	}
	carrier := propagation.MapCarrier{"traceparent": tp}
	if ts := obj.GetAnnotations()[TracestateAnnotation]; ts != "" {
		carrier["tracestate"] = ts
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
}

// updateEvent is an update, or a resync when the object did not change.
func updateEvent(oldObj, newObj client.Object) triggerEvent {
	if oldObj != nil && newObj != nil && oldObj.GetResourceVersion() == newObj.GetResourceVersion() {
		return evResync
	}
	return evUpdate
}

// keyedTrigger is the predicate of a For or Owns watch: it passes every event (it is appended
// after the watch's own predicates, so it only sees events that pass them) and records a
// trigger for each request the builder's handler adds for it: EnqueueRequestForObject's
// (owner nil) or EnqueueRequestForOwner's (owner set).
type keyedTrigger struct {
	watchTrigger
	owner      *ownerKind
	everyOwner bool
	record     func(reconcile.Request, trig)
}

var _ predicate.Predicate = (*keyedTrigger)(nil)

func (k *keyedTrigger) on(ev triggerEvent, obj client.Object) {
	if obj == nil {
		return
	}
	if k.owner == nil {
		k.record(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}}, k.trigger(ev, obj))
		return
	}
	k.owner.requests(obj, k.everyOwner, func(r reconcile.Request) { k.record(r, k.trigger(ev, obj)) })
}

func (k *keyedTrigger) Create(e event.CreateEvent) bool { k.on(evCreate, e.Object); return true }
func (k *keyedTrigger) Delete(e event.DeleteEvent) bool { k.on(evDelete, e.Object); return true }
func (k *keyedTrigger) Generic(e event.GenericEvent) bool {
	k.on(evGeneric, e.Object)
	return true
}

func (k *keyedTrigger) Update(e event.UpdateEvent) bool {
	if onlyWriterAnnotationChanged(e.ObjectOld, e.ObjectNew) {
		return false
	}
	ev := updateEvent(e.ObjectOld, e.ObjectNew)
	switch {
	case k.owner != nil:
		// EnqueueRequestForOwner adds the owners of the old and of the new object.
		k.on(ev, e.ObjectOld)
		k.on(ev, e.ObjectNew)
	case e.ObjectNew != nil:
		// EnqueueRequestForObject adds the new object (the old one only when there is no new).
		k.on(ev, e.ObjectNew)
	default:
		k.on(ev, e.ObjectOld)
	}
	return true
}

// requests calls add with EnqueueRequestForOwner's requests for obj: its owners of this kind
// (only the controller owner unless every owner counts), in obj's namespace when the kind is
// namespaced. The owners of both objects of an update are added once each by the handler's
// set; recorded twice here, they are two triggers of the same reconcile.
func (o *ownerKind) requests(obj client.Object, everyOwner bool, add func(reconcile.Request)) {
	gk, ok := o.groupKind()
	if !ok {
		return
	}
	for _, ref := range obj.GetOwnerReferences() {
		if ref.Kind != gk.Kind || (!everyOwner && (ref.Controller == nil || !*ref.Controller)) {
			continue
		}
		group, _, found := strings.Cut(ref.APIVersion, "/")
		if !found {
			group = "" // the core group's apiVersion is just "v1"
		}
		if group != gk.Group {
			continue
		}
		r := reconcile.Request{NamespacedName: types.NamespacedName{Name: ref.Name}}
		if o.namespaced() {
			r.Namespace = obj.GetNamespace()
		}
		add(r)
	}
}

// ownerKind is the For kind of a builder, known at Build (For may come after Owns in the
// chain), and whether it is namespaced (from the REST mapper, asked once, at the first event).
type ownerKind struct {
	gk    atomic.Pointer[schema.GroupKind]
	scope func(schema.GroupKind) (namespaced bool, err error)
	// scoped: 0 unknown, 1 namespaced, 2 cluster-scoped.
	scoped atomic.Int32
}

func (o *ownerKind) groupKind() (schema.GroupKind, bool) {
	gk := o.gk.Load()
	if gk == nil {
		return schema.GroupKind{}, false
	}
	return *gk, true
}

func (o *ownerKind) namespaced() bool {
	switch o.scoped.Load() {
	case 1:
		return true
	case 2:
		return false
	}
	gk, _ := o.groupKind()
	ns, err := o.scope(gk)
	if err != nil {
		return true // not remembered: asked again at the next event
	}
	if ns {
		o.scoped.Store(1)
	} else {
		o.scoped.Store(2)
	}
	return ns
}

// triggerHandler wraps the event handler of a Watches: the queue it hands the handler records,
// for every request the handler adds, the event as its trigger.
type triggerHandler[req comparable] struct {
	inner handler.TypedEventHandler[client.Object, req]
	watchTrigger
	link *tapLink[req]
}

func (h *triggerHandler[req]) queue(q workqueue.TypedRateLimitingInterface[req], ev triggerEvent, obj client.Object) workqueue.TypedRateLimitingInterface[req] {
	tap := h.link.tap.Load()
	if tap == nil || obj == nil {
		return q
	}
	rq := recordingQueue[req]{TypedRateLimitingInterface: q, tap: tap, tr: h.watchTrigger.trigger(ev, obj)}
	if pq, ok := q.(priorityqueue.PriorityQueue[req]); ok {
		return &recordingPriorityQueue[req]{recordingQueue: rq, pq: pq}
	}
	return &rq
}

func (h *triggerHandler[req]) Create(ctx context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[req]) {
	h.inner.Create(ctx, e, h.queue(q, evCreate, e.Object))
}

func (h *triggerHandler[req]) Update(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[req]) {
	if onlyWriterAnnotationChanged(e.ObjectOld, e.ObjectNew) {
		return
	}
	obj := e.ObjectNew
	if obj == nil {
		obj = e.ObjectOld
	}
	h.inner.Update(ctx, e, h.queue(q, updateEvent(e.ObjectOld, e.ObjectNew), obj))
}

func (h *triggerHandler[req]) Delete(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[req]) {
	h.inner.Delete(ctx, e, h.queue(q, evDelete, e.Object))
}

func (h *triggerHandler[req]) Generic(ctx context.Context, e event.TypedGenericEvent[client.Object], q workqueue.TypedRateLimitingInterface[req]) {
	h.inner.Generic(ctx, e, h.queue(q, evGeneric, e.Object))
}

// recordingQueue is the controller's queue as one event's handler sees it.
type recordingQueue[req comparable] struct {
	workqueue.TypedRateLimitingInterface[req]
	tap *queueTap[req]
	tr  trig
}

func (q *recordingQueue[req]) Add(item req) {
	q.tap.trigger(item, q.tr)
	q.TypedRateLimitingInterface.Add(item)
}

func (q *recordingQueue[req]) AddAfter(item req, d time.Duration) {
	q.tap.trigger(item, q.tr)
	q.TypedRateLimitingInterface.AddAfter(item, d)
}

func (q *recordingQueue[req]) AddRateLimited(item req) {
	q.tap.trigger(item, q.tr)
	q.TypedRateLimitingInterface.AddRateLimited(item)
}

type recordingPriorityQueue[req comparable] struct {
	recordingQueue[req]
	pq priorityqueue.PriorityQueue[req]
}

func (q *recordingPriorityQueue[req]) AddWithOpts(o priorityqueue.AddOpts, items ...req) {
	for _, it := range items {
		q.tap.trigger(it, q.tr)
	}
	q.pq.AddWithOpts(o, items...)
}

func (q *recordingPriorityQueue[req]) GetWithPriority() (req, int, bool) {
	return q.pq.GetWithPriority()
}

// annotate writes, on an object about to be created, updated or patched, the span context of
// the caller (the reconcile, or the caller's own span) as tracing.k8s.io/traceparent, with its
// tracestate, so that whoever reconciles the object because of this write links to it. It is
// part of the same write: no extra API call, and no change where the write does not happen
// (CreateOrUpdate compares before it writes, so an unchanged object is not written for a new
// annotation, and no reconcile loop can come of it). Status writes go through the status
// subresource and never carry it. The trace flags say whether the writer's trace is sampled.
func (t *callTracer) annotate(ctx context.Context, obj client.Object) {
	if !t.cfg.writerAnnotation {
		return
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = make(map[string]string, 2)
	}
	ann[TraceparentAnnotation] = traceparent(sc)
	if ts := sc.TraceState().String(); ts != "" {
		ann[TracestateAnnotation] = ts
	} else {
		delete(ann, TracestateAnnotation) // an earlier writer's, which would not match
	}
	obj.SetAnnotations(ann)
}

// traceparent is the W3C traceparent of sc, version 00.
func traceparent(sc trace.SpanContext) string {
	var b [55]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// onlyWriterAnnotationChanged reports an update whose only change is the writer annotations
// (and the resourceVersion and managedFields that come with any write). Such an update is
// dropped by every watch of an instrumented controller: an operator that writes an object
// unconditionally (a no-op update the API server would not even store) makes a real change
// once the annotation is on the write, and without this its own watch would reconcile again,
// and write again, forever. The deep comparison runs only when the annotation changed.
func onlyWriterAnnotationChanged(oldObj, newObj client.Object) bool {
	if oldObj == nil || newObj == nil || oldObj.GetResourceVersion() == newObj.GetResourceVersion() {
		return false
	}
	oa, na := oldObj.GetAnnotations(), newObj.GetAnnotations()
	if oa[TraceparentAnnotation] == na[TraceparentAnnotation] && oa[TracestateAnnotation] == na[TracestateAnnotation] {
		return false
	}
	o, ok1 := oldObj.DeepCopyObject().(client.Object)
	n, ok2 := newObj.DeepCopyObject().(client.Object)
	if !ok1 || !ok2 {
		return false
	}
	for _, x := range []client.Object{o, n} {
		x.SetResourceVersion("")
		x.SetManagedFields(nil)
		if a := x.GetAnnotations(); a != nil {
			delete(a, TraceparentAnnotation)
			delete(a, TracestateAnnotation)
			if len(a) == 0 {
				x.SetAnnotations(nil)
			}
		}
	}
	return equality.Semantic.DeepEqual(o, n)
}
