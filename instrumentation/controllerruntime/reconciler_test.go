package otelctrl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gowatchtower/watchtower/semconv"
)

func req(ns, name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
}

func TestReconcileResultsAreClassified(t *testing.T) {
	for _, tc := range []struct {
		result     string
		res        reconcile.Result
		err        error
		wantStatus codes.Code
	}{
		{semconv.ReconcileResultSuccessValue, reconcile.Result{}, nil, codes.Unset},
		{semconv.ReconcileResultErrorValue, reconcile.Result{}, errors.New("boom"), codes.Error},
		{semconv.ReconcileResultTerminalErrorValue, reconcile.Result{}, reconcile.TerminalError(errors.New("bad spec")), codes.Error},
		// A 409 from an update on a stale object, wrapped as operators do: requeued like an
		// error, but not a failure.
		{semconv.ReconcileResultConflictValue, reconcile.Result{}, fmt.Errorf("update status: %w", apierrors.NewConflict(schema.GroupResource{Group: "demo.example.com", Resource: "widgets"}, "w1", errors.New("the object has been modified"))), codes.Unset},
		{semconv.ReconcileResultRequeueValue, reconcile.Result{Requeue: true}, nil, codes.Unset}, //lint:ignore SA1019 Requeue is still honoured and must be classified
		{semconv.ReconcileResultRequeueAfterValue, reconcile.Result{RequeueAfter: 30 * time.Second}, nil, codes.Unset},
		{semconv.ReconcileResultErrorValue, reconcile.Result{RequeueAfter: time.Second}, fmt.Errorf("wrapped: %w", errors.New("x")), codes.Error},
	} {
		t.Run(tc.result, func(t *testing.T) {
			tt := newTestTelemetry(t)
			r := testReconciler("widget", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
				return tc.res, tc.err
			}), tt.opts...)
			res, err := r.Reconcile(context.Background(), req("ns1", "w1"))
			if res != tc.res || !errors.Is(err, tc.err) {
				t.Fatalf("the decorator changed the result: got (%v, %v), want (%v, %v)", res, err, tc.res, tc.err)
			}
			spans := tt.spans.Ended()
			if len(spans) != 1 {
				t.Fatalf("want 1 span, got %d", len(spans))
			}
			s := spans[0]
			if s.Name() != "reconcile widget" || s.SpanKind() != trace.SpanKindInternal || s.Parent().IsValid() {
				t.Errorf("span %q kind %v parent %v: want root internal span \"reconcile widget\"", s.Name(), s.SpanKind(), s.Parent())
			}
			for key, want := range map[attribute.Key]string{
				semconv.ControllerNameKey:  "widget",
				semconv.ControllerGroupKey: "demo.example.com",
				semconv.ControllerKindKey:  "Widget",
				semconv.ObjectNamespaceKey: "ns1",
				semconv.ObjectNameKey:      "w1",
				semconv.ReconcileResultKey: tc.result,
			} {
				if v, _ := spanAttr(s, key); v.AsString() != want {
					t.Errorf("span attribute %s = %q, want %q", key, v.AsString(), want)
				}
			}
			if s.Status().Code != tc.wantStatus {
				t.Errorf("span status %v, want %v", s.Status().Code, tc.wantStatus)
			}
			if tc.err != nil {
				// The error is always on the span; it is the status only when it is a failure.
				if len(s.Events()) == 0 || s.Events()[0].Name != "exception" || (tc.wantStatus == codes.Error) != strings.Contains(s.Status().Description, tc.err.Error()) {
					t.Errorf("an error must be recorded as an exception event and the status description; events %v status %v", s.Events(), s.Status())
				}
			}
			if tc.result == semconv.ReconcileResultRequeueAfterValue {
				if v, _ := spanAttr(s, semconv.ReconcileRequeueAfterKey); v.AsFloat64() != 30 {
					t.Errorf("requeue_after = %v, want 30", v.AsFloat64())
				}
			}
			m := tt.metrics(t)
			if n := counterValue(t, m[semconv.ReconcilesName], semconv.ControllerName("widget"), semconv.ReconcileResultKey.String(tc.result)); n != 1 {
				t.Errorf("%s{result=%s} = %d, want 1", semconv.ReconcilesName, tc.result, n)
			}
			if n := histogramCount(t, m[semconv.ReconcileDurationName], semconv.ReconcileResultKey.String(tc.result), semconv.ControllerName("widget")); n != 1 {
				t.Errorf("%s count = %d, want 1", semconv.ReconcileDurationName, n)
			}
		})
	}
}

func TestPanicIsRecordedAndReraised(t *testing.T) {
	tt := newTestTelemetry(t)
	set := newActiveSet()
	r := newReconciler[reconcile.Request]("widget", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		panic("nil map write")
	}), newConfig(tt.opts), widgetKind, nil, set)

	var recovered any
	func() {
		defer func() { recovered = recover() }()
		_, _ = r.Reconcile(context.Background(), req("ns", "p"))
	}()
	if recovered != "nil map write" {
		t.Fatalf("the panic must reach controller-runtime unchanged, recovered %v", recovered)
	}
	spans := tt.spans.Ended()
	if len(spans) != 1 || spans[0].Status().Code != codes.Error || !strings.Contains(spans[0].Status().Description, "nil map write") {
		t.Fatalf("want one ended span with error status naming the panic, got %v", spans)
	}
	if v, _ := spanAttr(spans[0], semconv.ReconcileResultKey); v.AsString() != "panic" {
		t.Errorf("result %q, want panic", v.AsString())
	}
	m := tt.metrics(t)
	if n := counterValue(t, m[semconv.ReconcilesName], semconv.ReconcileResultPanic); n != 1 {
		t.Errorf("panic counted %d times, want 1", n)
	}
	if n := counterValue(t, m[semconv.ReconcileActiveName], semconv.ControllerName("widget")); n != 0 {
		t.Errorf("in-flight reconciles after a panic = %d, want 0", n)
	}
	if set.lookup(activeKey{gk: widgetKind, NamespacedName: types.NamespacedName{Namespace: "ns", Name: "p"}}) != nil {
		t.Error("a panicked reconcile must not stay registered as active")
	}
}

type customRequest struct{ key string }

func (c customRequest) String() string { return "custom/" + c.key }

func TestTypedReconciler(t *testing.T) {
	tt := newTestTelemetry(t)
	var got customRequest
	r := newReconciler("typed", reconcile.TypedReconciler[customRequest](reconcile.TypedFunc[customRequest](func(_ context.Context, r customRequest) (reconcile.Result, error) {
		got = r
		return reconcile.Result{}, nil
	})), newConfig(tt.opts), schema.GroupKind{}, nil, nil)
	if _, err := r.Reconcile(context.Background(), customRequest{"k1"}); err != nil {
		t.Fatal(err)
	}
	if got.key != "k1" {
		t.Fatalf("the request must be passed through, got %+v", got)
	}
	s := tt.spans.Ended()[0]
	if v, _ := spanAttr(s, semconv.ObjectNameKey); v.AsString() != "custom/k1" {
		t.Errorf("object name from String() = %q", v.AsString())
	}
}

func TestLogsCarryTraceAndSpanID(t *testing.T) {
	tt := newTestTelemetry(t)
	var buf bytes.Buffer
	logger := funcr.New(func(prefix, args string) { buf.WriteString(args + "\n") }, funcr.Options{})
	var sc trace.SpanContext
	r := testReconciler("widget", reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
		sc = trace.SpanContextFromContext(ctx)
		log.FromContext(ctx).Info("reconciling")
		return reconcile.Result{}, nil
	}), tt.opts...)
	ctx := log.IntoContext(context.Background(), logger.WithValues("controller", "widget"))
	if _, err := r.Reconcile(ctx, req("ns", "w")); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	for _, want := range []string{`"controller"="widget"`, `"trace_id"="` + sc.TraceID().String() + `"`, `"span_id"="` + sc.SpanID().String() + `"`, `"msg"="reconciling"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %s", line, want)
		}
	}
}

// A manager's event plumbing: a core/v1 recorder and a reconciler of ConfigMaps sharing one
// set of reconciles in flight.
func testRecorder(tt *testTelemetry, set *activeSet) (*record.FakeRecorder, record.EventRecorder) {
	fake := record.NewFakeRecorder(100)
	return fake, &legacyEventRecorder{EventRecorder: fake, tap: eventTap{in: instrumentsFor(newConfig(tt.opts).meterProvider), active: set, scheme: clientgoscheme.Scheme}}
}

func configMapReconciler(tt *testTelemetry, set *activeSet, name string, fn reconcile.Func) reconcile.Reconciler {
	return newReconciler[reconcile.Request](name, fn, newConfig(tt.opts), schema.GroupKind{Kind: "ConfigMap"}, nil, set)
}

func spanEvents(s sdktrace.ReadOnlySpan) []string {
	var got []string
	for _, e := range s.Events() {
		if e.Name != semconv.EventSpanName {
			continue
		}
		var typ, reason, note string
		for _, kv := range e.Attributes {
			switch kv.Key {
			case semconv.EventTypeKey:
				typ = kv.Value.AsString()
			case semconv.EventReasonKey:
				reason = kv.Value.AsString()
			case semconv.EventNoteKey:
				note = kv.Value.AsString()
			}
		}
		got = append(got, typ+"/"+reason+"/"+note)
	}
	return got
}

func TestEventsBecomeSpanEventsAndCounts(t *testing.T) {
	tt := newTestTelemetry(t)
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "owner"}}
	yes := true
	owned := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "owned-pod",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", Controller: &yes}}}}
	set := newActiveSet()
	fake, rec := testRecorder(tt, set)
	r := configMapReconciler(tt, set, "widget", func(context.Context, reconcile.Request) (reconcile.Result, error) {
		rec.Eventf(owner, corev1.EventTypeNormal, "Created", "created %s", "deployment")
		rec.Event(owned, corev1.EventTypeWarning, "BackOff", "restarting")
		return reconcile.Result{}, nil
	})
	if _, err := r.Reconcile(context.Background(), req("ns", "owner")); err != nil {
		t.Fatal(err)
	}
	if len(fake.Events) != 2 {
		t.Fatalf("the wrapped recorder must still emit both events, got %d", len(fake.Events))
	}
	got := spanEvents(tt.spans.Ended()[0])
	want := []string{"Normal/Created/created deployment", "Warning/BackOff/restarting"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("span events %v, want %v", got, want)
	}
	m := tt.metrics(t)
	if n := counterValue(t, m[semconv.EventsName], semconv.ControllerName("widget"), semconv.EventReason("BackOff"), semconv.EventType("Warning")); n != 1 {
		t.Errorf("events{reason=BackOff} = %d, want 1", n)
	}
	// Outside a reconcile an event is still counted, with no controller.
	rec.Event(owner, corev1.EventTypeNormal, "Idle", "nothing")
	if n := counterValue(t, tt.metrics(t)[semconv.EventsName], semconv.ControllerName(""), semconv.EventReason("Idle")); n != 1 {
		t.Errorf("events outside a reconcile = %d, want 1", n)
	}
}

// TestEventsNeverLandOnAnUnrelatedSpan: while a ConfigMap "app" is being reconciled, Events
// about other objects named "app" — a Secret, a ConfigMap of another namespace, a Pod owned by
// a Deployment "app" — emitted elsewhere (a runnable, another manager) stay off its span.
func TestEventsNeverLandOnAnUnrelatedSpan(t *testing.T) {
	tt := newTestTelemetry(t)
	yes := true
	inReconcile := make(chan struct{})
	release := make(chan struct{})
	set := newActiveSet()
	_, rec := testRecorder(tt, set)
	r := configMapReconciler(tt, set, "configmap", func(context.Context, reconcile.Request) (reconcile.Result, error) {
		close(inReconcile)
		<-release
		return reconcile.Result{}, nil
	})
	// A second manager in the same process, with its own set, reconciling nothing.
	_, otherRec := testRecorder(tt, newActiveSet())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = r.Reconcile(context.Background(), req("ns", "app"))
	}()
	<-inReconcile
	rec.Event(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app"}}, "Normal", "SecretSynced", "same name, other kind")
	rec.Event(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "app"}}, "Normal", "OtherNamespace", "same name, other namespace")
	rec.Event(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app-1", OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "app", Controller: &yes}}}}, "Normal", "OwnedByDeployment", "owner of the same name, other kind")
	otherRec.Event(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app"}}, "Normal", "OtherManager", "same object, another manager's recorder")
	rec.Event(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app"}}, "Normal", "Mine", "the object itself")
	close(release)
	<-done
	if got := spanEvents(tt.spans.Ended()[0]); strings.Join(got, ",") != "Normal/Mine/the object itself" {
		t.Errorf("span events %v: only the Event about the reconciled ConfigMap belongs on its span", got)
	}
}

// TestEventRecorderForAttributesExactly: a recorder bound to the reconcile's context puts its
// Events on that reconcile whatever they are about, and on a caller's own span outside any
// reconcile.
func TestEventRecorderForAttributesExactly(t *testing.T) {
	tt := newTestTelemetry(t)
	fake := events.NewFakeRecorder(10)
	base := &eventRecorder{EventRecorder: fake, tap: eventTap{in: instrumentsFor(newConfig(tt.opts).meterProvider)}}
	r := testReconciler("widget", reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
		EventRecorderFor(ctx, base).Eventf(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "unrelated-name"}}, nil, "Normal", "Rotated", "Rotate", "key %d", 2)
		return reconcile.Result{}, nil
	}), tt.opts...)
	if _, err := r.Reconcile(context.Background(), req("ns", "w")); err != nil {
		t.Fatal(err)
	}
	if got := spanEvents(tt.spans.Ended()[0]); strings.Join(got, ",") != "Normal/Rotated/key 2" {
		t.Errorf("span events %v", got)
	}
	if n := counterValue(t, tt.metrics(t)[semconv.EventsName], semconv.ControllerName("widget"), semconv.EventReason("Rotated")); n != 1 {
		t.Errorf("events{controller=widget,reason=Rotated} = %d, want 1", n)
	}
	// Outside a reconcile, under a webhook's or runnable's own span.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tt.spans))
	ctx, span := tp.Tracer("test").Start(context.Background(), "webhook")
	EventRecorderFor(ctx, base).Eventf(&corev1.Secret{}, nil, "Warning", "Denied", "Admit", "no")
	span.End()
	ended := tt.spans.Ended()
	if got := spanEvents(ended[len(ended)-1]); strings.Join(got, ",") != "Warning/Denied/no" {
		t.Errorf("caller's span events %v", got)
	}
	if len(fake.Events) != 2 {
		t.Errorf("both Events must still be emitted, got %d", len(fake.Events))
	}
}

// TestSeriesCountIsConstantInObjects: metric labels never carry object names, so reconciling
// 10,000 distinct objects yields as many series as reconciling 10.
func TestSeriesCountIsConstantInObjects(t *testing.T) {
	tt := newTestTelemetry(t)
	set := newActiveSet()
	fake, rec := testRecorder(tt, set)
	r := configMapReconciler(tt, set, "widget", func(_ context.Context, q reconcile.Request) (reconcile.Result, error) {
		select {
		case <-fake.Events:
		default:
		}
		rec.Event(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: q.Namespace, Name: q.Name}}, "Normal", "Synced", "synced "+q.Name)
		if strings.HasSuffix(q.Name, "0") || strings.HasSuffix(q.Name, "5") {
			return reconcile.Result{}, errors.New("failed for " + q.Name)
		}
		return reconcile.Result{}, nil
	})
	run := func(from, to int) {
		for i := from; i < to; i++ {
			_, _ = r.Reconcile(context.Background(), req(fmt.Sprintf("ns-%d", i%97), fmt.Sprintf("obj-%d", i)))
		}
	}
	run(0, 10)
	before := seriesCount(t, tt)
	run(10, 10_000)
	if after := seriesCount(t, tt); after != before {
		t.Fatalf("series count grew from %d to %d with the number of objects", before, after)
	}
}
