package otelctrl

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gowatchtower/watchtower/semconv"
)

func TestClientCallsAreChildSpansOfTheReconcile(t *testing.T) {
	tt := newTestTelemetry(t)
	c := testClient(fake.NewClientBuilder().Build(), false, tt.opts...)
	r := testReconciler("widget", reconcile.Func(func(ctx context.Context, q reconcile.Request) (reconcile.Result, error) {
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
		// INTERNAL: a logical call may never leave the process (a cache read); the wire request
		// under it, if any, is the CLIENT span (TestTransportSpansFollowHTTPClientConventions).
		if s.Parent().SpanID() != root.SpanContext().SpanID() || s.SpanKind() != trace.SpanKindInternal {
			t.Errorf("span %s (kind %v) must be an internal child of the reconcile span", s.Name(), s.SpanKind())
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
	c := testClient(fake.NewClientBuilder().Build(), false, tt.opts...)
	if err := c.Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "x"}}); err != nil {
		t.Fatal(err)
	}
	if n := len(tt.spans.Ended()); n != 0 {
		t.Fatalf("a call outside a reconcile started %d spans, want none by default", n)
	}
	if n := histogramCount(t, tt.metrics(t)[semconv.APIDurationName], semconv.ControllerName(""), semconv.APIVerbCreate); n != 1 {
		t.Errorf("the call must still be measured, count = %d", n)
	}
	c2 := testClient(fake.NewClientBuilder().Build(), false, append(tt.opts, WithAPISpansOutsideReconcile())...)
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
	r := testReconciler("widget", reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
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

// TestTransportSpansFollowHTTPClientConventions: one CLIENT span per wire request with the HTTP
// client semantic conventions, url.full without credentials.
func TestTransportSpansFollowHTTPClientConventions(t *testing.T) {
	tt := newTestTelemetry(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	hc, err := rest.HTTPClientFor(WrapConfig(&rest.Config{Host: srv.URL}, tt.opts...))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.URL)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tt.spans))
	// Outside any reconcile, under a caller's own span (a webhook, a runnable): traced.
	ctx, caller := tp.Tracer("test").Start(context.Background(), "runnable")
	for _, target := range []string{
		"http://user:secret@" + u.Host + "/api/v1/namespaces/ns/configmaps/a?token=abc&limit=1",
		srv.URL + "/api/v1/namespaces/ns/configmaps/b?fail=1",
	} {
		rq, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		resp, err := hc.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	caller.End()
	spans := tt.spans.Ended()
	if len(spans) != 3 {
		t.Fatalf("want two wire spans and the caller's, got %d", len(spans))
	}
	port, _ := strconv.Atoi(u.Port())
	for i, s := range spans[:2] {
		if s.SpanKind() != trace.SpanKindClient || s.Name() != "GET" || s.Parent().SpanID() != caller.SpanContext().SpanID() {
			t.Errorf("wire span %d: %q kind %v: want a CLIENT span GET under the caller's span", i, s.Name(), s.SpanKind())
		}
		for key, want := range map[attribute.Key]string{
			"http.request.method": "GET",
			"server.address":      u.Hostname(),
			"server.port":         strconv.Itoa(port),
		} {
			if v, _ := spanAttr(s, key); v.String() != want {
				t.Errorf("wire span %d: %s = %q, want %q", i, key, v.String(), want)
			}
		}
	}
	full, _ := spanAttr(spans[0], "url.full")
	if strings.Contains(full.AsString(), "secret") || strings.Contains(full.AsString(), "abc") || !strings.Contains(full.AsString(), "limit=1") {
		t.Errorf("url.full %q must keep the URL but not its credentials", full.AsString())
	}
	if v, _ := spanAttr(spans[0], "http.response.status_code"); v.AsInt64() != 200 {
		t.Errorf("status code %d, want 200", v.AsInt64())
	}
	if v, _ := spanAttr(spans[1], "http.response.status_code"); v.AsInt64() != 503 || spans[1].Status().Code != codes.Error {
		t.Errorf("a 503 must be recorded with an error status, got %d %v", v.AsInt64(), spans[1].Status())
	}
}

// TestCallsUnderACallersOwnSpanAreTraced: a webhook or runnable that started its own span gets
// the logical spans of its calls under it, without WithAPISpansOutsideReconcile.
func TestCallsUnderACallersOwnSpanAreTraced(t *testing.T) {
	tt := newTestTelemetry(t)
	c := testClient(fake.NewClientBuilder().Build(), false, tt.opts...)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tt.spans))
	ctx, caller := tp.Tracer("test").Start(context.Background(), "webhook")
	_ = c.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "x"}, &corev1.ConfigMap{})
	caller.End()
	spans := tt.spans.Ended()
	if len(spans) != 2 || spans[0].Name() != "get ConfigMap" || spans[0].Parent().SpanID() != caller.SpanContext().SpanID() {
		t.Fatalf("want get ConfigMap under the caller's span, got %v", spanNames(spans))
	}
}

// TestServerSideApplyNamesItsKind: an apply call is named by the kind and object of its apply
// configuration, typed or unstructured.
func TestServerSideApplyNamesItsKind(t *testing.T) {
	tt := newTestTelemetry(t)
	c := testClient(fake.NewClientBuilder().Build(), false, tt.opts...)
	r := testReconciler("widget", reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
		_ = c.Apply(ctx, corev1ac.ConfigMap("app", "ns").WithData(map[string]string{"k": "v"}), client.FieldOwner("test"), client.ForceOwnership)
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"})
		u.SetNamespace("ns")
		u.SetName("web")
		_ = c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("test"))
		_ = c.Status().Apply(ctx, corev1ac.Pod("p", "ns"), client.FieldOwner("test"))
		return reconcile.Result{}, nil
	}), tt.opts...)
	_, _ = r.Reconcile(context.Background(), req("ns", "w"))
	spans := tt.spans.Ended()
	want := []string{"apply ConfigMap ns/app", "apply Deployment ns/web", "apply Pod/status ns/p", "reconcile widget"}
	var got []string
	for _, s := range spans {
		ns, _ := spanAttr(s, semconv.ObjectNamespaceKey)
		name, _ := spanAttr(s, semconv.ObjectNameKey)
		if s.Name() == "reconcile widget" {
			got = append(got, s.Name())
			continue
		}
		got = append(got, s.Name()+" "+ns.AsString()+"/"+name.AsString())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("spans %v, want %v", got, want)
	}
	if n := histogramCount(t, tt.metrics(t)[semconv.APIDurationName], semconv.APIVerbApply, semconv.APIKind("Deployment"), semconv.APIGroup("apps")); n != 1 {
		t.Errorf("api duration{verb=apply,kind=Deployment,group=apps} count = %d, want 1", n)
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// cachedClient is controller-runtime's default client as the manager builds it, reduced to what
// matters here: reads go to the informer cache (marked by the cache marker, as newClient marks
// it), writes to the API server.
type cachedClient struct {
	client.WithWatch
	cache client.Reader
}

func (c cachedClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return c.cache.Get(ctx, key, obj, opts...)
}

func (c cachedClient) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return c.cache.List(ctx, list, opts...)
}

func newCachedClient(objs ...client.Object) (cachedClient, client.WithWatch) {
	inner := fake.NewClientBuilder().WithObjects(objs...).Build()
	return cachedClient{WithWatch: inner, cache: &cacheMarker{Reader: inner}}, inner
}

// TestCacheReadsAreCountedNotTimed: reads the cache served are counted in
// watchtower.api.cache_reads and their spans are named "(cache)"; only calls that reached the
// API server are timed in watchtower.api.duration. A cache read made while another call of the same
// reconcile is in flight is told from that call, whichever started first.
func TestCacheReadsAreCountedNotTimed(t *testing.T) {
	tt := newTestTelemetry(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cached"}}
	cached, inner := newCachedClient(cm)
	// A Create that blocks until released, so that a cache read overlaps it.
	entered, release := make(chan struct{}), make(chan struct{})
	blocking := cachedClient{WithWatch: interceptor.NewClient(inner, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if obj.GetName() == "slow" {
				close(entered)
				<-release
			}
			return c.Create(ctx, obj, opts...)
		},
	}), cache: cached.cache}
	c := testClient(blocking, true, tt.opts...)
	r := testReconciler("widget", reconcile.Func(func(ctx context.Context, q reconcile.Request) (reconcile.Result, error) {
		var got corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKeyFromObject(cm), &got); err != nil {
			t.Errorf("cache read: %v", err)
		}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "ns", Name: "missing"}, &got); !apierrors.IsNotFound(err) {
			t.Errorf("cache read of a missing object: %v, want NotFound", err)
		}
		var list corev1.ConfigMapList
		if err := c.List(ctx, &list, client.InNamespace("ns")); err != nil {
			t.Errorf("cache list: %v", err)
		}
		// The API-server write starts first and is still in flight when the cache read
		// starts and ends.
		done := make(chan error)
		go func() {
			done <- c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "slow"}})
		}()
		<-entered
		if err := c.Get(ctx, client.ObjectKeyFromObject(cm), &got); err != nil {
			t.Errorf("overlapping cache read: %v", err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Errorf("create: %v", err)
		}
		return reconcile.Result{}, c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "fast"}})
	}), tt.opts...)
	if _, err := r.Reconcile(context.Background(), req("ns", "cached")); err != nil {
		t.Fatal(err)
	}

	sources := map[string][]string{}
	for _, s := range tt.spans.Ended() {
		if s.SpanKind() != trace.SpanKindInternal || s.Name() == "reconcile widget" {
			continue
		}
		v, _ := spanAttr(s, semconv.APISourceKey)
		name, _ := spanAttr(s, semconv.ObjectNameKey)
		sources[s.Name()] = append(sources[s.Name()], name.AsString()+"="+v.AsString())
	}
	// A successful cache read is a bare span renamed "(cache)"; a cache miss keeps its
	// attributes, with source=cache.
	want := map[string]string{
		"get ConfigMap (cache)":  "[= missing=cache =]",
		"list ConfigMap (cache)": "[=]",
		"create ConfigMap":       "[slow=api_server fast=api_server]",
	}
	if len(sources) != len(want) {
		t.Errorf("spans by name %v, want only %v", sources, want)
	}
	for name, w := range want {
		if got := fmt.Sprint(sources[name]); got != w {
			t.Errorf("%s spans by object=source: %s, want %s", name, got, w)
		}
	}

	m := tt.metrics(t)
	for _, c := range []struct {
		attrs []attribute.KeyValue
		want  int64
	}{
		{[]attribute.KeyValue{semconv.APIVerbGet, semconv.APICode(200)}, 2},
		{[]attribute.KeyValue{semconv.APIVerbGet, semconv.APICode(404)}, 1},
		{[]attribute.KeyValue{semconv.APIVerbList, semconv.APICode(200)}, 1},
		{[]attribute.KeyValue{semconv.APIVerbCreate}, 0},
	} {
		attrs := append([]attribute.KeyValue{semconv.ControllerName("widget"), semconv.APIGroup(""), semconv.APIKind("ConfigMap")}, c.attrs...)
		if got := counterValue(t, m[semconv.APICacheReadsName], attrs...); got != c.want {
			t.Errorf("%s%v = %d, want %d", semconv.APICacheReadsName, c.attrs, got, c.want)
		}
	}
	if n := histogramCount(t, m[semconv.APIDurationName], semconv.APIVerbGet); n != 0 {
		t.Errorf("%s{verb=get} count = %d: cache reads must not be timed", semconv.APIDurationName, n)
	}
	if n := histogramCount(t, m[semconv.APIDurationName], semconv.ControllerName("widget"), semconv.APIVerbCreate, semconv.APICode(200)); n != 2 {
		t.Errorf("%s{verb=create} count = %d, want 2", semconv.APIDurationName, n)
	}
	h := m[semconv.APIDurationName].(metricdata.Histogram[float64])
	for _, dp := range h.DataPoints {
		if _, ok := dp.Attributes.Value(semconv.APISourceKey); ok {
			t.Errorf("%s carries %s: every point is an API-server call", semconv.APIDurationName, semconv.APISourceKey)
		}
	}
}

// TestUnmarkedReadsAfterCacheReadsAreAPIServerReads: a reader without a cache marker
// (manager.GetAPIReader) reads from the API server even after the reconcile's cache reads.
func TestUnmarkedReadsAfterCacheReadsAreAPIServerReads(t *testing.T) {
	tt := newTestTelemetry(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cm"}}
	cached, inner := newCachedClient(cm)
	c := testClient(cached, true, tt.opts...)
	apiReader := &tracedReader{Reader: inner, t: newCallTracer(inner.Scheme(), false, tt.opts)}
	r := testReconciler("widget", reconcile.Func(func(ctx context.Context, q reconcile.Request) (reconcile.Result, error) {
		var got corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKeyFromObject(cm), &got); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, apiReader.Get(ctx, client.ObjectKeyFromObject(cm), &got)
	}), tt.opts...)
	if _, err := r.Reconcile(context.Background(), req("ns", "cm")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range tt.spans.Ended() {
		v, _ := spanAttr(s, semconv.APISourceKey)
		got = append(got, s.Name()+"="+v.AsString())
	}
	if want := "[get ConfigMap (cache)= get ConfigMap=api_server reconcile widget=]"; fmt.Sprint(got) != want {
		t.Errorf("spans %v, want %s", got, want)
	}
}
