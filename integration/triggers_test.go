package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/integration/harness"
	"github.com/gowatchtower/watchtower/semconv"
)

// TestReconcileLinksToItsTriggers runs a controller built with otelctrl.NewControllerManagedBy
// (For ConfigMaps, Owns Secrets, Watches Namespaces) against a real API server and checks that
// each reconcile span links to what enqueued it: the watch event with the object and, when
// the object carries it, the writer's span from tracing.k8s.io/traceparent; the owned object's
// event; a Watches event; several changes coalesced into one reconcile; a requeue after an
// error, linked to the failed reconcile.
func TestReconcileLinksToItsTriggers(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kube := harness.StartKube(t)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	mp := sdkmetric.NewMeterProvider()
	opts := []otelctrl.Option{otelctrl.WithTracerProvider(tp), otelctrl.WithMeterProvider(mp)}
	mgr, err := otelctrl.NewManager(kube.Config, manager.Options{Scheme: scheme.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}}, opts...)
	if err != nil {
		t.Fatal(err)
	}

	// The reconciler writes an owned Secret, fails once for ConfigMaps that ask, and holds the
	// reconcile of "held" until released, so that changes made meanwhile coalesce.
	var mu sync.Mutex
	failedOnce := map[string]bool{}
	holding, release := make(chan struct{}, 1), make(chan struct{})
	const name = "trigger-links"
	r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		c := mgr.GetClient()
		var cm corev1.ConfigMap
		if err := c.Get(ctx, req.NamespacedName, &cm); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
		if cm.Name == "held" && cm.Data["hold"] == "yes" {
			select {
			case holding <- struct{}{}:
				<-release
			default:
			}
		}
		mu.Lock()
		fail := cm.Data["fail-once"] == "yes" && !failedOnce[cm.Name]
		failedOnce[cm.Name] = true
		mu.Unlock()
		if fail {
			return reconcile.Result{}, errors.New("failing once on purpose")
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cm.Namespace, Name: cm.Name + "-owned"}}
		_, err := controllerutil.CreateOrUpdate(ctx, c, s, func() error {
			s.StringData = cm.Data
			return controllerutil.SetControllerReference(&cm, s, c.Scheme())
		})
		return reconcile.Result{}, err
	})
	labelled := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()["links"] == "yes" }))
	err = otelctrl.NewControllerManagedBy(mgr, opts...).
		For(&corev1.ConfigMap{}, labelled).
		Owns(&corev1.Secret{}).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if cm := o.GetLabels()["poke"]; cm != "" {
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: "default", Name: cm}}}
			}
			return nil
		})).
		Named(name).
		Complete(r)
	if err != nil {
		t.Fatal(err)
	}
	// A second controller, of the Secrets the first one writes: its reconcile links to the
	// first one's reconcile through the annotation that write carried.
	const reader = "secret-reader"
	err = otelctrl.NewControllerManagedBy(mgr, opts...).
		For(&corev1.Secret{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return strings.HasSuffix(o.GetName(), "-owned") }))).
		Named(reader).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			var s corev1.Secret
			return reconcile.Result{}, client.IgnoreNotFound(mgr.GetClient().Get(ctx, req.NamespacedName, &s))
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mgrCtx, stopMgr := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stopMgr()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// reconciles returns the ended reconcile spans of ConfigMap cm, in order.
	reconciles := func(cm string) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, s := range spans.Ended() {
			if s.Name() == "reconcile "+name && attr(s, semconv.ObjectNameKey) == cm {
				out = append(out, s)
			}
		}
		return out
	}
	// linked waits for a reconcile of cm with a link matching want, and returns both.
	linked := func(what, cm string, want func(sdktrace.Link) bool) (sdktrace.ReadOnlySpan, sdktrace.Link) {
		t.Helper()
		for {
			for _, s := range reconciles(cm) {
				for _, l := range s.Links() {
					if want(l) {
						return s, l
					}
				}
			}
			if ctx.Err() != nil {
				var seen []string
				for _, s := range reconciles(cm) {
					seen = append(seen, fmt.Sprint(linkSummaries(s)))
				}
				t.Fatalf("%s: no reconcile of %s has such a link; its reconciles' links: %v", what, cm, seen)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	is := func(l sdktrace.Link, kvs ...string) bool {
		for i := 0; i < len(kvs); i += 2 {
			if linkValue(l, attribute.Key(kvs[i])) != kvs[i+1] {
				return false
			}
		}
		return true
	}
	cmObj := func(n string, data map[string]string, ann map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: n, Labels: map[string]string{"links": "yes"}, Annotations: ann}, Data: data}
	}

	// 1. Created by a writer that put its span in the annotation: the reconcile links to it.
	writer := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xa1, 1}, SpanID: trace.SpanID{0xb2, 2}, TraceFlags: trace.FlagsSampled})
	created := cmObj("written", map[string]string{"k": "v"}, map[string]string{otelctrl.TraceparentAnnotation: fmt.Sprintf("00-%s-%s-01", writer.TraceID(), writer.SpanID())})
	if err := kube.Client.Create(ctx, created); err != nil {
		t.Fatal(err)
	}
	s, l := linked("the create event", "written", func(l sdktrace.Link) bool {
		return is(l, "watchtower.trigger.event", "create", "watchtower.trigger.watch", "for", "watchtower.trigger.object.kind", "ConfigMap", "watchtower.trigger.object.name", "written")
	})
	if l.SpanContext.TraceID() != writer.TraceID() || l.SpanContext.SpanID() != writer.SpanID() {
		t.Errorf("the create event's link is %v, want the writer's span %v from the annotation", l.SpanContext, writer)
	}
	if linkValue(l, semconv.TriggerObjectResourceVersionKey) != created.ResourceVersion {
		t.Errorf("the link's resourceVersion %q, want the created object's %q", linkValue(l, semconv.TriggerObjectResourceVersionKey), created.ResourceVersion)
	}
	if attr(s, semconv.TriggerEventKey) != "create" {
		t.Errorf("the reconcile's trigger.event = %q, want create", attr(s, semconv.TriggerEventKey))
	}

	// 2. The Secret the reconcile created is owned: its create event enqueues its owner.
	linked("the owned Secret's event", "written", func(l sdktrace.Link) bool {
		return is(l, "watchtower.trigger.watch", "owns", "watchtower.trigger.object.kind", "Secret", "watchtower.trigger.object.name", "written-owned", "watchtower.trigger.event", "create")
	})

	// 2b. The Secret's own controller: its reconcile links to the reconcile that created the
	// Secret (the writer), and that one to the test's span that created the ConfigMap: a chain.
	var creator sdktrace.ReadOnlySpan
	for _, s := range reconciles("written") {
		if hasChild(spans.Ended(), s, "create Secret") {
			creator = s
		}
	}
	if creator == nil {
		t.Fatal("no reconcile of written created its Secret")
	}
	var readerSpan sdktrace.ReadOnlySpan
	for readerSpan == nil && ctx.Err() == nil {
		for _, s := range spans.Ended() {
			if s.Name() == "reconcile "+reader && attr(s, semconv.ObjectNameKey) == "written-owned" && len(s.Links()) > 0 &&
				linkValue(s.Links()[0], semconv.TriggerEventKey) == "create" {
				readerSpan = s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if readerSpan == nil {
		t.Fatal("the Secret's controller never reconciled written-owned")
	}
	if l := readerSpan.Links()[0]; l.SpanContext.SpanID() != creator.SpanContext().SpanID() || l.SpanContext.TraceID() != creator.SpanContext().TraceID() {
		t.Errorf("the Secret's reconcile links to %v, want the reconcile that wrote the Secret %v (%s)", l.SpanContext, creator.SpanContext(), linkSummaries(readerSpan))
	}

	// 3. A Namespace event through Watches' own handler.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "poker", Labels: map[string]string{"poke": "written"}}}
	if err := kube.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	linked("the Namespace event", "written", func(l sdktrace.Link) bool {
		return is(l, "watchtower.trigger.watch", "watches", "watchtower.trigger.object.kind", "Namespace", "watchtower.trigger.object.name", "poker")
	})

	// 4. Two changes while the reconcile of "held" runs: the queue holds the request once, and
	// its next reconcile links to both updates.
	held := cmObj("held", map[string]string{"hold": "yes"}, nil)
	if err := kube.Client.Create(ctx, held); err != nil {
		t.Fatal(err)
	}
	select {
	case <-holding:
	case <-ctx.Done():
		t.Fatal("the reconcile of held never started")
	}
	var rvs []string
	for _, v := range []string{"1", "2"} {
		held.Data = map[string]string{"hold": "no", "v": v}
		if err := kube.Client.Update(ctx, held); err != nil {
			t.Fatal(err)
		}
		rvs = append(rvs, held.ResourceVersion)
	}
	// Both updates must be in the informer before the reconcile ends, or they would not
	// coalesce: wait until the cache has the second.
	for {
		var c corev1.ConfigMap
		if err := mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(held), &c); err == nil && c.ResourceVersion == rvs[1] {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the cache never saw the second update")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	s, _ = linked("the first coalesced update", "held", func(l sdktrace.Link) bool {
		return is(l, "watchtower.trigger.event", "update", "watchtower.trigger.object.resource_version", rvs[0])
	})
	var both bool
	for _, l := range s.Links() {
		both = both || is(l, "watchtower.trigger.event", "update", "watchtower.trigger.object.resource_version", rvs[1])
	}
	if !both {
		t.Errorf("one reconcile must link to both coalesced updates (resourceVersions %v): %v", rvs, linkSummaries(s))
	}
	if n := attrInt(s, semconv.TriggerCountKey); n < 2 {
		t.Errorf("trigger.count = %d on the reconcile that took both updates, want at least 2", n)
	}

	// 5. A failed reconcile is retried; the retry links to it.
	if err := kube.Client.Create(ctx, cmObj("flaky", map[string]string{"fail-once": "yes"}, nil)); err != nil {
		t.Fatal(err)
	}
	retry, l := linked("the requeue after the failure", "flaky", func(l sdktrace.Link) bool {
		return is(l, "watchtower.trigger.event", "requeue")
	})
	var failed sdktrace.ReadOnlySpan
	for _, s := range reconciles("flaky") {
		if s.SpanContext().SpanID() == l.SpanContext.SpanID() {
			failed = s
		}
	}
	if failed == nil || failed.Status().Code.String() != "Error" {
		t.Errorf("the requeue's link must point at the failed reconcile of flaky; it points at %v", l.SpanContext)
	}
	if attr(retry, semconv.TriggerEventKey) != "requeue" {
		t.Errorf("the retry's trigger.event = %q, want requeue", attr(retry, semconv.TriggerEventKey))
	}
	// No loop: the annotation changes only with a write that happens anyway, so once the
	// objects are reconciled, nothing reconciles them again. Settled: no new reconcile for 2 s
	// (a loop never settles: 958 reconciles in 3 s before the guard existed); then none in 3 s.
	settled := func() int { return len(reconciles("written")) + len(reconciles("held")) + len(reconciles("flaky")) }
	last, quietSince := settled(), time.Now()
	for time.Since(quietSince) < 2*time.Second {
		if ctx.Err() != nil {
			t.Fatalf("the reconciled objects never settled (%d reconciles): the annotation causes a loop", settled())
		}
		time.Sleep(200 * time.Millisecond)
		if n := settled(); n != last {
			last, quietSince = n, time.Now()
		}
	}
	time.Sleep(3 * time.Second)
	if after := settled(); after != last {
		t.Errorf("%d more reconciles of settled objects in 3 s: the annotation causes a loop", after-last)
	}
	t.Logf("triggers: %d spans; the coalescing reconcile: %v; the Secret's reconcile: %v", len(spans.Ended()), linkSummaries(s), linkSummaries(readerSpan))
}

func linkValue(l sdktrace.Link, key attribute.Key) string {
	for _, kv := range l.Attributes {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

func attrInt(s sdktrace.ReadOnlySpan, key attribute.Key) int64 {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.AsInt64()
		}
	}
	return 0
}

// linkSummaries is "event watch kind/name@rv" per link, for failure messages.
func linkSummaries(s sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, l := range s.Links() {
		out = append(out, fmt.Sprintf("%s %s %s/%s@%s", linkValue(l, semconv.TriggerEventKey), linkValue(l, semconv.TriggerWatchKey),
			linkValue(l, semconv.TriggerObjectKindKey), linkValue(l, semconv.TriggerObjectNameKey), linkValue(l, semconv.TriggerObjectResourceVersionKey)))
	}
	return out
}
