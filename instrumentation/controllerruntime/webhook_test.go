package otelctrl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	otelsemconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/gowatchtower/watchtower/semconv"
)

// webhookManager is a manager whose only real part is its webhook server: enough for
// instrumentedManager.GetWebhookServer, without an API server.
type webhookManager struct {
	manager.Manager
	srv webhook.Server
}

func (m webhookManager) GetWebhookServer() webhook.Server { return m.srv }

// webhookFixture is an instrumented manager's webhook server behind an httptest server (plain
// HTTP: TLS is the server's business, not the instrumentation's).
type webhookFixture struct {
	tt  *testTelemetry
	mgr *instrumentedManager
	url string
}

func newWebhookFixture(t *testing.T, register func(srv webhook.Server)) *webhookFixture {
	t.Helper()
	tt := newTestTelemetry(t)
	opts := append([]Option{WithPropagator(propagation.TraceContext{})}, tt.opts...)
	mux := http.NewServeMux()
	mgr := &instrumentedManager{Manager: webhookManager{srv: webhook.NewServer(webhook.Options{WebhookMux: mux})}, opts: opts}
	register(mgr.GetWebhookServer())
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return &webhookFixture{tt: tt, mgr: mgr, url: ts.URL}
}

// review POSTs an AdmissionReview for a ConfigMap named name to path, with headers h, and
// returns the webhook's response.
func (f *webhookFixture) review(t *testing.T, path, name string, h http.Header) *admissionv1.AdmissionResponse {
	t.Helper()
	cm, _ := json.Marshal(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name}})
	dryRun := true
	body, _ := json.Marshal(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "0b6f3a2d",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "configmaps"},
			Operation: admissionv1.Create,
			Namespace: "team-a",
			Name:      name,
			DryRun:    &dryRun,
			Object:    runtime.RawExtension{Raw: cm},
		},
	})
	req, _ := http.NewRequest(http.MethodPost, f.url+path, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
		t.Fatalf("decode the review response (HTTP %d): %v", resp.StatusCode, err)
	}
	return out.Response
}

// webhookSpans returns the ended SERVER spans.
func (f *webhookFixture) webhookSpans() []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range f.tt.spans.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			out = append(out, s)
		}
	}
	return out
}

// decideByName is an admission handler whose decision is in the object's name.
func decideByName(ctx context.Context, req admission.Request) admission.Response {
	switch req.Name {
	case "bad":
		return admission.Denied("team-a may not create ConfigMaps named bad")
	case "broken":
		return admission.Errored(http.StatusInternalServerError, errors.New("policy store unreachable"))
	case "boom":
		panic("a webhook bug")
	}
	return admission.Allowed("")
}

func TestWebhookSpanContinuesTheCallersTrace(t *testing.T) {
	f := newWebhookFixture(t, func(srv webhook.Server) {
		srv.Register("/validate-configmap", &admission.Webhook{Handler: admission.HandlerFunc(decideByName)})
	})
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	h := http.Header{"Traceparent": {"00-" + traceID + "-" + parentID + "-01"}}
	if resp := f.review(t, "/validate-configmap", "good", h); !resp.Allowed {
		t.Fatalf("the wrapper changed the decision: %+v", resp)
	}
	spans := f.webhookSpans()
	if len(spans) != 1 {
		t.Fatalf("want one SERVER span, got %d", len(spans))
	}
	s := spans[0]
	if s.Name() != "POST /validate-configmap" {
		t.Errorf("span name %q, want the HTTP server convention %q", s.Name(), "POST /validate-configmap")
	}
	if got := s.SpanContext().TraceID().String(); got != traceID {
		t.Errorf("trace ID %s, want the caller's %s", got, traceID)
	}
	if got := s.Parent().SpanID().String(); got != parentID || !s.Parent().IsRemote() {
		t.Errorf("parent %s (remote %v), want the caller's span %s", got, s.Parent().IsRemote(), parentID)
	}
	for key, want := range map[attribute.Key]string{
		otelsemconv.HTTPRequestMethodKey:      "POST",
		otelsemconv.HTTPRouteKey:              "/validate-configmap",
		otelsemconv.URLPathKey:                "/validate-configmap",
		otelsemconv.URLSchemeKey:              "http",
		otelsemconv.ServerAddressKey:          "127.0.0.1",
		otelsemconv.HTTPResponseStatusCodeKey: "200",
		semconv.WebhookPathKey:                "/validate-configmap",
		semconv.AdmissionAllowedKey:           "true",
		semconv.AdmissionCodeKey:              "200",
		semconv.AdmissionOperationKey:         "CREATE",
		semconv.AdmissionGroupKey:             "",
		semconv.AdmissionKindKey:              "ConfigMap",
		semconv.AdmissionDryRunKey:            "true",
		semconv.AdmissionPatchedKey:           "false",
		semconv.ObjectNamespaceKey:            "team-a",
		semconv.ObjectNameKey:                 "good",
	} {
		if v, ok := spanAttr(s, key); !ok || v.String() != want {
			t.Errorf("%s = %q (set %v), want %q", key, v.String(), ok, want)
		}
	}
	if _, ok := spanAttr(s, semconv.AdmissionReasonKey); ok {
		t.Errorf("an allowed request must not carry a denial reason")
	}
	if s.Status().Code == codes.Error {
		t.Errorf("status %v", s.Status())
	}
}

func TestWebhookSpanStartsATraceWithoutTraceparent(t *testing.T) {
	f := newWebhookFixture(t, func(srv webhook.Server) {
		srv.Register("/validate-configmap", &admission.Webhook{Handler: admission.HandlerFunc(decideByName)})
	})
	f.review(t, "/validate-configmap", "good", nil)
	spans := f.webhookSpans()
	if len(spans) != 1 || spans[0].Parent().IsValid() {
		t.Fatalf("want one root SERVER span, got %d", len(spans))
	}
}

func TestWebhookSpanRecordsTheAdmissionDecision(t *testing.T) {
	f := newWebhookFixture(t, func(srv webhook.Server) {
		srv.Register("/validate-configmap", &admission.Webhook{Handler: admission.HandlerFunc(decideByName)})
	})
	for _, name := range []string{"good", "bad", "broken", "boom"} {
		f.review(t, "/validate-configmap", name, nil)
	}
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range f.webhookSpans() {
		v, _ := spanAttr(s, semconv.ObjectNameKey)
		byName[v.AsString()] = s
	}
	type want struct {
		allowed, code, reason, message string
		failed                         bool
	}
	for name, w := range map[string]want{
		"good":   {allowed: "true", code: "200"},
		"bad":    {allowed: "false", code: "403", reason: "Forbidden", message: "team-a may not create ConfigMaps named bad"},
		"broken": {allowed: "false", code: "500", reason: "", message: "policy store unreachable", failed: true},
		"boom":   {allowed: "false", code: "500", failed: true},
	} {
		s, ok := byName[name]
		if !ok {
			t.Errorf("%s: no span", name)
			continue
		}
		got := func(k attribute.Key) string { v, _ := spanAttr(s, k); return v.String() }
		if got(semconv.AdmissionAllowedKey) != w.allowed || got(semconv.AdmissionCodeKey) != w.code ||
			got(semconv.AdmissionReasonKey) != w.reason || got(semconv.AdmissionMessageKey) != w.message {
			t.Errorf("%s: allowed=%q code=%q reason=%q message=%q, want %+v", name,
				got(semconv.AdmissionAllowedKey), got(semconv.AdmissionCodeKey), got(semconv.AdmissionReasonKey), got(semconv.AdmissionMessageKey), w)
		}
		if failed := s.Status().Code == codes.Error; failed != w.failed {
			t.Errorf("%s: span status %v; a denial is an answer, only a webhook failure is an error", name, s.Status())
		}
		t.Logf("%s: %s allowed=%s code=%s reason=%q status=%v", name, s.Name(), got(semconv.AdmissionAllowedKey), got(semconv.AdmissionCodeKey), got(semconv.AdmissionReasonKey), s.Status().Code)
	}
	if ev := byName["boom"].Events(); len(ev) == 0 || ev[0].Name != "exception" {
		t.Errorf("the panic must be recorded as an exception event, events %v", ev)
	}

	// The metric: one series per path and decision, no object in sight.
	data := f.tt.metrics(t)[semconv.WebhookDurationName]
	path := semconv.WebhookPath("/validate-configmap")
	for _, c := range []struct {
		allowed bool
		code    int
		n       uint64
	}{{true, 200, 1}, {false, 403, 1}, {false, 500, 2}} {
		if got := histogramCount(t, data, path, semconv.AdmissionAllowed(c.allowed), semconv.AdmissionCode(c.code)); got != c.n {
			t.Errorf("%s{allowed=%v, code=%d} count %d, want %d", semconv.WebhookDurationName, c.allowed, c.code, got, c.n)
		}
	}
	if n := len(data.(metricdata.Histogram[float64]).DataPoints); n != 3 {
		t.Errorf("%d series, want 3 (path × decision)", n)
	}
}

func TestWebhookSpanForAPlainHandler(t *testing.T) {
	f := newWebhookFixture(t, func(srv webhook.Server) {
		// A conversion webhook, or anything else that is not an admission.Webhook.
		srv.Register("/convert", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
	})
	resp, err := http.Post(f.url+"/convert", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	spans := f.webhookSpans()
	if len(spans) != 1 || spans[0].Name() != "POST /convert" {
		t.Fatalf("want one SERVER span POST /convert, got %d", len(spans))
	}
	s := spans[0]
	if v, _ := spanAttr(s, otelsemconv.HTTPResponseStatusCodeKey); v.AsInt64() != 503 || s.Status().Code != codes.Error {
		t.Errorf("status code %v, span status %v: want 503 and an error", v.String(), s.Status())
	}
	if _, ok := spanAttr(s, semconv.AdmissionAllowedKey); ok {
		t.Errorf("a non-admission handler has no decision")
	}
	data := f.tt.metrics(t)[semconv.WebhookDurationName].(metricdata.Histogram[float64])
	if len(data.DataPoints) != 1 || data.DataPoints[0].Attributes.Len() != 1 || data.DataPoints[0].Count != 1 {
		t.Errorf("want one data point labelled by path only, got %+v", data.DataPoints)
	}
}

func TestWebhookWrappingIsIdempotent(t *testing.T) {
	wh := &admission.Webhook{Handler: admission.HandlerFunc(decideByName)}
	var first webhook.Server
	f := newWebhookFixture(t, func(srv webhook.Server) {
		first = srv
		srv.Register("/a", wh)
	})
	// The builder calls GetWebhookServer for every webhook it registers, and a webhook may be
	// registered at two paths.
	second := f.mgr.GetWebhookServer()
	second.Register("/b", wh)
	second.(*webhookServer).Register("/c", first.(*webhookServer).wrap("/c", wh))

	d, ok := wh.Handler.(*admissionDecision)
	if !ok {
		t.Fatalf("handler %T, want the decision recorder", wh.Handler)
	}
	if _, twice := d.next.(*admissionDecision); twice {
		t.Errorf("the admission handler was wrapped twice")
	}
	for _, path := range []string{"/a", "/b", "/c"} {
		f.review(t, path, "bad", nil)
	}
	spans := f.webhookSpans()
	if len(spans) != 3 {
		t.Fatalf("%d SERVER spans for 3 requests, want one each", len(spans))
	}
	for _, s := range spans {
		if s.Parent().IsValid() {
			t.Errorf("span %s has a parent %s: a wrapper wrapped another", s.Name(), s.Parent().SpanID())
		}
	}
	if got := []string{spans[0].Name(), spans[1].Name(), spans[2].Name()}; got[0] != "POST /a" || got[1] != "POST /b" || got[2] != "POST /c" {
		t.Errorf("span names %v: each path is its route", got)
	}
	if _, ok := f.mgr.GetWebhookServer().(*webhookServer); !ok {
		t.Errorf("GetWebhookServer must return the wrapped server")
	}
}

func TestWebhookCallsAndLogsJoinTheWebhookSpan(t *testing.T) {
	tt := newTestTelemetry(t)
	c := testClient(fake.NewClientBuilder().WithObjects(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}).Build(), false, tt.opts...)
	var mu sync.Mutex
	var lines []string
	wh := &admission.Webhook{
		Handler: admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
			var ns corev1.Namespace
			if err := c.Get(ctx, client.ObjectKey{Name: req.Namespace}, &ns); err != nil {
				return admission.Errored(http.StatusInternalServerError, err)
			}
			logf.FromContext(ctx).Info("checked the namespace")
			return admission.Allowed("")
		}),
		LogConstructor: func(logr.Logger, *admission.Request) logr.Logger {
			return funcr.New(func(prefix, args string) {
				mu.Lock()
				defer mu.Unlock()
				lines = append(lines, args)
			}, funcr.Options{})
		},
	}
	mux := http.NewServeMux()
	mgr := &instrumentedManager{Manager: webhookManager{srv: webhook.NewServer(webhook.Options{WebhookMux: mux})}, opts: tt.opts}
	mgr.GetWebhookServer().Register("/validate", wh)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	f := &webhookFixture{tt: tt, mgr: mgr, url: ts.URL}
	f.review(t, "/validate", "good", nil)

	server := f.webhookSpans()
	if len(server) != 1 {
		t.Fatalf("%d SERVER spans", len(server))
	}
	var get sdktrace.ReadOnlySpan
	for _, s := range tt.spans.Ended() {
		if s.Name() == "get Namespace" {
			get = s
		}
	}
	if get == nil || get.Parent().SpanID() != server[0].SpanContext().SpanID() {
		t.Fatalf("the webhook's client call must be a child of the webhook span")
	}
	mu.Lock()
	defer mu.Unlock()
	want := fmt.Sprintf(`"trace_id"=%q`, server[0].SpanContext().TraceID().String())
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("the webhook's log line must carry the trace ID (%s): %q", want, lines)
	}
}
