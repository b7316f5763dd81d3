package otelctrl

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
	return wrapConfig(cfg, newConfig(opts))
}

func wrapConfig(cfg *rest.Config, c config) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.Wrap(func(rt http.RoundTripper) http.RoundTripper { return newTransport(rt, c) })
	return out
}

func newTransport(next http.RoundTripper, c config) http.RoundTripper {
	return &transport{next: next, cfg: c, tracer: c.tracerProvider.Tracer(ScopeName)}
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
	// Traced where the logical calls are: in a reconcile, under a caller's own span, or
	// everywhere when asked for.
	traced := (t.cfg.apiSpansOutsideReconcile || trace.SpanContextFromContext(ctx).IsValid() || stateFromContext(ctx) != nil) && !isWatch(req)
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
				otelsemconv.URLFull(redactedURL(req.URL)),
				otelsemconv.ServerAddress(req.URL.Hostname()),
				otelsemconv.ServerPort(serverPort(req.URL)),
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
			span.SetAttributes(otelsemconv.ErrorTypeKey.String(fmt.Sprintf("%T", err)))
		default:
			span.SetAttributes(otelsemconv.HTTPResponseStatusCode(resp.StatusCode))
			if resp.StatusCode >= 500 {
				span.SetStatus(codes.Error, resp.Status)
				span.SetAttributes(otelsemconv.ErrorTypeKey.String(strconv.Itoa(resp.StatusCode)))
			}
		}
		span.End()
	}
	return resp, err
}

// redactedURL is u without credentials, as the HTTP semantic conventions require for
// url.full: userinfo, and the values of query parameters that carry signatures or tokens.
func redactedURL(u *url.URL) string {
	if u.User == nil && u.RawQuery == "" {
		return u.String()
	}
	c := *u
	if c.User != nil {
		c.User = url.UserPassword("REDACTED", "REDACTED")
	}
	if c.RawQuery != "" {
		q := c.Query()
		changed := false
		for k := range q {
			switch strings.ToLower(k) {
			case "access_token", "token", "sig", "signature", "x-amz-signature", "x-goog-signature", "awsaccesskeyid":
				q[k] = []string{"REDACTED"}
				changed = true
			}
		}
		if changed {
			c.RawQuery = q.Encode()
		}
	}
	return c.String()
}

// serverPort is the port the request goes to, the scheme's default when the URL names none.
func serverPort(u *url.URL) int {
	if p := u.Port(); p != "" {
		n, _ := strconv.Atoi(p)
		return n
	}
	if u.Scheme == "http" {
		return 80
	}
	return 443
}

// isWatch reports whether req opens a watch: ?watch=true (or 1) on a list, or the legacy
// /watch/ path prefix.
func isWatch(req *http.Request) bool {
	if v := req.URL.Query().Get("watch"); v == "true" || v == "1" {
		return true
	}
	return strings.Contains(req.URL.Path, "/watch/")
}
