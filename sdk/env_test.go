package sdk

// Tests of the OTEL_* environment, one per row of the table in docs/sdk.md. Each observes
// the effect where it happens: in what a real OTLP receiver gets, on stdout, in the installed
// propagator, in what an exporter is handed and with which deadline.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/gowatchtower/watchtower/semconv"
)

// otlpCall is one export an otlpReceiver received.
type otlpCall struct {
	signal    string // traces or metrics
	transport string // grpc or http
	path      string // HTTP only
	encoding  string // Content-Encoding, or the gRPC message compression
	header    map[string]string
	timeout   time.Duration // gRPC: how far away the deadline the client sent was; 0: none
	clientCN  string        // the client certificate's common name, with mutual TLS
	resource  map[string]string
	spans     int
	metrics   map[string]string // metric name -> kind ("sum/delta", "histogram", ...)
}

// otlpReceiver is an OTLP collector on loopback, over gRPC and HTTP at once, plain or TLS.
type otlpReceiver struct {
	grpcURL, httpURL string // with the scheme the TLS mode implies

	mu    sync.Mutex
	calls []otlpCall
}

type tlsMode int

const (
	plaintext tlsMode = iota
	serverTLS
	mutualTLS
)

func startOTLPReceiver(t *testing.T, mode tlsMode, ca *testCA) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	scheme := "http://"
	var tlsCfg *tls.Config
	if mode != plaintext {
		scheme = "https://"
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "receiver", true).tls}}
		if mode == mutualTLS {
			tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
			tlsCfg.ClientCAs = ca.pool
		}
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.ServerOption{grpc.StatsHandler(compressionTap{})}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	srv := grpc.NewServer(opts...)
	coltracepb.RegisterTraceServiceServer(srv, grpcTraces{r: r})
	colmetricpb.RegisterMetricsServiceServer(srv, grpcMetrics{r: r})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	r.grpcURL = scheme + lis.Addr().String()

	hs := httptest.NewUnstartedServer(http.HandlerFunc(r.serveHTTP))
	if tlsCfg != nil {
		hs.TLS = tlsCfg
		hs.StartTLS()
	} else {
		hs.Start()
	}
	t.Cleanup(hs.Close)
	r.httpURL = scheme + hs.Listener.Addr().String()
	return r
}

func (r *otlpReceiver) add(c otlpCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

// received returns the calls of one signal.
func (r *otlpReceiver) received(signal string) []otlpCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []otlpCall
	for _, c := range r.calls {
		if c.signal == signal {
			out = append(out, c)
		}
	}
	return out
}

// last returns the last call of one signal, failing the test if there was none.
func (r *otlpReceiver) last(t *testing.T, signal string) otlpCall {
	t.Helper()
	calls := r.received(signal)
	if len(calls) == 0 {
		t.Fatalf("the receiver got no %s", signal)
	}
	return calls[len(calls)-1]
}

func (r *otlpReceiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	c := otlpCall{transport: "http", path: req.URL.Path, encoding: req.Header.Get("Content-Encoding"), header: map[string]string{}}
	for k, v := range req.Header {
		c.header[strings.ToLower(k)] = v[0]
	}
	if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
		c.clientCN = req.TLS.PeerCertificates[0].Subject.CommonName
	}
	var body io.Reader = req.Body
	if c.encoding == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The paths of these tests say which signal they carry.
	var resp proto.Message
	if strings.Contains(c.path, "metrics") {
		var msg colmetricpb.ExportMetricsServiceRequest
		err, resp = proto.Unmarshal(b, &msg), &colmetricpb.ExportMetricsServiceResponse{}
		c.addMetrics(&msg)
	} else {
		var msg coltracepb.ExportTraceServiceRequest
		err, resp = proto.Unmarshal(b, &msg), &coltracepb.ExportTraceServiceResponse{}
		c.addTraces(&msg)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(c)
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

type grpcTraces struct {
	coltracepb.UnimplementedTraceServiceServer
	r *otlpReceiver
}

func (g grpcTraces) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c := grpcCall(ctx)
	c.addTraces(req)
	g.r.add(c)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

type grpcMetrics struct {
	colmetricpb.UnimplementedMetricsServiceServer
	r *otlpReceiver
}

func (g grpcMetrics) Export(ctx context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	c := grpcCall(ctx)
	c.addMetrics(req)
	g.r.add(c)
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

func grpcCall(ctx context.Context) otlpCall {
	c := otlpCall{transport: "grpc", header: map[string]string{}}
	md, _ := metadata.FromIncomingContext(ctx)
	for k, v := range md {
		c.header[k] = v[0]
	}
	if d, ok := ctx.Deadline(); ok {
		c.timeout = time.Until(d)
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			c.clientCN = info.State.PeerCertificates[0].Subject.CommonName
		}
	}
	if rc, ok := ctx.Value(compressionKey{}).(*string); ok {
		c.encoding = *rc
	}
	return c
}

// compressionTap records the compression of each incoming gRPC call, which gRPC keeps out
// of the metadata, where the handler can read it.
type compressionTap struct{}

type compressionKey struct{}

func (compressionTap) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, compressionKey{}, new(string))
}

func (compressionTap) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok {
		if rc, ok := ctx.Value(compressionKey{}).(*string); ok {
			*rc = h.Compression
		}
	}
}

func (compressionTap) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (compressionTap) HandleConn(context.Context, stats.ConnStats)                       {}

func (c *otlpCall) addResource(attrs []*commonpb.KeyValue) {
	if c.resource == nil {
		c.resource = map[string]string{}
	}
	for _, kv := range attrs {
		c.resource[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
}

func (c *otlpCall) addTraces(req *coltracepb.ExportTraceServiceRequest) {
	c.signal = "traces"
	for _, rs := range req.GetResourceSpans() {
		c.addResource(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			c.spans += len(ss.GetSpans())
		}
	}
}

func (c *otlpCall) addMetrics(req *colmetricpb.ExportMetricsServiceRequest) {
	c.signal = "metrics"
	c.metrics = map[string]string{}
	for _, rm := range req.GetResourceMetrics() {
		c.addResource(rm.GetResource().GetAttributes())
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				switch d := m.GetData().(type) {
				case *metricpb.Metric_Sum:
					kind := "sum/cumulative"
					if d.Sum.GetAggregationTemporality() == metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA {
						kind = "sum/delta"
					}
					c.metrics[m.GetName()] = kind
				case *metricpb.Metric_Histogram:
					c.metrics[m.GetName()] = "histogram"
				case *metricpb.Metric_ExponentialHistogram:
					c.metrics[m.GetName()] = "exponential_histogram"
				default:
					c.metrics[m.GetName()] = "other"
				}
			}
		}
	}
}

// Names of what exportOnce records.
const (
	envTestCounter   = "env.test.requests"
	envTestHistogram = "env.test.duration"
)

// exportOnce starts the SDK with the current environment (its OTLP exporters, no exporter
// injected), records a span, a counter and a histogram, and shuts it down.
func exportOnce(t *testing.T) error {
	t.Helper()
	tel, err := Start(context.Background(), WithoutGlobal(), WithLogger(logr.Discard()),
		WithPrometheusRegisterer(prometheus.NewRegistry()))
	if err != nil {
		return err
	}
	endSpans(tel, "reconcile", 1)
	m := tel.MeterProvider().Meter("env-test")
	c, _ := m.Int64Counter(envTestCounter)
	c.Add(context.Background(), 1)
	h, _ := m.Float64Histogram(envTestHistogram)
	h.Record(context.Background(), 1.5)
	_ = tel.Shutdown(ctxT(t)) // rows where one signal cannot get through fail here by design
	return nil
}

func between(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got <= lo || got > hi {
		t.Errorf("%s = %s; want it in (%s, %s]", what, got, lo, hi)
	}
}

// TestEnvOTLPExporter covers the OTEL_EXPORTER_OTLP_* rows: each variable, general and per
// signal, against a real receiver. The OTLP exporters read these variables themselves; what
// is checked here is that they reach the exporters Start builds and do what the table says.
func TestEnvOTLPExporter(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	client := ca.issue(t, "operator", false)
	files := map[string]string{
		"{ca}":  writeFile(t, dir, "ca.pem", ca.certPEM),
		"{crt}": writeFile(t, dir, "client.pem", client.certPEM),
		"{key}": writeFile(t, dir, "client-key.pem", client.keyPEM),
	}
	const (
		traces  = "traces"
		metrics = "metrics"
	)
	// A signal that cannot get through gives up after a second instead of the default ten.
	const giveUp = "1000"

	for _, tc := range []struct {
		name  string
		tls   tlsMode
		env   map[string]string // {http} and {grpc} are the receiver's URLs, {ca}, {crt}, {key} files
		check func(t *testing.T, r *otlpReceiver)
	}{
		{"defaults: http/protobuf, /v1 paths, no compression, cumulative sums, explicit histograms", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}"},
			func(t *testing.T, r *otlpReceiver) {
				tr, mt := r.last(t, traces), r.last(t, metrics)
				if tr.transport != "http" || tr.path != "/v1/traces" || mt.path != "/v1/metrics" || tr.encoding != "" || mt.encoding != "" {
					t.Errorf("traces %s %s %q, metrics %s %q", tr.transport, tr.path, tr.encoding, mt.path, mt.encoding)
				}
				if mt.metrics[envTestCounter] != "sum/cumulative" || mt.metrics[envTestHistogram] != "histogram" {
					t.Errorf("metrics = %v", mt.metrics)
				}
			}},
		{"ENDPOINT: a base URL, the signal paths appended", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}/otlp"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.path != "/otlp/v1/traces" || mt.path != "/otlp/v1/metrics" {
					t.Errorf("paths %s, %s", tr.path, mt.path)
				}
			}},
		{"TRACES_ENDPOINT: used as is", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{http}/in/traces"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.path != "/in/traces" || mt.path != "/v1/metrics" {
					t.Errorf("paths %s, %s", tr.path, mt.path)
				}
			}},
		{"METRICS_ENDPOINT: used as is", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "{http}/in/metrics"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.path != "/v1/traces" || mt.path != "/in/metrics" {
					t.Errorf("paths %s, %s", tr.path, mt.path)
				}
			}},
		{"PROTOCOL=grpc", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.transport != "grpc" || mt.transport != "grpc" {
					t.Errorf("transports %s, %s", tr.transport, mt.transport)
				}
			}},
		{"TRACES_PROTOCOL=grpc", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.transport != "grpc" || mt.transport != "http" {
					t.Errorf("transports %s, %s", tr.transport, mt.transport)
				}
			}},
		{"METRICS_PROTOCOL=grpc", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
				"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.transport != "http" || mt.transport != "grpc" {
					t.Errorf("transports %s, %s", tr.transport, mt.transport)
				}
			}},
		{"HEADERS", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=team%20a"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.header["x-tenant"] != "team a" || mt.header["x-tenant"] != "team a" {
					t.Errorf("x-tenant %q, %q", tr.header["x-tenant"], mt.header["x-tenant"])
				}
			}},
		{"TRACES_HEADERS, over gRPC", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=all", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=traces"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.header["x-tenant"] != "traces" || mt.header["x-tenant"] != "all" {
					t.Errorf("x-tenant %q, %q", tr.header["x-tenant"], mt.header["x-tenant"])
				}
			}},
		{"METRICS_HEADERS", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
				"OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=all", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-tenant=metrics"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.header["x-tenant"] != "all" || mt.header["x-tenant"] != "metrics" {
					t.Errorf("x-tenant %q, %q", tr.header["x-tenant"], mt.header["x-tenant"])
				}
			}},
		// The deadline is seen where gRPC sends it; the span processor's own export timeout is
		// raised so that only the exporter's applies.
		{"TIMEOUT", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_TIMEOUT": "7000", envBSPExportTimeout: "60000"},
			func(t *testing.T, r *otlpReceiver) {
				between(t, "traces deadline", r.last(t, traces).timeout, 5*time.Second, 7*time.Second)
				between(t, "metrics deadline", r.last(t, metrics).timeout, 5*time.Second, 7*time.Second)
			}},
		{"TRACES_TIMEOUT", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_TIMEOUT": "20000", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "7000", envBSPExportTimeout: "60000"},
			func(t *testing.T, r *otlpReceiver) {
				between(t, "traces deadline", r.last(t, traces).timeout, 5*time.Second, 7*time.Second)
				between(t, "metrics deadline", r.last(t, metrics).timeout, 15*time.Second, 20*time.Second)
			}},
		{"METRICS_TIMEOUT", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_TIMEOUT": "20000", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "7000", envBSPExportTimeout: "60000"},
			func(t *testing.T, r *otlpReceiver) {
				between(t, "traces deadline", r.last(t, traces).timeout, 15*time.Second, 20*time.Second)
				between(t, "metrics deadline", r.last(t, metrics).timeout, 5*time.Second, 7*time.Second)
			}},
		{"COMPRESSION=gzip", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.encoding != "gzip" || mt.encoding != "gzip" {
					t.Errorf("encodings %q, %q", tr.encoding, mt.encoding)
				}
			}},
		{"TRACES_COMPRESSION=gzip, over gRPC", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.encoding != "gzip" || mt.encoding != "" {
					t.Errorf("encodings %q, %q", tr.encoding, mt.encoding)
				}
			}},
		{"METRICS_COMPRESSION=gzip over COMPRESSION=none", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
				"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.encoding != "" || mt.encoding != "gzip" {
					t.Errorf("encodings %q, %q", tr.encoding, mt.encoding)
				}
			}},
		{"INSECURE=true, agreeing with http://", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true", "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "TRUE"},
			func(t *testing.T, r *otlpReceiver) {
				r.last(t, traces)
				r.last(t, metrics)
			}},
		{"CERTIFICATE", serverTLS,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_CERTIFICATE": "{ca}"},
			func(t *testing.T, r *otlpReceiver) {
				r.last(t, traces)
				r.last(t, metrics)
			}},
		{"TRACES_CERTIFICATE, over gRPC", serverTLS,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "{ca}", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": giveUp},
			func(t *testing.T, r *otlpReceiver) {
				r.last(t, traces)
				if n := len(r.received(metrics)); n != 0 {
					t.Errorf("%d metric exports got through without the CA", n)
				}
			}},
		{"METRICS_CERTIFICATE", serverTLS,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
				"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE": "{ca}", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": giveUp},
			func(t *testing.T, r *otlpReceiver) {
				r.last(t, metrics)
				if n := len(r.received(traces)); n != 0 {
					t.Errorf("%d span exports got through without the CA", n)
				}
			}},
		{"CLIENT_CERTIFICATE and CLIENT_KEY", mutualTLS,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_CERTIFICATE": "{ca}",
				"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "{crt}", "OTEL_EXPORTER_OTLP_CLIENT_KEY": "{key}"},
			func(t *testing.T, r *otlpReceiver) {
				if tr, mt := r.last(t, traces), r.last(t, metrics); tr.clientCN != "operator" || mt.clientCN != "operator" {
					t.Errorf("client certificates %q, %q", tr.clientCN, mt.clientCN)
				}
			}},
		{"TRACES_CLIENT_CERTIFICATE and TRACES_CLIENT_KEY, over gRPC", mutualTLS,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_CERTIFICATE": "{ca}", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": giveUp,
				"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": "{crt}", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": "{key}"},
			func(t *testing.T, r *otlpReceiver) {
				if tr := r.last(t, traces); tr.clientCN != "operator" {
					t.Errorf("client certificate %q", tr.clientCN)
				}
				if n := len(r.received(metrics)); n != 0 {
					t.Errorf("%d metric exports got through without a client certificate", n)
				}
			}},
		{"METRICS_CLIENT_CERTIFICATE and METRICS_CLIENT_KEY", mutualTLS,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_CERTIFICATE": "{ca}",
				"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT":             giveUp,
				"OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE": "{crt}", "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY": "{key}"},
			func(t *testing.T, r *otlpReceiver) {
				if mt := r.last(t, metrics); mt.clientCN != "operator" {
					t.Errorf("client certificate %q", mt.clientCN)
				}
				if n := len(r.received(traces)); n != 0 {
					t.Errorf("%d span exports got through without a client certificate", n)
				}
			}},
		{"METRICS_TEMPORALITY_PREFERENCE=delta", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"},
			func(t *testing.T, r *otlpReceiver) {
				if got := r.last(t, metrics).metrics[envTestCounter]; got != "sum/delta" {
					t.Errorf("%s is %s; want sum/delta", envTestCounter, got)
				}
			}},
		{"METRICS_DEFAULT_HISTOGRAM_AGGREGATION=base2_exponential_bucket_histogram", plaintext,
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
				"OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram"},
			func(t *testing.T, r *otlpReceiver) {
				if got := r.last(t, metrics).metrics[envTestHistogram]; got != "exponential_histogram" {
					t.Errorf("%s is %s; want exponential_histogram", envTestHistogram, got)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			r := startOTLPReceiver(t, tc.tls, ca)
			for k, v := range tc.env {
				v = strings.NewReplacer("{http}", r.httpURL, "{grpc}", r.grpcURL).Replace(v)
				if f, ok := files[v]; ok {
					v = f
				}
				t.Setenv(k, v)
			}
			if err := exportOnce(t); err != nil {
				t.Fatalf("Start: %v", err)
			}
			tc.check(t, r)
		})
	}
}

// TestEnvResource: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as a receiver sees them, on
// both signals.
func TestEnvResource(t *testing.T) {
	clearEnv(t)
	r := startOTLPReceiver(t, plaintext, nil)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.httpURL)
	t.Setenv(envResourceAttributes, "service.name=from-attributes,service.version=v1.2.3,deployment.environment.name=prod%20eu")
	t.Setenv(envServiceName, "memcached-operator")
	if err := exportOnce(t); err != nil {
		t.Fatal(err)
	}
	for _, signal := range []string{"traces", "metrics"} {
		res := r.last(t, signal).resource
		for k, want := range map[string]string{
			"service.name": "memcached-operator", "service.version": "v1.2.3", "deployment.environment.name": "prod eu",
		} {
			if res[k] != want {
				t.Errorf("%s resource %s = %q; want %q", signal, k, res[k], want)
			}
		}
	}
}

// captureStdout redirects os.Stdout until the returned function is called, which returns what
// was written.
func captureStdout(t *testing.T) func() string {
	t.Helper()
	rd, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(&buf, rd)
		close(done)
	}()
	restored := false
	restore := func() string {
		if !restored {
			restored = true
			os.Stdout = old
			_ = w.Close()
			<-done
		}
		return buf.String()
	}
	t.Cleanup(func() { restore() })
	return restore
}

// TestEnvExporterSelection covers OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER.
func TestEnvExporterSelection(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		traces, metrics         string
		wantTraces, wantMetrics bool   // what reaches the OTLP receiver
		stdoutHas               string // "": stdout must stay empty
	}{
		{"otlp", "otlp", "otlp", true, true, ""},
		{"traces console", "console", "", false, true, `"Name":"reconcile"`},
		{"traces none", "none", "", false, true, ""},
		{"metrics console", "", "console", true, false, envTestCounter},
		{"metrics none", "", "none", true, false, ""},
		{"metrics prometheus", "", "prometheus", true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			r := startOTLPReceiver(t, plaintext, nil)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.httpURL)
			t.Setenv(envTracesExporter, tc.traces)
			t.Setenv(envMetricsExporter, tc.metrics)
			stdout := captureStdout(t)

			reg := prometheus.NewRegistry()
			tel, err := Start(context.Background(), WithoutGlobal(), WithLogger(logr.Discard()), WithPrometheusRegisterer(reg))
			if err != nil {
				t.Fatal(err)
			}
			_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "reconcile")
			sc := span.SpanContext()
			span.End()
			c, _ := tel.MeterProvider().Meter("env-test").Int64Counter(envTestCounter)
			c.Add(context.Background(), 1)
			served := strings.Contains(scrape(t, reg), "env_test_requests_total")
			_ = tel.Shutdown(ctxT(t))
			out := stdout()

			// Spans keep their IDs whatever the exporter: logs and the traceparent need them.
			if !sc.IsValid() || !sc.IsSampled() {
				t.Errorf("span context %v; want a valid, sampled one", sc)
			}
			if got := len(r.received("traces")) > 0; got != tc.wantTraces {
				t.Errorf("receiver got traces: %t; want %t", got, tc.wantTraces)
			}
			if got := len(r.received("metrics")) > 0; got != tc.wantMetrics {
				t.Errorf("receiver got metrics: %t; want %t", got, tc.wantMetrics)
			}
			if (tc.stdoutHas == "") != (out == "") || !strings.Contains(out, tc.stdoutHas) {
				t.Errorf("stdout %q; want it to contain %q, and to be empty without a console exporter", out, tc.stdoutHas)
			}
			// The manager's /metrics is not one of OTEL_METRICS_EXPORTER's exporters.
			if !served {
				t.Error("/metrics does not serve the counter")
			}
		})
	}
}

// TestEnvPropagators covers OTEL_PROPAGATORS: what the installed global propagator injects.
func TestEnvPropagators(t *testing.T) {
	for _, tc := range []struct {
		value       string
		wantHeaders []string
		warn        string // the unsupported names, "" when no warning is expected
	}{
		{"", []string{"baggage", "traceparent"}, ""},
		{"tracecontext", []string{"traceparent"}, ""},
		{"baggage", []string{"baggage"}, ""},
		{"baggage, tracecontext,baggage", []string{"baggage", "traceparent"}, ""},
		{"none", nil, ""},
		{"tracecontext,b3", []string{"traceparent"}, "b3"},
		{"xray,jaeger", nil, "xray,jaeger"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			clearEnv(t)
			restoreGlobals(t)
			otel.SetTextMapPropagator(propagation.TraceContext{}) // what a previous setup left
			t.Setenv(envPropagators, tc.value)
			sink := &captureSink{}
			tel, err := Start(context.Background(), WithLogger(logr.New(sink)), WithPrometheusRegisterer(prometheus.NewRegistry()),
				WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{}))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tel.Shutdown(ctxT(t)) }()

			ctx, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "reconcile")
			defer span.End()
			member, _ := baggage.NewMember("tenant", "a")
			bag, _ := baggage.New(member)
			carrier := propagation.MapCarrier{}
			otel.GetTextMapPropagator().Inject(baggage.ContextWithBaggage(ctx, bag), carrier)
			got := carrier.Keys()
			slices.Sort(got)
			if strings.Join(got, ",") != strings.Join(tc.wantHeaders, ",") {
				t.Errorf("injected %v; want %v", got, tc.wantHeaders)
			}

			lines := sink.take()
			if tc.warn == "" {
				if len(lines) != 0 {
					t.Errorf("logged %v; want nothing", lines)
				}
				return
			}
			if len(lines) != 1 || lines[0].kvs["variable"] != envPropagators || lines[0].kvs["value"] != tc.value ||
				lines[0].kvs["unsupported"] != tc.warn {
				t.Errorf("logged %v; want one warning naming %s=%q and %s", lines, envPropagators, tc.value, tc.warn)
			}
		})
	}

	t.Run("WithoutGlobal: not read", func(t *testing.T) {
		clearEnv(t)
		restoreGlobals(t)
		before := propagation.TraceContext{}
		otel.SetTextMapPropagator(before)
		t.Setenv(envPropagators, "b3")
		sink := &captureSink{}
		startTest(t, WithLogger(logr.New(sink)), WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{}))
		if otel.GetTextMapPropagator() != before {
			t.Error("the global propagator was replaced")
		}
		if lines := sink.take(); len(lines) != 0 {
			t.Errorf("logged %v", lines)
		}
	})
}

// TestEnvSampler covers OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG: which root spans,
// and which children of a sampled remote parent, reach the exporter.
func TestEnvSampler(t *testing.T) {
	remote := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
	for _, tc := range []struct {
		sampler, arg            string
		wantRoots, wantChildren int // of 10 each
	}{
		{"", "", 10, 10},
		{"always_on", "", 10, 10},
		{"always_off", "", 0, 0},
		{"traceidratio", "0", 0, 0},
		{"traceidratio", "1", 10, 10},
		{"parentbased_always_on", "", 10, 10},
		{"parentbased_always_off", "", 0, 10},
		{"parentbased_traceidratio", "0", 0, 10},
	} {
		t.Run(tc.sampler+"/"+tc.arg, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(envTracesSampler, tc.sampler)
			t.Setenv(envTracesSamplerArg, tc.arg)
			exp := tracetest.NewInMemoryExporter()
			tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
			tr := tel.TracerProvider().Tracer("test")
			for range 10 {
				_, s := tr.Start(context.Background(), "root")
				s.End()
				_, s = tr.Start(remote, "child")
				s.End()
			}
			if err := tel.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			roots, children := 0, 0
			for _, s := range exp.GetSpans() {
				if s.Name == "root" {
					roots++
				} else {
					children++
				}
			}
			if roots != tc.wantRoots || children != tc.wantChildren {
				t.Errorf("exported %d roots, %d children; want %d, %d", roots, children, tc.wantRoots, tc.wantChildren)
			}
		})
	}
}

// recordingSpanExporter keeps the size of every batch and the deadline of every export.
type recordingSpanExporter struct {
	mu        sync.Mutex
	batches   []int
	deadlines []time.Duration
}

func (e *recordingSpanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.batches = append(e.batches, len(spans))
	if d, ok := ctx.Deadline(); ok {
		e.deadlines = append(e.deadlines, time.Until(d))
	}
	return nil
}

func (*recordingSpanExporter) Shutdown(context.Context) error { return nil }

func (e *recordingSpanExporter) snapshot() (batches []int, deadlines []time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]int(nil), e.batches...), append([]time.Duration(nil), e.deadlines...)
}

// TestEnvBatchSpanProcessor covers OTEL_BSP_*: they configure this package's own bounded
// processor, which replaces the SDK's batch span processor.
func TestEnvBatchSpanProcessor(t *testing.T) {
	t.Run("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", func(t *testing.T) {
		clearEnv(t)
		noTimerExports(t)
		t.Setenv(envBSPMaxExportBatch, "3")
		exp := &recordingSpanExporter{}
		tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
		endSpans(tel, "reconcile", 7)
		if err := tel.ForceFlush(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if batches, _ := exp.snapshot(); len(batches) != 3 || batches[0] != 3 || batches[1] != 3 || batches[2] != 1 {
			t.Errorf("batches %v; want [3 3 1]", batches)
		}
	})

	t.Run("OTEL_BSP_MAX_QUEUE_SIZE", func(t *testing.T) {
		clearEnv(t)
		noTimerExports(t)
		t.Setenv(envBSPMaxQueueSize, "5")
		exp := newBlockingSpanExporter()
		reader := sdkmetric.NewManualReader()
		tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}), withReader(reader))
		endSpans(tel, "first", 5) // a full batch (capped to the queue): the worker takes it and blocks
		<-exp.entered
		endSpans(tel, "second", 8) // 5 fit in the queue
		if got := droppedTraces(collect(t, reader), semconv.TelemetryDropReasonQueueFull); got != 3 {
			t.Errorf("dropped{queue_full} = %d; want 3", got)
		}
		close(exp.release)
	})

	t.Run("OTEL_BSP_EXPORT_TIMEOUT", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(envBSPExportTimeout, "600000")
		exp := &recordingSpanExporter{}
		tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
		endSpans(tel, "reconcile", 1)
		// Shutdown with a ctx without deadline: only the processor's timeout bounds the export.
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		_, deadlines := exp.snapshot()
		if len(deadlines) != 1 {
			t.Fatalf("deadlines %v; want one export with a deadline", deadlines)
		}
		between(t, "export deadline", deadlines[0], 9*time.Minute, 10*time.Minute)
	})

	// The only way to tell a schedule delay is to wait past the default one (1s) and see that
	// no timer-driven export happened yet.
	t.Run("OTEL_BSP_SCHEDULE_DELAY", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(envBSPScheduleDelay, "600000")
		exp := &recordingSpanExporter{}
		tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
		endSpans(tel, "reconcile", 1)
		time.Sleep(defaultBatchTimeout + time.Second/2)
		if batches, _ := exp.snapshot(); len(batches) != 0 {
			t.Errorf("exported %v before the 10 minute delay", batches)
		}
	})
	t.Run("OTEL_BSP_SCHEDULE_DELAY short", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(envBSPScheduleDelay, "10")
		exp := &recordingSpanExporter{}
		tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
		endSpans(tel, "reconcile", 1)
		waitFor(t, func() bool { b, _ := exp.snapshot(); return len(b) == 1 })
	})
}

// waitFor polls cond until it holds, failing the test after the liveness bound.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(liveness)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within the liveness bound")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deadlineMetricExporter records the deadline of every export.
type deadlineMetricExporter struct {
	memMetricExporter
	mu        sync.Mutex
	deadlines []time.Duration
}

func (e *deadlineMetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	e.mu.Lock()
	if d, ok := ctx.Deadline(); ok {
		e.deadlines = append(e.deadlines, time.Until(d))
	} else {
		e.deadlines = append(e.deadlines, 0)
	}
	e.mu.Unlock()
	return e.memMetricExporter.Export(ctx, rm)
}

func (e *deadlineMetricExporter) snapshot() []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Duration(nil), e.deadlines...)
}

// TestEnvMetricReader covers OTEL_METRIC_EXPORT_INTERVAL and OTEL_METRIC_EXPORT_TIMEOUT on
// the periodic push, without any ForceFlush.
func TestEnvMetricReader(t *testing.T) {
	clearEnv(t)
	t.Setenv(envMetricInterval, "20")
	t.Setenv(envMetricTimeout, "420000")
	exp := &deadlineMetricExporter{}
	startTest(t, WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(exp))
	// The default interval, 10s, would take a minute for these.
	waitFor(t, func() bool { return len(exp.snapshot()) >= 5 })
	for i, d := range exp.snapshot()[:5] {
		between(t, "deadline of periodic export "+strconv.Itoa(i), d, 6*time.Minute, 7*time.Minute)
	}
}

// TestEnvExemplarFilter covers OTEL_METRICS_EXEMPLAR_FILTER, read by the meter provider.
func TestEnvExemplarFilter(t *testing.T) {
	for _, tc := range []struct {
		value             string
		inSpan, outOfSpan int // exemplars of a measurement in a sampled span, and outside any
	}{
		{"", 1, 0}, // trace_based
		{"trace_based", 1, 0},
		{"always_on", 1, 1},
		{"always_off", 0, 0},
	} {
		t.Run(tc.value, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(envExemplarFilter, tc.value)
			reader := sdkmetric.NewManualReader()
			tel := startTest(t, WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{}), withReader(reader))
			h, _ := tel.MeterProvider().Meter("test").Float64Histogram("env.test.duration")
			ctx, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "reconcile")
			h.Record(ctx, 1, metricAttr("in"))
			span.End()
			h.Record(context.Background(), 1, metricAttr("out"))

			got := map[string]int{}
			for _, sm := range collect(t, reader).ScopeMetrics {
				for _, m := range sm.Metrics {
					if hist, ok := m.Data.(metricdata.Histogram[float64]); ok {
						for _, dp := range hist.DataPoints {
							v, _ := dp.Attributes.Value("where")
							got[v.AsString()] = len(dp.Exemplars)
						}
					}
				}
			}
			if got["in"] != tc.inSpan || got["out"] != tc.outOfSpan {
				t.Errorf("exemplars in span %d, outside %d; want %d, %d", got["in"], got["out"], tc.inSpan, tc.outOfSpan)
			}
		})
	}
}

// TestEnvSpanLimits covers the span limit variables, read by the tracer provider.
func TestEnvSpanLimits(t *testing.T) {
	two := []attribute.KeyValue{attribute.String("a", "abcdef"), attribute.String("b", "abcdef")}
	for _, tc := range []struct {
		name  string
		check func(s sdktrace.ReadOnlySpan) bool
	}{
		{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", func(s sdktrace.ReadOnlySpan) bool { return s.Attributes()[0].Value.AsString() == "a" }},
		{"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", func(s sdktrace.ReadOnlySpan) bool { return s.Attributes()[0].Value.AsString() == "a" }},
		{"OTEL_ATTRIBUTE_COUNT_LIMIT", func(s sdktrace.ReadOnlySpan) bool { return len(s.Attributes()) == 1 }},
		{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", func(s sdktrace.ReadOnlySpan) bool { return len(s.Attributes()) == 1 }},
		{"OTEL_SPAN_EVENT_COUNT_LIMIT", func(s sdktrace.ReadOnlySpan) bool { return len(s.Events()) == 1 }},
		{"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", func(s sdktrace.ReadOnlySpan) bool { return len(s.Events()[0].Attributes) == 1 }},
		{"OTEL_SPAN_LINK_COUNT_LIMIT", func(s sdktrace.ReadOnlySpan) bool { return len(s.Links()) == 1 }},
		{"OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", func(s sdktrace.ReadOnlySpan) bool { return len(s.Links()[0].Attributes) == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.name, "1")
			exp := tracetest.NewInMemoryExporter()
			tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
			link := trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{2}, SpanID: trace.SpanID{2}}), Attributes: two}
			_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "reconcile",
				trace.WithAttributes(two...), trace.WithLinks(link, link))
			span.AddEvent("one", trace.WithAttributes(two...))
			span.AddEvent("two", trace.WithAttributes(two...))
			span.End()
			if err := tel.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			spans := exp.GetSpans()
			if len(spans) != 1 || !tc.check(spans.Snapshots()[0]) {
				t.Errorf("%s=1 had no effect: %+v", tc.name, spans)
			}
		})
	}
}

func metricAttr(where string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("where", where))
}

// TestEnvSDKDisabled: OTEL_SDK_DISABLED=true gives a working no-op Telemetry that starts no
// goroutine, calls no exporter, registers nothing and leaves OpenTelemetry's globals alone.
func TestEnvSDKDisabled(t *testing.T) {
	clearEnv(t)
	restoreGlobals(t)
	t.Setenv(envSDKDisabled, "TRUE")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "not a URL") // ignored: the SDK is off
	beforeTP, beforeMP, beforeProp := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator()
	goroutines := sdkGoroutines()

	reg := prometheus.NewRegistry()
	exp := &recordingSpanExporter{}
	tel, err := Start(context.Background(), WithPrometheusRegisterer(reg), WithSpanExporter(exp))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	endSpans(tel, "reconcile", 3)
	c, err := tel.MeterProvider().Meter("t").Int64Counter("c")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 1)
	if got := sdkGoroutines(); got > goroutines {
		t.Errorf("%d SDK goroutines after Start; want at most the %d from before", got, goroutines)
	}
	if otel.GetTracerProvider() != beforeTP || otel.GetMeterProvider() != beforeMP || otel.GetTextMapPropagator() != beforeProp {
		t.Error("a disabled SDK changed OpenTelemetry's globals")
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Errorf("the registry was touched: %v, %v", mfs, err)
	}
	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Error(err)
	}
	if err := tel.Shutdown(ctxT(t)); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if batches, _ := exp.snapshot(); len(batches) != 0 {
		t.Errorf("the exporter was called: %v", batches)
	}
}

// sdkGoroutines counts the goroutines running code of this package or of the OpenTelemetry
// SDK and exporters.
func sdkGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "watchtower/sdk.(*boundedBatchProcessor)") || strings.Contains(g, "go.opentelemetry.io/otel/sdk/metric.(*PeriodicReader)") ||
			strings.Contains(g, "go.opentelemetry.io/otel/exporters/") {
			n++
		}
	}
	return n
}

// testCA is a certificate authority for the TLS tests.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	pool    *x509.CertPool
}

type testCert struct {
	certPEM, keyPEM []byte
	tls             tls.Certificate
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "watchtower test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: pool}
}

// issue signs a certificate for a server on 127.0.0.1 or for a client named cn.
func (ca *testCA) issue(t *testing.T, cn string, server bool) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	if c.tls, err = tls.X509KeyPair(c.certPEM, c.keyPEM); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEnvUnsupportedVariablesAreIgnored: variables of the specification that this SDK has no
// use for change nothing: Start succeeds, exports as usual and opens no port of its own.
func TestEnvUnsupportedVariablesAreIgnored(t *testing.T) {
	clearEnv(t)
	r := startOTLPReceiver(t, plaintext, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	promPort := lis.Addr().(*net.TCPAddr).Port
	_ = lis.Close() // a free port, which a Prometheus exporter of the SDK's own would open
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.httpURL)
	for k, v := range map[string]string{
		"OTEL_LOGS_EXPORTER":               "otlp",
		"OTEL_LOG_LEVEL":                   "debug",
		"OTEL_CONFIG_FILE":                 "/nonexistent/otel.yaml",
		"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "not a URL",
		"OTEL_BLRP_MAX_QUEUE_SIZE":         "-1",
		"OTEL_EXPORTER_ZIPKIN_ENDPOINT":    "not a URL",
		"OTEL_EXPORTER_PROMETHEUS_HOST":    "127.0.0.1",
		"OTEL_EXPORTER_PROMETHEUS_PORT":    strconv.Itoa(promPort),
	} {
		t.Setenv(k, v)
	}
	tel := startTest(t, WithLogger(logr.Discard()))
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(promPort))); err == nil {
		_ = c.Close()
		t.Errorf("something listens on OTEL_EXPORTER_PROMETHEUS_PORT %d", promPort)
	}
	endSpans(tel, "reconcile", 1)
	if err := tel.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	r.last(t, "traces")
	r.last(t, "metrics")
}
