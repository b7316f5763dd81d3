package otelctrl

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	otelsemconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/client-go/rest"
)

// WrapConfig returns a copy of cfg whose transport traces the requests it sends to the API
// server and carries the W3C traceparent of the current span, so that an API server started with
// --tracing-config-file continues the reconcile's trace. Wrap the config before
// ctrl.NewManager: the manager builds its cache, client, event and leader-election clients from
// it. (NewManager does this for you.)
//
// A request gets a span only inside a reconcile (or with WithAPISpansOutsideReconcile), and
// never a watch: the informers' list-watch connections live for as long as the process, and
// a span is ended when the response headers arrive, not when the body is drained.
func WrapConfig(cfg *rest.Config, opts ...Option) *rest.Config {
	c := newConfig(opts)
	out := rest.CopyConfig(cfg)
	tracer := c.tracerProvider.Tracer(ScopeName)
	out.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &transport{next: rt, cfg: c, tracer: tracer}
	})
	return out
}

type transport struct {
	next   http.RoundTripper
	cfg    config
	tracer trace.Tracer
}

var methodSpanNames = map[string]string{
	http.MethodGet: "GET", http.MethodPost: "POST", http.MethodPut: "PUT",
	http.MethodPatch: "PATCH", http.MethodDelete: "DELETE",
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	traced := (stateFromContext(ctx) != nil || t.cfg.apiSpansOutsideReconcile) && !isWatch(req)
	var span trace.Span
	if traced {
		name, ok := methodSpanNames[req.Method]
		if !ok {
			name = "HTTP"
		}
		ctx, span = t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
		if span.IsRecording() {
			span.SetAttributes(
				otelsemconv.HTTPRequestMethodKey.String(req.Method),
				otelsemconv.URLFullKey.String(req.URL.String()),
				otelsemconv.ServerAddressKey.String(req.URL.Hostname()),
			)
		}
	}
	if trace.SpanContextFromContext(ctx).IsValid() {
		// RoundTrippers must not modify the caller's request.
		req = req.Clone(ctx)
		t.cfg.propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	}
	resp, err := t.next.RoundTrip(req)
	if span != nil {
		switch {
		case err != nil:
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		default:
			span.SetAttributes(otelsemconv.HTTPResponseStatusCodeKey.Int(resp.StatusCode))
			if resp.StatusCode >= 500 {
				span.SetStatus(codes.Error, resp.Status)
			}
		}
		span.End()
	}
	return resp, err
}

// isWatch reports whether req opens a watch: ?watch=true (or 1) on a list, or the legacy
// /watch/ path prefix.
func isWatch(req *http.Request) bool {
	if v := req.URL.Query().Get("watch"); v == "true" || v == "1" {
		return true
	}
	return strings.Contains(req.URL.Path, "/watch/")
}
