package otelctrl

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	otelsemconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/gowatchtower/watchtower/semconv"
)

// GetWebhookServer returns the manager's webhook server with every webhook registered through it
// traced: each request is a SERVER span that continues the trace of the API server that called
// (kube-apiserver started with --tracing-config-file sends a W3C traceparent to webhooks), and
// is timed in watchtower.webhook.duration. For a controller-runtime *admission.Webhook the span
// and the metric also carry the decision. ctrl.NewWebhookManagedBy(mgr) registers through this
// method, so builder-made validating, defaulting and conversion webhooks are covered when mgr is
// the manager NewManager returned.
//
// Handlers put on WebhookMux() directly bypass Register and are not traced.
func (m *instrumentedManager) GetWebhookServer() webhook.Server {
	srv := m.Manager.GetWebhookServer()
	if _, ok := srv.(*webhookServer); ok {
		return srv
	}
	cfg := newConfig(m.opts)
	return &webhookServer{
		Server:   srv,
		cfg:      cfg,
		tracer:   cfg.tracerProvider.Tracer(ScopeName),
		duration: webhookDurationFor(cfg.meterProvider),
	}
}

// webhookServer wraps Register; everything else (Start, the mux, the health checker) is the
// manager's own server, which the manager added as a runnable on its first GetWebhookServer.
type webhookServer struct {
	webhook.Server
	cfg      config
	tracer   trace.Tracer
	duration metric.Float64Histogram
}

func (s *webhookServer) Register(path string, hook http.Handler) {
	s.Server.Register(path, s.wrap(path, hook))
}

// wrap is idempotent: a handler already wrapped (registered again, at another path, or through
// a second GetWebhookServer) gets one span per request, not one per wrapper.
func (s *webhookServer) wrap(path string, hook http.Handler) http.Handler {
	if h, ok := hook.(*webhookHandler); ok {
		hook = h.next
	}
	if wh, ok := hook.(*admission.Webhook); ok && wh.Handler != nil {
		// Mutating the webhook is the only way in: its ServeHTTP decodes the review and calls
		// its own Handle, which calls Handler; there is no hook between decoding and the
		// decision. Register normally runs before the server starts: nothing serves it yet.
		if _, done := wh.Handler.(*admissionDecision); !done {
			wh.Handler = &admissionDecision{next: wh.Handler, logCorrelation: s.cfg.logCorrelation}
		}
	}
	return &webhookHandler{
		next:     hook,
		path:     path,
		postName: semconv.WebhookSpanName(path),
		cfg:      s.cfg,
		tracer:   s.tracer,
		duration: s.duration,
	}
}

var webhookDurations sync.Map // metric.MeterProvider -> metric.Float64Histogram

// webhookDurationFor returns the webhook duration histogram of mp, created once per provider
// like the other instruments (instrumentsFor).
func webhookDurationFor(mp metric.MeterProvider) metric.Float64Histogram {
	if h, ok := webhookDurations.Load(mp); ok {
		return h.(metric.Float64Histogram)
	}
	h, _ := mp.Meter(ScopeName).Float64Histogram(semconv.WebhookDurationName,
		metric.WithUnit(semconv.WebhookDurationUnit), metric.WithDescription(semconv.WebhookDurationDescription),
		metric.WithExplicitBucketBoundaries(secondsBuckets...))
	v, _ := webhookDurations.LoadOrStore(mp, h)
	return v.(metric.Float64Histogram)
}

type webhookHandler struct {
	next     http.Handler
	path     string
	postName string // the span name of the only method the API server uses
	cfg      config
	tracer   trace.Tracer
	duration metric.Float64Histogram

	recordOpts sync.Map // decisionKey -> []metric.RecordOption
}

type webhookCallKey struct{}

// webhookCall is the state of one webhook request and the context its handler runs in: one
// allocation holds the context, the response writer and the decision. The context carries the
// webhook span, so the client and the transport make the webhook's API calls its children and
// send its traceparent on.
type webhookCall struct {
	context.Context
	span    trace.Span
	w       statusWriter
	dk      decisionKey // the decision, once an admission handler made one
	logSink traceSink   // see withTraceLogger
}

// decisionKey is what of a decision goes into the metric: bounded by construction.
type decisionKey struct {
	decided, allowed bool
	code             int32
}

func (c *webhookCall) Value(key any) any {
	if key == (webhookCallKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func (h *webhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := h.cfg.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := h.tracer.Start(ctx, h.spanName(r.Method), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(h.requestAttrs(r)...)) // at start, where samplers can see them
	call := &webhookCall{Context: ctx, span: span, w: statusWriter{ResponseWriter: w}}

	defer func() {
		if p := recover(); p != nil {
			// net/http recovers a handler's panic (or aborts the connection for
			// http.ErrAbortHandler); the span must still end, marked.
			span.RecordError(fmt.Errorf("panic: %v", p), trace.WithStackTrace(true))
			span.SetStatus(codes.Error, fmt.Sprintf("panic: %v", p))
			h.finish(call, start)
			panic(p)
		}
	}()
	h.next.ServeHTTP(&call.w, r.WithContext(call))

	status := call.w.status
	if status == 0 {
		status = http.StatusOK // net/http's answer to a handler that wrote nothing
	}
	if span.IsRecording() {
		span.SetAttributes(otelsemconv.HTTPResponseStatusCode(status))
	}
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	h.finish(call, start)
}

func (h *webhookHandler) finish(call *webhookCall, start time.Time) {
	elapsed := time.Since(start)
	call.span.End()
	ctx := context.Background() // the span's context only when it can be an exemplar
	if call.span.SpanContext().IsSampled() {
		ctx = call.Context
	}
	h.duration.Record(ctx, elapsed.Seconds(), h.opts(call.dk)...)
}

func (h *webhookHandler) opts(k decisionKey) []metric.RecordOption {
	if v, ok := h.recordOpts.Load(k); ok {
		return v.([]metric.RecordOption)
	}
	attrs := []attribute.KeyValue{semconv.WebhookPath(h.path)}
	if k.decided {
		attrs = append(attrs, semconv.AdmissionAllowed(k.allowed), semconv.AdmissionCode(int(k.code)))
	}
	opts := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
	v, _ := h.recordOpts.LoadOrStore(k, opts)
	return v.([]metric.RecordOption)
}

// spanName follows the HTTP server conventions, "{method} {http.route}", with "HTTP" for a
// method outside the well-known set (the name must stay bounded whatever a client sends).
func (h *webhookHandler) spanName(method string) string {
	switch method {
	case http.MethodPost:
		return h.postName
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method + " " + h.path
	}
	return "HTTP " + h.path
}

func (h *webhookHandler) requestAttrs(r *http.Request) []attribute.KeyValue {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	a := make([]attribute.KeyValue, 0, 8)
	a = append(a,
		otelsemconv.HTTPRequestMethodKey.String(r.Method),
		otelsemconv.URLPath(r.URL.Path),
		otelsemconv.URLScheme(scheme),
		otelsemconv.HTTPRoute(h.path),
		semconv.WebhookPath(h.path),
	)
	if host, port, err := net.SplitHostPort(r.Host); err == nil {
		a = append(a, otelsemconv.ServerAddress(host))
		if p, err := strconv.Atoi(port); err == nil {
			a = append(a, otelsemconv.ServerPort(p))
		}
	} else if r.Host != "" {
		a = append(a, otelsemconv.ServerAddress(r.Host))
	}
	if ua := r.UserAgent(); ua != "" {
		a = append(a, otelsemconv.UserAgentOriginal(ua))
	}
	return a
}

// admissionDecision records an admission webhook's request and decision on the request's
// webhook span. It sits between admission.Webhook.Handle and the webhook's own Handler: after
// the review is decoded, before the response is completed and written.
type admissionDecision struct {
	next           admission.Handler
	logCorrelation bool
}

func (d *admissionDecision) Handle(ctx context.Context, req admission.Request) admission.Response {
	call, ok := ctx.Value(webhookCallKey{}).(*webhookCall)
	if !ok {
		return d.next.Handle(ctx, req) // called outside the server, e.g. a test calling Handle
	}
	if d.logCorrelation {
		ctx = call.withTraceLogger(ctx)
	}
	if call.span.IsRecording() {
		call.span.SetAttributes(
			semconv.AdmissionOperation(string(req.Operation)),
			semconv.AdmissionGroup(req.Kind.Group),
			semconv.AdmissionKind(req.Kind.Kind),
			semconv.AdmissionSubresource(req.SubResource),
			semconv.AdmissionDryRun(req.DryRun != nil && *req.DryRun),
			semconv.ObjectNamespace(req.Namespace),
			semconv.ObjectName(req.Name),
		)
	}
	defer func() {
		if p := recover(); p != nil {
			// admission.Webhook recovers it (unless RecoverPanic is false) into a 500
			// denial; record that decision and let it.
			call.span.RecordError(fmt.Errorf("panic: %v", p), trace.WithStackTrace(true))
			call.span.SetStatus(codes.Error, fmt.Sprintf("panic: %v", p))
			call.dk = decisionKey{decided: true, code: http.StatusInternalServerError}
			if call.span.IsRecording() {
				call.span.SetAttributes(semconv.AdmissionAllowed(false), semconv.AdmissionCode(http.StatusInternalServerError))
			}
			panic(p)
		}
	}()
	resp := d.next.Handle(ctx, req)
	call.decide(resp)
	return resp
}

// withTraceLogger adds trace_id and span_id to the lines of the webhook's logger, as a
// reconcile's logger gets them (contextWithTraceLogger). The logger (with the object, the user
// and the request ID) is in ctx only here: admission.Webhook.Handle puts it there just before
// calling its Handler.
func (c *webhookCall) withTraceLogger(ctx context.Context) context.Context {
	sc := c.span.SpanContext()
	if !sc.IsSampled() {
		return ctx
	}
	logger, err := logr.FromContext(ctx)
	if err != nil || logger.GetSink() == nil {
		return ctx
	}
	c.logSink = traceSink{base: logger.GetSink(), sc: sc}
	return logr.NewContext(ctx, logger.WithSink(&c.logSink))
}

func (c *webhookCall) decide(resp admission.Response) {
	// admission.Response.Complete, which runs after us, turns a missing code into 200.
	code := int32(http.StatusOK)
	if resp.Result != nil && resp.Result.Code != 0 {
		code = resp.Result.Code
	}
	c.dk = decisionKey{decided: true, allowed: resp.Allowed, code: code}
	if code >= 500 {
		msg := ""
		if resp.Result != nil {
			msg = resp.Result.Message
		}
		c.span.SetStatus(codes.Error, msg)
	}
	if !c.span.IsRecording() {
		return
	}
	a := make([]attribute.KeyValue, 0, 5)
	a = append(a, semconv.AdmissionAllowed(resp.Allowed), semconv.AdmissionCode(int(code)),
		semconv.AdmissionPatched(len(resp.Patches) > 0 || len(resp.Patch) > 0))
	if !resp.Allowed && resp.Result != nil {
		a = append(a, semconv.AdmissionReason(string(resp.Result.Reason)), semconv.AdmissionMessage(resp.Result.Message))
	}
	c.span.SetAttributes(a...)
}

// statusWriter remembers the status code the handler sent.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx are informational, not the response's status
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's Flush, Hijack and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
