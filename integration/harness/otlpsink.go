package harness

import (
	"context"
	"encoding/hex"
	"net"
	"sync"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// OTLPSink is an OTLP/gRPC trace receiver that records what it is sent: the stand-in for a
// collector where a test needs to see exactly what a real component (kube-apiserver, an
// operator) exported, without a pipeline in between.
type OTLPSink struct {
	// Endpoint is "127.0.0.1:port".
	Endpoint string

	coltracepb.UnimplementedTraceServiceServer
	mu      sync.Mutex
	spans   []SinkSpan
	changed chan struct{}
}

// SinkSpan is a received span with its resource's service.name.
type SinkSpan struct {
	Service string
	Span    *tracepb.Span
}

// TraceID returns the span's trace ID in hex.
func (s SinkSpan) TraceID() string { return hex.EncodeToString(s.Span.TraceId) }

// SpanID returns the span's ID in hex.
func (s SinkSpan) SpanID() string { return hex.EncodeToString(s.Span.SpanId) }

// ParentSpanID returns the parent span's ID in hex, "" for a root span.
func (s SinkSpan) ParentSpanID() string { return hex.EncodeToString(s.Span.ParentSpanId) }

// NewOTLPSink starts the receiver on a loopback port; it stops when the test ends.
func NewOTLPSink(t TB) *OTLPSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &OTLPSink{Endpoint: l.Addr().String(), changed: make(chan struct{})}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, s)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return s
}

// Export implements the OTLP trace service.
func (s *OTLPSink) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				s.spans = append(s.spans, SinkSpan{Service: service, Span: sp})
			}
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// Spans returns a copy of what was received so far.
func (s *OTLPSink) Spans() []SinkSpan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SinkSpan(nil), s.spans...)
}

// WaitFor blocks until accept returns true for the spans received so far, or ctx ends.
func (s *OTLPSink) WaitFor(ctx context.Context, accept func([]SinkSpan) bool) ([]SinkSpan, error) {
	for {
		s.mu.Lock()
		spans, changed := append([]SinkSpan(nil), s.spans...), s.changed
		s.mu.Unlock()
		if accept(spans) {
			return spans, nil
		}
		select {
		case <-ctx.Done():
			return spans, ctx.Err()
		case <-changed:
		}
	}
}
