package otelctrl

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gowatchtower/watchtower/semconv"
)

func TestClientCallsAreChildSpansOfTheReconcile(t *testing.T) {
	tt := newTestTelemetry(t)
	c := WrapClient(fake.NewClientBuilder().Build(), tt.opts...)
	r := NewReconciler("widget", reconcile.Func(func(ctx context.Context, q reconcile.Request) (reconcile.Result, error) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: q.Namespace, Name: q.Name}}
		if err := c.Create(ctx, cm); err != nil {
			return reconcile.Result{}, err
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(cm), cm); err != nil {
			return reconcile.Result{}, err
		}
		var list corev1.ConfigMapList
		if err := c.List(ctx, &list, client.InNamespace(q.Namespace)); err != nil {
			return reconcile.Result{}, err
		}
		err := c.Get(ctx, client.ObjectKey{Namespace: q.Namespace, Name: "missing"}, &corev1.ConfigMap{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("want NotFound through the wrapper, got %v", err)
		}
		return reconcile.Result{}, c.Status().Update(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: q.Namespace, Name: "nope"}})
	}), tt.opts...)
	_, _ = r.Reconcile(context.Background(), req("ns", "cm1"))

	spans := tt.spans.Ended()
	root := spans[len(spans)-1]
	var names []string
	for _, s := range spans[:len(spans)-1] {
		if s.Parent().SpanID() != root.SpanContext().SpanID() || s.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %s must be a client child of the reconcile span", s.Name())
		}
		names = append(names, s.Name())
	}
	want := []string{"create ConfigMap", "get ConfigMap", "list ConfigMap", "get ConfigMap", "update Pod/status"}
	if len(names) != len(want) {
		t.Fatalf("child spans %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Errorf("child span %d = %q, want %q", i, names[i], want[i])
		}
	}
	notFound := spans[3]
	if v, _ := spanAttr(notFound, semconv.APICodeKey); v.AsInt64() != 404 {
		t.Errorf("NotFound get code = %d, want 404", v.AsInt64())
	}
	if notFound.Status().Code == codes.Error || len(notFound.Events()) == 0 {
		t.Errorf("a 404 is recorded as an event but is not an error status: status %v events %v", notFound.Status(), notFound.Events())
	}
	if v, _ := spanAttr(spans[1], semconv.ObjectNameKey); v.AsString() != "cm1" {
		t.Errorf("get span object name = %q", v.AsString())
	}
	// A plain client (not built by NewClient) has no cache: its reads are API-server reads.
	if v, _ := spanAttr(spans[1], semconv.APISourceKey); v.AsString() != semconv.APISourceAPIServerValue {
		t.Errorf("source = %q, want api_server", v.AsString())
	}
	m := tt.metrics(t)
	if n := histogramCount(t, m[semconv.APIDurationName], semconv.ControllerName("widget"), semconv.APIVerbGet, semconv.APICode(404), semconv.APIKind("ConfigMap")); n != 1 {
		t.Errorf("api duration{verb=get,code=404} count = %d, want 1", n)
	}
}

func TestClientCallsOutsideAReconcileAreNotRootSpans(t *testing.T) {
	tt := newTestTelemetry(t)
	c := WrapClient(fake.NewClientBuilder().Build(), tt.opts...)
	if err := c.Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "x"}}); err != nil {
		t.Fatal(err)
	}
	if n := len(tt.spans.Ended()); n != 0 {
		t.Fatalf("a call outside a reconcile started %d spans, want none by default", n)
	}
	if n := histogramCount(t, tt.metrics(t)[semconv.APIDurationName], semconv.ControllerName(""), semconv.APIVerbCreate); n != 1 {
		t.Errorf("the call must still be measured, count = %d", n)
	}
	c2 := WrapClient(fake.NewClientBuilder().Build(), append(tt.opts, WithAPISpansOutsideReconcile())...)
	_ = c2.Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "x"}})
	if n := len(tt.spans.Ended()); n != 1 {
		t.Fatalf("with WithAPISpansOutsideReconcile want 1 span, got %d", n)
	}
}

func TestTransportPropagatesTraceparentAndSkipsWatches(t *testing.T) {
	tt := newTestTelemetry(t)
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RawQuery+"|"+r.Header.Get("traceparent"))
	}))
	t.Cleanup(srv.Close)
	cfg := WrapConfig(&rest.Config{Host: srv.URL}, append(tt.opts, WithPropagator(propagation.TraceContext{}))...)
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	get := func(ctx context.Context, query string) {
		rq, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/namespaces/ns/configmaps?"+query, nil)
		resp, err := hc.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var traceID string
	r := NewReconciler("widget", reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
		traceID = trace.SpanContextFromContext(ctx).TraceID().String()
		get(ctx, "limit=1")
		get(ctx, "watch=true")
		return reconcile.Result{}, nil
	}), tt.opts...)
	_, _ = r.Reconcile(context.Background(), req("ns", "a"))
	get(context.Background(), "outside=1")

	if len(got) != 3 {
		t.Fatalf("server saw %d requests", len(got))
	}
	if want := "-" + traceID + "-"; !strings.Contains(got[0], want) {
		t.Errorf("request inside the reconcile carried %q, want a traceparent of trace %s", got[0], traceID)
	}
	if got[2] != "outside=1|" {
		t.Errorf("a request outside any trace must carry no traceparent, got %q", got[2])
	}
	var names []string
	for _, s := range tt.spans.Ended() {
		names = append(names, s.Name())
	}
	if len(names) != 2 || names[0] != "GET" || names[1] != "reconcile widget" {
		t.Errorf("spans %v: want one GET span (no span for the watch) and the reconcile", names)
	}
}
