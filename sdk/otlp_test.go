package sdk

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/gowatchtower/watchtower/semconv"
)

// receiver is a minimal OTLP collector: it keeps what it receives, over gRPC or HTTP.
type receiver struct {
	coltracepb.UnimplementedTraceServiceServer

	mu      sync.Mutex
	spans   int
	names   map[string]int // span name -> count
	service string         // service.name of the last resource
	tenant  string         // the x-tenant header or metadata
	metrics []*colmetricpb.ExportMetricsServiceRequest
}

func newReceiver() *receiver { return &receiver{names: map[string]int{}} }

func (r *receiver) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.addTraces(req, firstOf(md.Get("x-tenant")))
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *receiver) addTraces(req *coltracepb.ExportTraceServiceRequest, tenant string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tenant = tenant
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				r.service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans++
				r.names[s.GetName()]++
			}
		}
	}
}

func (r *receiver) addMetrics(req *colmetricpb.ExportMetricsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics = append(r.metrics, req)
}

// exportedSpans is the last value of watchtower.telemetry.exported{signal=traces} received.
func (r *receiver) exportedSpans() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var v int64 = -1
	for _, req := range r.metrics {
		for _, rm := range req.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					if m.GetName() != semconv.TelemetryExportedName {
						continue
					}
					for _, dp := range m.GetSum().GetDataPoints() {
						if hasAttr(dp.GetAttributes(), string(semconv.TelemetrySignalKey), semconv.TelemetrySignalTracesValue) {
							v = dp.GetAsInt()
						}
					}
				}
			}
		}
	}
	return v
}

func hasAttr(kvs []*commonpb.KeyValue, k, v string) bool {
	for _, kv := range kvs {
		if kv.GetKey() == k && kv.GetValue().GetStringValue() == v {
			return true
		}
	}
	return false
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

type metricsService struct {
	colmetricpb.UnimplementedMetricsServiceServer
	r *receiver
}

func (m metricsService) Export(_ context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	m.r.addMetrics(req)
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

func (r *receiver) check(t *testing.T, service, tenant string, spans int) {
	t.Helper()
	r.mu.Lock()
	got, gotService, gotTenant, reconciles := r.spans, r.service, r.tenant, r.names["reconcile memcached"]
	r.mu.Unlock()
	if got != spans || reconciles != spans {
		t.Errorf("collector received %d spans (%d reconciles); want %d", got, reconciles, spans)
	}
	if gotService != service {
		t.Errorf("service.name = %q; want %q", gotService, service)
	}
	if gotTenant != tenant {
		t.Errorf("x-tenant = %q; want %q", gotTenant, tenant)
	}
	// The metrics flushed at Shutdown carry the exact count of the spans flushed before them.
	if v := r.exportedSpans(); v != int64(spans) {
		t.Errorf("collector received exported{traces} = %d; want %d", v, spans)
	}
}

func TestOTLPgRPCToLoopbackCollector(t *testing.T) {
	clearEnv(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := newReceiver()
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, r)
	colmetricpb.RegisterMetricsServiceServer(srv, metricsService{r: r})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team-a")
	t.Setenv("OTEL_SERVICE_NAME", "memcached-operator")

	tel := startTest(t)
	endSpans(tel, semconv.ReconcileSpanName("memcached"), 5)
	if err := tel.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	r.check(t, "memcached-operator", "team-a", 5)
}

func TestOTLPHTTPToLoopbackCollectorFromEnv(t *testing.T) {
	clearEnv(t)
	r := newReceiver()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /otlp/v1/traces", func(w http.ResponseWriter, req *http.Request) {
		var msg coltracepb.ExportTraceServiceRequest
		if !decode(w, req, &msg) {
			return
		}
		r.addTraces(&msg, req.Header.Get("x-tenant"))
		respond(w, &coltracepb.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST /otlp/v1/metrics", func(w http.ResponseWriter, req *http.Request) {
		var msg colmetricpb.ExportMetricsServiceRequest
		if !decode(w, req, &msg) {
			return
		}
		r.addMetrics(&msg)
		respond(w, &colmetricpb.ExportMetricsServiceResponse{})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// Configured the way a Deployment would, with a base path as behind an ingress.
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL+"/otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team%20b")
	t.Setenv("OTEL_SERVICE_NAME", "from-env")

	tel := startTest(t)
	endSpans(tel, semconv.ReconcileSpanName("memcached"), 3)
	if err := tel.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	r.check(t, "from-env", "team b", 3)
}

func decode(w http.ResponseWriter, req *http.Request, msg proto.Message) bool {
	body, err := io.ReadAll(req.Body)
	if err == nil {
		err = proto.Unmarshal(body, msg)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func respond(w http.ResponseWriter, msg proto.Message) {
	b, _ := proto.Marshal(msg)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

// TestShutdownWithUnreachableCollector: nothing listens on the endpoint, the OTLP exporter
// retries, and Shutdown still returns once its ctx is done, with an error.
func TestShutdownWithUnreachableCollector(t *testing.T) {
	clearEnv(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // a loopback port with nobody behind it

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	tel := startTest(t)
	endSpans(tel, "reconcile", 3)

	// A short deadline keeps the test fast; the assertion is only that Shutdown returns.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tel.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Shutdown reported success with no collector")
		}
	case <-ctxT(t).Done():
		t.Fatal("Shutdown hung with the collector unreachable")
	}
}
