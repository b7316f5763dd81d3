package otelctrl

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gowatchtower/watchtower/semconv"
)

// triggerRig is a tapped queue, the reconciler on it, and the For watch's trigger predicate, as
// the builder wires them, driven the way a controller's worker does.
type triggerRig struct {
	t     *testing.T
	tt    *testTelemetry
	q     workqueue.TypedRateLimitingInterface[reconcile.Request]
	link  *tapLink[reconcile.Request]
	r     reconcile.Reconciler
	forP  *keyedTrigger
	fail  map[string]bool
	queue func() *queueTap[reconcile.Request]
}

func newTriggerRig(t *testing.T) *triggerRig {
	t.Helper()
	rig := &triggerRig{t: t, tt: newTestTelemetry(t), link: &tapLink[reconcile.Request]{}, fail: map[string]bool{}}
	cfg := newConfig(rig.tt.opts)
	rig.q = newTappedQueue(nil, cfg, rig.link)("triggers", workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](time.Millisecond, time.Millisecond))
	t.Cleanup(rig.q.ShutDown)
	rig.r = newReconciler[reconcile.Request]("triggers", reconcile.Func(func(_ context.Context, r reconcile.Request) (reconcile.Result, error) {
		if rig.fail[r.Name] {
			return reconcile.Result{}, errors.New("asked to fail")
		}
		return reconcile.Result{}, nil
	}), cfg, widgetKind, rig.link, nil)
	rig.forP = forTrigger(rig.link.tap.Load)
	rig.queue = rig.link.tap.Load
	return rig
}

// event delivers a watch event as controller-runtime's source does: the predicate, then the
// handler's Add.
func (rig *triggerRig) event(ev triggerEvent, obj, old client.Object) {
	switch ev {
	case evCreate:
		rig.forP.Create(event.CreateEvent{Object: obj})
	case evUpdate, evResync:
		rig.forP.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: obj})
	case evDelete:
		rig.forP.Delete(event.DeleteEvent{Object: obj})
	}
	rig.q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
}

// work is one worker iteration: take, reconcile, requeue on error as the controller does, done.
// It returns the reconcile's span.
func (rig *triggerRig) work() sdktrace.ReadOnlySpan {
	rig.t.Helper()
	item, shutdown := rig.q.Get()
	if shutdown {
		rig.t.Fatal("queue shut down")
	}
	n := len(rig.tt.spans.Ended())
	if _, err := rig.r.Reconcile(context.Background(), item); err != nil {
		rig.q.AddRateLimited(item)
	} else {
		rig.q.Forget(item)
	}
	rig.q.Done(item)
	ended := rig.tt.spans.Ended()
	if len(ended) != n+1 {
		rig.t.Fatalf("want one more span, got %d → %d", n, len(ended))
	}
	return ended[n]
}

func widget(name, rv string, gen int64, ann map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv, Generation: gen, Annotations: ann}}
}

func linkAttr(l sdktrace.Link, key attribute.Key) attribute.Value {
	for _, kv := range l.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func TestReconcileLinksToTheEventsThatEnqueuedIt(t *testing.T) {
	rig := newTriggerRig(t)
	writer := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
	})
	ann := map[string]string{TraceparentAnnotation: fmt.Sprintf("00-%s-%s-01", writer.TraceID(), writer.SpanID())}

	// Created, then changed twice before a worker takes it: one reconcile, three triggers.
	rig.event(evCreate, widget("a", "10", 1, ann), nil)
	rig.event(evUpdate, widget("a", "11", 2, nil), widget("a", "10", 1, nil))
	rig.event(evResync, widget("a", "11", 2, nil), widget("a", "11", 2, nil))
	s := rig.work()

	if v, _ := spanAttr(s, semconv.TriggerEventKey); v.AsString() != "create" {
		t.Errorf("trigger event = %q, want the first trigger's, create", v.AsString())
	}
	if v, _ := spanAttr(s, semconv.TriggerCountKey); v.AsInt64() != 3 {
		t.Errorf("trigger count = %d, want 3", v.AsInt64())
	}
	links := s.Links()
	if len(links) != 3 {
		t.Fatalf("want 3 links, got %d: %+v", len(links), links)
	}
	for i, want := range []struct{ ev, rv string }{{"create", "10"}, {"update", "11"}, {"resync", "11"}} {
		l := links[i]
		if got := linkAttr(l, semconv.TriggerEventKey).AsString(); got != want.ev {
			t.Errorf("link %d: event %q, want %q", i, got, want.ev)
		}
		if got := linkAttr(l, semconv.TriggerObjectResourceVersionKey).AsString(); got != want.rv {
			t.Errorf("link %d: resourceVersion %q, want %q", i, got, want.rv)
		}
		if linkAttr(l, semconv.TriggerWatchKey).AsString() != "for" || linkAttr(l, semconv.TriggerObjectKindKey).AsString() != "Widget" ||
			linkAttr(l, semconv.TriggerObjectNameKey).AsString() != "a" || linkAttr(l, semconv.TriggerObjectNamespaceKey).AsString() != "ns" {
			t.Errorf("link %d does not name the watch and the object: %v", i, l.Attributes)
		}
	}
	if links[0].SpanContext.TraceID() != writer.TraceID() || links[0].SpanContext.SpanID() != writer.SpanID() || !links[0].SpanContext.IsRemote() {
		t.Errorf("the create event's link must be the writer's span from %s: got %v", TraceparentAnnotation, links[0].SpanContext)
	}
	if links[1].SpanContext.IsValid() {
		t.Errorf("an object without the annotation gives a link without a span context, got %v", links[1].SpanContext)
	}
	if gen := linkAttr(links[1], semconv.TriggerObjectGenerationKey).AsInt64(); gen != 2 {
		t.Errorf("update link generation = %d, want 2", gen)
	}

	// The next event starts a new set: the reconcile that took the first three does not keep them.
	rig.event(evDelete, widget("a", "12", 2, nil), nil)
	s = rig.work()
	if len(s.Links()) != 1 || linkAttr(s.Links()[0], semconv.TriggerEventKey).AsString() != "delete" {
		t.Errorf("want one delete link, got %+v", s.Links())
	}
}

func TestRequeueLinksToThePreviousReconcile(t *testing.T) {
	rig := newTriggerRig(t)
	rig.fail["b"] = true
	rig.event(evCreate, widget("b", "1", 1, nil), nil)
	first := rig.work() // fails: the controller adds it back rate limited
	rig.fail["b"] = false
	second := rig.work()
	if v, _ := spanAttr(second, semconv.TriggerEventKey); v.AsString() != "requeue" {
		t.Errorf("the retry's trigger = %q, want requeue", v.AsString())
	}
	links := second.Links()
	if len(links) != 1 || links[0].SpanContext.SpanID() != first.SpanContext().SpanID() || links[0].SpanContext.TraceID() != first.SpanContext().TraceID() {
		t.Fatalf("the retry must link to the failed reconcile's span %v, got %+v", first.SpanContext(), links)
	}
	if second.SpanContext().TraceID() == first.SpanContext().TraceID() {
		t.Error("a retry is a trace of its own, linked, not a child")
	}

	// RequeueAfter, through a delayed add before the worker marks the request done.
	rig.event(evUpdate, widget("b", "2", 2, nil), widget("b", "1", 1, nil))
	item, _ := rig.q.Get()
	if _, err := rig.r.Reconcile(context.Background(), item); err != nil {
		t.Fatal(err)
	}
	prev := rig.tt.spans.Ended()[len(rig.tt.spans.Ended())-1]
	rig.q.AddAfter(item, time.Millisecond)
	rig.q.Done(item)
	after := rig.work()
	if got := after.Links(); len(got) != 1 || got[0].SpanContext.SpanID() != prev.SpanContext().SpanID() ||
		linkAttr(got[0], semconv.TriggerEventKey).AsString() != "requeue_after" {
		t.Errorf("want one requeue_after link to %v, got %+v", prev.SpanContext(), got)
	}
}

func TestTriggerLinksAreBounded(t *testing.T) {
	rig := newTriggerRig(t)
	for i := range 20 {
		rig.event(evUpdate, widget("c", fmt.Sprint(i+1), 1, nil), widget("c", fmt.Sprint(i), 1, nil))
	}
	s := rig.work()
	if n := len(s.Links()); n != maxTriggerLinks {
		t.Errorf("%d links, want the first %d", n, maxTriggerLinks)
	}
	if v, _ := spanAttr(s, semconv.TriggerCountKey); v.AsInt64() != 20 {
		t.Errorf("trigger count %d, want all 20", v.AsInt64())
	}
	if rv := linkAttr(s.Links()[0], semconv.TriggerObjectResourceVersionKey).AsString(); rv != "1" {
		t.Errorf("the first link is the first trigger (resourceVersion 1), got %q", rv)
	}
}

// TestTriggerBookkeepingDoesNotGrow churns 100,000 objects through the queue, each with a watch
// event, a failed reconcile and its requeue: afterwards the tap holds nothing.
func TestTriggerBookkeepingDoesNotGrow(t *testing.T) {
	rig := newTriggerRig(t)
	const objects = 100_000
	for i := range objects {
		name := fmt.Sprintf("o%d", i)
		rig.fail[name] = i%10 == 0
		rig.forP.Create(event.CreateEvent{Object: widget(name, "1", 1, nil)})
		rig.q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Namespace: "ns", Name: name}})
		for rig.q.Len() > 0 {
			item, _ := rig.q.Get()
			if _, err := rig.r.Reconcile(context.Background(), item); err != nil {
				delete(rig.fail, item.Name)
				rig.q.AddRateLimited(item)
			}
			rig.q.Done(item)
			time.Sleep(0) // the rate-limited re-add becomes due after 1 ms; Len counts it once due
		}
		rig.tt.spans.Reset()
	}
	// Drain the last requeues.
	deadline := time.Now().Add(5 * time.Second)
	for rig.q.Len() > 0 || time.Now().Before(deadline) && queuedRequests(rig.queue()) > 0 {
		if rig.q.Len() == 0 {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		item, _ := rig.q.Get()
		_, _ = rig.r.Reconcile(context.Background(), item)
		rig.q.Done(item)
	}
	tap := rig.queue()
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if len(tap.running) != 0 || len(tap.taken) != 0 || len(tap.due) != 0 {
		t.Errorf("after %d objects the tap still holds %d running, %d taken, %d queued (with their triggers)", objects, len(tap.running), len(tap.taken), len(tap.due))
	}
}

func queuedRequests(tap *queueTap[reconcile.Request]) int {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return len(tap.due)
}

func TestOwnerRequestsAreTheHandlersRequests(t *testing.T) {
	owner := &ownerKind{scope: func(schema.GroupKind) (bool, error) { return true, nil }}
	owner.gk.Store(&schema.GroupKind{Group: "demo.example.com", Kind: "Widget"})
	obj := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "child", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "demo.example.com/v1", Kind: "Widget", Name: "boss", Controller: ptr.To(true)},
		{APIVersion: "demo.example.com/v1", Kind: "Widget", Name: "other"},
		{APIVersion: "other.example.com/v1", Kind: "Widget", Name: "elsewhere", Controller: ptr.To(true)},
		{APIVersion: "v1", Kind: "ConfigMap", Name: "cm", Controller: ptr.To(true)},
	}}}
	collect := func(o *ownerKind, every bool) []string {
		var out []string
		o.requests(obj, every, func(r reconcile.Request) { out = append(out, r.String()) })
		return out
	}
	if got := collect(owner, false); fmt.Sprint(got) != "[ns/boss]" {
		t.Errorf("controller owner only: %v, want [ns/boss]", got)
	}
	if got := collect(owner, true); fmt.Sprint(got) != "[ns/boss ns/other]" {
		t.Errorf("every owner: %v, want [ns/boss ns/other]", got)
	}
	core := &ownerKind{scope: func(schema.GroupKind) (bool, error) { return false, nil }}
	core.gk.Store(&schema.GroupKind{Kind: "ConfigMap"})
	if got := collect(core, false); fmt.Sprint(got) != "[/cm]" {
		t.Errorf("a cluster-scoped core owner: %v, want [/cm] (no namespace)", got)
	}
}

func TestWatchesHandlerRecordsEveryRequestItAdds(t *testing.T) {
	rig := newTriggerRig(t)
	h := &triggerHandler[reconcile.Request]{
		inner: handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: "ns", Name: "x"}}, {NamespacedName: client.ObjectKey{Namespace: "ns", Name: "y"}}}
		}),
		watchTrigger: watchTrigger{watch: semconv.TriggerWatchWatches, gk: schema.GroupKind{Kind: "Secret"}},
		link:         rig.link,
	}
	h.Create(context.Background(), event.CreateEvent{Object: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", ResourceVersion: "5"}}}, rig.q)
	for range 2 {
		s := rig.work()
		if len(s.Links()) != 1 {
			t.Fatalf("want one link, got %+v", s.Links())
		}
		l := s.Links()[0]
		if linkAttr(l, semconv.TriggerWatchKey).AsString() != "watches" || linkAttr(l, semconv.TriggerObjectKindKey).AsString() != "Secret" ||
			linkAttr(l, semconv.TriggerObjectNameKey).AsString() != "s" || linkAttr(l, semconv.TriggerEventKey).AsString() != "create" {
			t.Errorf("the link must name the Watches event: %v", l.Attributes)
		}
	}
}

func TestWritesCarryTheWritersSpan(t *testing.T) {
	tt := newTestTelemetry(t)
	inner := fake.NewClientBuilder().WithStatusSubresource(&corev1.Pod{}).Build()
	c := testClient(inner, false, tt.opts...)
	tracer := otelTracer(tt)
	ctx, span := tracer.Start(context.Background(), "reconcile widget")
	defer span.End()
	want := fmt.Sprintf("00-%s-%s-01", span.SpanContext().TraceID(), span.SpanContext().SpanID())

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "child", Annotations: map[string]string{TracestateAnnotation: "stale=1"}}}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	var got corev1.ConfigMap
	if err := inner.Get(ctx, client.ObjectKeyFromObject(cm), &got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[TraceparentAnnotation] != want {
		t.Errorf("created with %s=%q, want the writer's %q", TraceparentAnnotation, got.Annotations[TraceparentAnnotation], want)
	}
	if _, ok := got.Annotations[TracestateAnnotation]; ok {
		t.Errorf("an earlier writer's tracestate must go with its traceparent: %v", got.Annotations)
	}
	if sc := writerSpanContext(&got); sc.SpanID() != span.SpanContext().SpanID() || !sc.IsSampled() {
		t.Errorf("the annotation does not read back as the writer's span: %v", sc)
	}

	// A patch in another reconcile carries that reconcile's span, in the same request.
	ctx2, span2 := tracer.Start(context.Background(), "reconcile widget")
	base := got.DeepCopy()
	got.Data = map[string]string{"k": "v"}
	if err := c.Patch(ctx2, &got, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	span2.End()
	var patched corev1.ConfigMap
	_ = inner.Get(ctx, client.ObjectKeyFromObject(cm), &patched)
	if sc := writerSpanContext(&patched); sc.SpanID() != span2.SpanContext().SpanID() {
		t.Errorf("after the patch the annotation is %q, want the patching reconcile's span %v", patched.Annotations[TraceparentAnnotation], span2.SpanContext().SpanID())
	}

	// Status writes never carry it; nor do writes outside any span, nor with the option off.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	if err := inner.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodRunning
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	_ = inner.Get(ctx, client.ObjectKeyFromObject(pod), pod)
	if _, ok := pod.Annotations[TraceparentAnnotation]; ok {
		t.Errorf("a status write set %s", TraceparentAnnotation)
	}
	plain := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "untraced"}}
	if err := c.Create(context.Background(), plain); err != nil {
		t.Fatal(err)
	}
	off := testClient(inner, false, append(tt.opts, WithoutTraceparentAnnotation())...)
	optedOut := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "opted-out"}}
	if err := off.Create(ctx, optedOut); err != nil {
		t.Fatal(err)
	}
	for _, o := range []*corev1.ConfigMap{plain, optedOut} {
		if _, ok := o.Annotations[TraceparentAnnotation]; ok {
			t.Errorf("%s got %s", o.Name, TraceparentAnnotation)
		}
	}
}

func otelTracer(tt *testTelemetry) trace.Tracer {
	return newConfig(tt.opts).tracerProvider.Tracer("test")
}

func TestAnUpdateOfTheWriterAnnotationAloneTriggersNothing(t *testing.T) {
	old := widget("d", "1", 1, map[string]string{TraceparentAnnotation: "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01", "keep": "me"})
	old.Data = map[string]string{"k": "v"}
	annotationOnly := old.DeepCopy()
	annotationOnly.ResourceVersion = "2"
	annotationOnly.Annotations[TraceparentAnnotation] = "00-1102030405060708090a0b0c0d0e0f10-1102030405060708-01"
	realChange := annotationOnly.DeepCopy()
	realChange.Data["k"] = "changed"
	rig := newTriggerRig(t)
	for _, tc := range []struct {
		name     string
		new      *corev1.ConfigMap
		triggers bool
	}{
		{"the writer annotation alone", annotationOnly, false},
		{"the annotation and the data", realChange, true},
		{"a resync", old.DeepCopy(), true},
	} {
		if got := rig.forP.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: tc.new}); got != tc.triggers {
			t.Errorf("%s: the For watch passes it = %v, want %v", tc.name, got, tc.triggers)
		}
	}
	if old.Annotations[TraceparentAnnotation] == "" || annotationOnly.ResourceVersion != "2" {
		t.Error("the comparison must not change the objects of the event (the informer's cache)")
	}
}
