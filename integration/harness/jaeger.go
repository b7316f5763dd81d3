package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Jaeger is a Jaeger v2 server (in-memory storage) with OTLP receivers and the query API.
type Jaeger struct {
	// OTLPGRPC and OTLPHTTP are the receivers' "127.0.0.1:port" endpoints.
	OTLPGRPC, OTLPHTTP string
	// QueryURL is the base URL of the HTTP query API, e.g. "http://127.0.0.1:16686".
	QueryURL string
	proc     *Process
	spec     ProcessSpec
	health   string
}

// JaegerOption configures StartJaeger.
type JaegerOption func(*jaegerConfig)

type jaegerConfig struct {
	queryPort int
	net       Network
}

// WithJaegerQueryPort makes the HTTP query API listen on 127.0.0.1:port instead of a free port.
func WithJaegerQueryPort(port int) JaegerOption { return func(c *jaegerConfig) { c.queryPort = port } }

// WithJaegerNetwork runs Jaeger in n (e.g. a Cluster's node network, where pods reach it).
func WithJaegerNetwork(n Network) JaegerOption { return func(c *jaegerConfig) { c.net = n } }

// StartJaeger starts Jaeger with every port on a free loopback port — its defaults (4317,
// 16686, 8888, ...) would collide with the collector under test — and waits for its health
// check. Jaeger's own telemetry stays off for the same reason.
func StartJaeger(t TB, opts ...JaegerOption) *Jaeger {
	t.Helper()
	var jc jaegerConfig
	for _, o := range opts {
		o(&jc)
	}
	tools := MustTools(t)
	bin := tools.Path(t, "jaeger", "JAEGER_VERSION", "jaeger")
	dir := t.TempDir()
	j := &Jaeger{OTLPGRPC: jc.net.Addr(FreePort(t)), OTLPHTTP: jc.net.Addr(FreePort(t))}
	queryPort := jc.queryPort
	if queryPort == 0 {
		queryPort = FreePort(t)
	}
	queryHTTP, queryGRPC, health := jc.net.Addr(queryPort), jc.net.Addr(FreePort(t)), jc.net.Addr(FreePort(t))
	j.QueryURL = "http://" + queryHTTP
	cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %[5]q
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %[3]q
    grpc:
      endpoint: %[4]q
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %[1]q
      http:
        endpoint: %[2]q
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, j.OTLPGRPC, j.OTLPHTTP, queryHTTP, queryGRPC, health)
	cfgPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	j.spec = ProcessSpec{
		Name:        "jaeger",
		Path:        bin,
		Args:        []string{"--config", cfgPath},
		Dir:         dir,
		StopTimeout: 5 * time.Second, // it may hang on SIGTERM while exporting; SIGKILL is fine for a test
		NetNS:       jc.net.NetNS,
	}
	j.health = "http://" + health + "/status"
	j.Start(t)
	return j
}

// Stop stops Jaeger (its storage is in memory: what it held is gone, as with an all-in-one
// Jaeger restarted). Start brings it back on the same endpoints.
func (j *Jaeger) Stop(t TB) {
	t.Helper()
	if err := j.proc.Stop(); err != nil {
		t.Fatalf("harness: %v", err)
	}
}

// Start starts Jaeger on its endpoints (StartJaeger does it the first time; after Stop it
// starts it again) and waits until its health check and query API answer.
func (j *Jaeger) Start(t TB) {
	t.Helper()
	if j.proc != nil {
		select {
		case <-j.proc.Done():
		default:
			t.Fatalf("harness: jaeger is already running (pid %d)", j.proc.Pid())
		}
	}
	j.proc = StartProcess(t, j.spec)
	j.proc.MustWaitReady(t, 60*time.Second, HTTPStatusOK(j.health))
	j.proc.MustWaitReady(t, 30*time.Second, HTTPStatusOK(j.QueryURL+"/api/services"))
}

// Process is the server's process.
func (j *Jaeger) Process() *Process { return j.proc }

// JaegerTrace is a trace as Jaeger's HTTP query API returns it.
type JaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []JaegerSpan             `json:"spans"`
	Processes map[string]JaegerProcess `json:"processes"`
}

// JaegerSpan is one span of a JaegerTrace.
type JaegerSpan struct {
	TraceID       string            `json:"traceID"`
	SpanID        string            `json:"spanID"`
	OperationName string            `json:"operationName"`
	References    []JaegerReference `json:"references"`
	StartTime     int64             `json:"startTime"` // microseconds since the epoch
	Duration      int64             `json:"duration"`  // microseconds
	Tags          []JaegerKeyValue  `json:"tags"`
	Logs          []JaegerLog       `json:"logs"`
	ProcessID     string            `json:"processID"`
}

// JaegerReference links a span to its parent (CHILD_OF) or another span (FOLLOWS_FROM).
type JaegerReference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// JaegerKeyValue is a tag.
type JaegerKeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// JaegerLog is a span event.
type JaegerLog struct {
	Timestamp int64            `json:"timestamp"`
	Fields    []JaegerKeyValue `json:"fields"`
}

// JaegerProcess is the emitting service of a span.
type JaegerProcess struct {
	ServiceName string           `json:"serviceName"`
	Tags        []JaegerKeyValue `json:"tags"`
}

// Tag returns the value of the span tag key, and whether it is set.
func (s JaegerSpan) Tag(key string) (any, bool) {
	for _, kv := range s.Tags {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// ParentSpanID returns the span's CHILD_OF parent, or "" for a root span.
func (s JaegerSpan) ParentSpanID() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Trace returns the trace with the given hex ID; found is false while Jaeger does not have it.
func (j *Jaeger) Trace(ctx context.Context, traceID string) (tr JaegerTrace, found bool, err error) {
	var traces []JaegerTrace
	status, err := j.getJSON(ctx, "/api/traces/"+url.PathEscape(traceID), &traces)
	if status == http.StatusNotFound {
		return JaegerTrace{}, false, nil
	}
	if err != nil {
		return JaegerTrace{}, false, err
	}
	if len(traces) == 0 {
		return JaegerTrace{}, false, nil
	}
	return traces[0], true, nil
}

// TraceQuery filters FindTraces. Service is required.
type TraceQuery struct {
	Service     string
	Operation   string
	MinDuration time.Duration
	Tags        map[string]string
	Lookback    time.Duration // default 1h
	Limit       int           // default 100
}

// FindTraces searches traces like Jaeger's search form does.
func (j *Jaeger) FindTraces(ctx context.Context, q TraceQuery) ([]JaegerTrace, error) {
	v := url.Values{"service": {q.Service}}
	if q.Operation != "" {
		v.Set("operation", q.Operation)
	}
	if q.MinDuration > 0 {
		v.Set("minDuration", q.MinDuration.String())
	}
	if len(q.Tags) > 0 {
		b, _ := json.Marshal(q.Tags)
		v.Set("tags", string(b))
	}
	lookback := q.Lookback
	if lookback == 0 {
		lookback = time.Hour
	}
	end := time.Now().Add(time.Minute)
	v.Set("start", fmt.Sprint(end.Add(-lookback).UnixMicro()))
	v.Set("end", fmt.Sprint(end.UnixMicro()))
	limit := q.Limit
	if limit == 0 {
		limit = 100
	}
	v.Set("limit", fmt.Sprint(limit))
	var traces []JaegerTrace
	_, err := j.getJSON(ctx, "/api/traces?"+v.Encode(), &traces)
	return traces, err
}

// Services lists the services Jaeger has spans for.
func (j *Jaeger) Services(ctx context.Context) ([]string, error) {
	var s []string
	_, err := j.getJSON(ctx, "/api/services", &s)
	return s, err
}

// Get GETs path (with its query, e.g. one the demo prints) from the query API and decodes the
// "data" member of the answer into data.
func (j *Jaeger) Get(ctx context.Context, path string, data any) error {
	_, err := j.getJSON(ctx, path, data)
	return err
}

// getJSON decodes the "data" member of a Jaeger API response.
func (j *Jaeger) getJSON(ctx context.Context, path string, data any) (int, error) {
	var body struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		} `json:"errors"`
	}
	resp, err := getJSON(ctx, j.QueryURL+path, &body)
	if err != nil {
		if resp != nil {
			return resp.StatusCode, err
		}
		return 0, err
	}
	if resp.StatusCode != http.StatusOK || len(body.Errors) > 0 {
		return resp.StatusCode, fmt.Errorf("GET %s: %s: %v", path, resp.Status, body.Errors)
	}
	if len(body.Data) == 0 || string(body.Data) == "null" {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.Unmarshal(body.Data, data)
}
