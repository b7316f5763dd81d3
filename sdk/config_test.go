package sdk

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// envMap is a fake environment for newSettings, so these tests need no process state.
func envMap(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func mustSettings(t *testing.T, getenv func(string) string, opts ...Option) *settings {
	t.Helper()
	s, err := newSettings(getenv, opts)
	if err != nil {
		t.Fatalf("newSettings: %v", err)
	}
	return s
}

func attrValue(kvs []attribute.KeyValue, key string) (string, bool) {
	v, ok := "", false
	for _, kv := range kvs { // last one wins, as in a resource merge
		if string(kv.Key) == key {
			v, ok = kv.Value.String(), true
		}
	}
	return v, ok
}

func TestDefaults(t *testing.T) {
	s := mustSettings(t, envMap())
	if s.disabled {
		t.Error("disabled by default")
	}
	if s.traces.protocol != protocolHTTPProtobuf || s.metrics.protocol != protocolHTTPProtobuf {
		t.Errorf("protocols = %q, %q; want http/protobuf", s.traces.protocol, s.metrics.protocol)
	}
	if got, want := s.sampler.Description(), SampleLinked(sdktrace.ParentBased(sdktrace.AlwaysSample())).Description(); got != want {
		t.Errorf("sampler = %s; want %s", got, want)
	}
	if s.metricInterval != 10*time.Second {
		t.Errorf("metric interval = %s; want 10s", s.metricInterval)
	}
	if s.metricTimeout != 30*time.Second {
		t.Errorf("metric timeout = %s; want 30s", s.metricTimeout)
	}
	if s.queueSize != 2048 || s.maxBatch != 512 || s.batchTimeout != time.Second || s.exportTimeout != 10*time.Second {
		t.Errorf("queue, batch, delay, timeout = %d, %d, %s, %s; want 2048, 512, 1s, 10s",
			s.queueSize, s.maxBatch, s.batchTimeout, s.exportTimeout)
	}
	if s.tracesExporter != exporterOTLP || s.metricsExporter != exporterOTLP {
		t.Errorf("exporters = %s, %s; want otlp, otlp", s.tracesExporter, s.metricsExporter)
	}
	if s.promRegisterer != metrics.Registry || s.promGatherer != metrics.Registry {
		t.Error("the Prometheus registerer and gatherer must default to controller-runtime's metrics.Registry")
	}
	if s.scopeLabels {
		t.Error("the otel_scope_* labels must be dropped by default")
	}
}

func TestServiceNamePrecedence(t *testing.T) {
	const attrs = "service.name=from-attributes,team=platform"
	for _, tc := range []struct {
		name string
		env  func(string) string
		want string // empty: no service.name from config, the executable name applies
	}{
		{"executable", envMap(), ""},
		{"resource attributes", envMap(envResourceAttributes, attrs), "from-attributes"},
		{"OTEL_SERVICE_NAME", envMap(envResourceAttributes, attrs, envServiceName, "from-env"), "from-env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSettings(t, tc.env)
			got, _ := attrValue(s.envAttrs, "service.name")
			if got != tc.want {
				t.Errorf("service.name = %q; want %q", got, tc.want)
			}
		})
	}
}

func TestSamplerFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name, arg string
		want      sdktrace.Sampler
	}{
		{"", "", sdktrace.ParentBased(sdktrace.AlwaysSample())},
		{"always_on", "", sdktrace.AlwaysSample()},
		{"always_off", "", sdktrace.NeverSample()},
		{"traceidratio", "0.25", sdktrace.TraceIDRatioBased(0.25)},
		{"traceidratio", "", sdktrace.TraceIDRatioBased(1)},
		{"parentbased_always_on", "ignored", sdktrace.ParentBased(sdktrace.AlwaysSample())},
		{"parentbased_always_off", "", sdktrace.ParentBased(sdktrace.NeverSample())},
		{"parentbased_traceidratio", "0", sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0))},
		{"ParentBased_TraceIDRatio", "1", sdktrace.ParentBased(sdktrace.TraceIDRatioBased(1))},
	} {
		s := mustSettings(t, envMap(envTracesSampler, tc.name, envTracesSamplerArg, tc.arg))
		if got, want := s.sampler.Description(), SampleLinked(tc.want).Description(); got != want {
			t.Errorf("%s=%q %s=%q: sampler %s; want %s", envTracesSampler, tc.name, envTracesSamplerArg, tc.arg, got, want)
		}
	}
}

func TestProtocolPrecedence(t *testing.T) {
	const general, traces = "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	for _, tc := range []struct {
		name                string
		env                 func(string) string
		wantTraces, wantMet string
	}{
		{"default", envMap(), "http/protobuf", "http/protobuf"},
		{"general grpc", envMap(general, "grpc"), "grpc", "grpc"},
		{"general", envMap(general, "http/protobuf"), "http/protobuf", "http/protobuf"},
		{"per-signal", envMap(general, "http/protobuf", traces, "grpc"), "grpc", "http/protobuf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSettings(t, tc.env)
			if s.traces.protocol != tc.wantTraces || s.metrics.protocol != tc.wantMet {
				t.Errorf("traces, metrics = %q, %q; want %q, %q", s.traces.protocol, s.metrics.protocol, tc.wantTraces, tc.wantMet)
			}
		})
	}
}

func TestQueueSizeCapsDefaultBatch(t *testing.T) {
	s := mustSettings(t, envMap(envBSPMaxQueueSize, "100"))
	if s.queueSize != 100 || s.maxBatch != 100 {
		t.Errorf("queue, batch = %d, %d; want 100, 100", s.queueSize, s.maxBatch)
	}
}

// TestExporterOptionsOverrideEnv: an exporter given in code replaces the one the environment
// selects, whose variables are then not used, hence not validated.
func TestExporterOptionsOverrideEnv(t *testing.T) {
	bad := envMap(
		"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317",
		"OTEL_EXPORTER_OTLP_HEADERS", "garbage",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json",
		envTracesExporter, "zipkin",
		envMetricsExporter, "zipkin",
	)
	if _, err := newSettings(bad, nil); err == nil {
		t.Fatal("the bad environment passed without the options")
	}
	s := mustSettings(t, bad, WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{}))
	if s.spanExporter == nil || s.metricExporter == nil {
		t.Error("the exporters given in code are not used")
	}
}

// TestOTLPVariablesOfAnUnusedExporterAreNotValidated: with OTEL_TRACES_EXPORTER=none, a bad
// trace endpoint is not an error; the metric one still is.
func TestOTLPVariablesOfAnUnusedExporterAreNotValidated(t *testing.T) {
	env := envMap(envTracesExporter, "none", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317")
	mustSettings(t, env)
	_, err := newSettings(envMap(envTracesExporter, "none", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "collector:4317"), nil)
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
		t.Errorf("error = %v; want the metric endpoint reported", err)
	}
}

func TestPrometheusOptions(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := mustSettings(t, envMap(), WithPrometheusRegisterer(reg), WithPrometheusScopeLabels())
	if s.promRegisterer != reg || s.promGatherer != reg || !s.scopeLabels {
		t.Errorf("registerer, gatherer, scope labels = %v, %v, %v; want the given registry twice and true",
			s.promRegisterer, s.promGatherer, s.scopeLabels)
	}
	// Without an exporter of ours on /metrics, controller-runtime's metrics are still bridged.
	s = mustSettings(t, envMap(), WithPrometheusRegisterer(nil))
	if s.promRegisterer != nil || s.promGatherer != metrics.Registry {
		t.Errorf("registerer, gatherer = %v, %v; want nil and metrics.Registry", s.promRegisterer, s.promGatherer)
	}
	// A registerer that cannot be gathered: nothing to bridge from.
	s = mustSettings(t, envMap(), WithPrometheusRegisterer(prometheus.WrapRegistererWith(prometheus.Labels{"a": "b"}, reg)))
	if s.promGatherer != nil {
		t.Errorf("gatherer = %v; want none", s.promGatherer)
	}
}

func TestDownwardAPIAttributes(t *testing.T) {
	s := mustSettings(t, envMap(envPodName, "op-7d9f", envPodNamespace, "operators", envPodUID, "1234-abcd", envNodeName, "node-1"))
	for key, want := range map[string]string{
		"k8s.pod.name": "op-7d9f", "k8s.namespace.name": "operators", "k8s.pod.uid": "1234-abcd", "k8s.node.name": "node-1",
	} {
		if got, _ := attrValue(s.k8sAttrs, key); got != want {
			t.Errorf("%s = %q; want %q", key, got, want)
		}
	}
}

func TestParseHeaders(t *testing.T) {
	h, err := parseHeaders("api-key=secret%20value, X-Tenant = team-a ,")
	if err != nil {
		t.Fatal(err)
	}
	if h["api-key"] != "secret value" || h["X-Tenant"] != "team-a" || len(h) != 2 {
		t.Errorf("headers = %v", h)
	}
}

func TestParseResourceAttributes(t *testing.T) {
	attrs, err := parseResourceAttributes("team=platform, tier = gold%2Fsilver,")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := attrValue(attrs, "team"); v != "platform" {
		t.Errorf("team = %q", v)
	}
	if v, _ := attrValue(attrs, "tier"); v != "gold/silver" {
		t.Errorf("tier = %q", v)
	}
}

// TestValidationErrors pins every message: each names the variable (or option) and the bad
// value, and says what is expected.
func TestValidationErrors(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		opts []Option
		want string
	}{
		{[]string{"OTEL_SDK_DISABLED", "yes"}, nil, `OTEL_SDK_DISABLED="yes": must be true or false`},
		{[]string{"OTEL_TRACES_SAMPLER", "jaeger_remote"}, nil, `OTEL_TRACES_SAMPLER="jaeger_remote": must be one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio`},
		{[]string{"OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "1.5"}, nil, `OTEL_TRACES_SAMPLER_ARG="1.5": must be a number between 0 and 1`},
		{[]string{"OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "half"}, nil, `OTEL_TRACES_SAMPLER_ARG="half": must be a number between 0 and 1`},
		{[]string{"OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "-0.1"}, nil, `OTEL_TRACES_SAMPLER_ARG="-0.1": must be a number between 0 and 1`},
		{[]string{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}, nil, `OTEL_EXPORTER_OTLP_PROTOCOL="http/json": http/json is not supported; use "grpc" or "http/protobuf"`},
		{[]string{"OTEL_EXPORTER_OTLP_PROTOCOL", "udp"}, nil, `OTEL_EXPORTER_OTLP_PROTOCOL="udp": must be "grpc" or "http/protobuf"`},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"}, nil, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/json": http/json is not supported; use "grpc" or "http/protobuf"`},
		{[]string{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "thrift"}, nil, `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="thrift": must be "grpc" or "http/protobuf"`},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"}, nil, `OTEL_EXPORTER_OTLP_ENDPOINT="collector:4317": must be a URL with scheme http or https, e.g. http://otelcol-watchtower:4318 (http/protobuf, the default) or http://otelcol-watchtower:4317 (grpc)`},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"}, nil, `OTEL_EXPORTER_OTLP_ENDPOINT="ftp://collector": must be a URL with scheme http or https`},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"}, nil, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://": must be a URL with scheme http or https`},
		{[]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "localhost"}, nil, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="localhost": must be a URL with scheme http or https`},
		{[]string{"OTEL_EXPORTER_OTLP_HEADERS", "api-key"}, nil, `OTEL_EXPORTER_OTLP_HEADERS: entry 1 of 1 has no '=': want key=value,key2=value2 (values are not shown: they may be secrets)`},
		{[]string{"OTEL_EXPORTER_OTLP_HEADERS", "a=1,bad key=2"}, nil, `OTEL_EXPORTER_OTLP_HEADERS: entry 2 of 2: key "bad key" is not a valid header name`},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=%zz"}, nil, `OTEL_EXPORTER_OTLP_TRACES_HEADERS: entry 1 of 1: the value of "api-key" is not valid URL encoding (values are not shown: they may be secrets)`},
		{[]string{"OTEL_EXPORTER_OTLP_METRICS_HEADERS", "=v"}, nil, `OTEL_EXPORTER_OTLP_METRICS_HEADERS: entry 1 of 1: key "" is not a valid header name`},
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "team=platform,tier"}, nil, `OTEL_RESOURCE_ATTRIBUTES="team=platform,tier": entry "tier" is not key=value`},
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "=platform"}, nil, `OTEL_RESOURCE_ATTRIBUTES="=platform": entry "=platform" is not key=value`},
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "team=%zz"}, nil, `OTEL_RESOURCE_ATTRIBUTES="team=%zz": the value of "team" is not valid URL encoding`},
		{[]string{"OTEL_METRIC_EXPORT_INTERVAL", "10s"}, nil, `OTEL_METRIC_EXPORT_INTERVAL="10s": must be a positive integer number of milliseconds`},
		{[]string{"OTEL_METRIC_EXPORT_INTERVAL", "0"}, nil, `OTEL_METRIC_EXPORT_INTERVAL="0": must be a positive integer number of milliseconds`},
		{[]string{"OTEL_METRIC_EXPORT_TIMEOUT", "-5"}, nil, `OTEL_METRIC_EXPORT_TIMEOUT="-5": must be a positive integer number of milliseconds`},
		{[]string{"OTEL_BSP_SCHEDULE_DELAY", "1s"}, nil, `OTEL_BSP_SCHEDULE_DELAY="1s": must be a positive integer number of milliseconds`},
		{[]string{"OTEL_BSP_EXPORT_TIMEOUT", "0"}, nil, `OTEL_BSP_EXPORT_TIMEOUT="0": must be a positive integer number of milliseconds`},
		{[]string{"OTEL_BSP_MAX_QUEUE_SIZE", "0"}, nil, `OTEL_BSP_MAX_QUEUE_SIZE="0": must be a positive integer`},
		{[]string{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "many"}, nil, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE="many": must be a positive integer`},
		{[]string{"OTEL_BSP_MAX_QUEUE_SIZE", "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "200"}, nil, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE="200": must not exceed OTEL_BSP_MAX_QUEUE_SIZE (100)`},
		{[]string{"OTEL_TRACES_EXPORTER", "zipkin"}, nil, `OTEL_TRACES_EXPORTER="zipkin": zipkin is not supported; use otlp, console or none`},
		{[]string{"OTEL_TRACES_EXPORTER", "logging"}, nil, `OTEL_TRACES_EXPORTER="logging": logging is not supported (the specification deprecated it for console); use otlp, console or none`},
		{[]string{"OTEL_TRACES_EXPORTER", "otlp,console"}, nil, `OTEL_TRACES_EXPORTER="otlp,console": only one exporter is supported; use otlp, console or none`},
		{[]string{"OTEL_TRACES_EXPORTER", "prometheus"}, nil, `OTEL_TRACES_EXPORTER="prometheus": must be otlp, console or none`},
		{[]string{"OTEL_METRICS_EXPORTER", "otlp,console"}, nil, `OTEL_METRICS_EXPORTER="otlp,console": only one of otlp and console is supported (prometheus may be listed beside it)`},
		{[]string{"OTEL_METRICS_EXPORTER", "none,prometheus"}, nil, `OTEL_METRICS_EXPORTER="none,prometheus": none cannot be combined with another exporter`},
		{[]string{"OTEL_METRICS_EXPORTER", "statsd"}, nil, `OTEL_METRICS_EXPORTER="statsd": must be otlp, console, prometheus or none`},
		{[]string{"OTEL_EXPORTER_OTLP_TIMEOUT", "10s"}, nil, `OTEL_EXPORTER_OTLP_TIMEOUT="10s": must be a positive integer number of milliseconds`},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"}, nil, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="0": must be a positive integer number of milliseconds`},
		{[]string{"OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"}, nil, `OTEL_EXPORTER_OTLP_COMPRESSION="zstd": must be gzip or none`},
		{[]string{"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "GZIP"}, nil, `OTEL_EXPORTER_OTLP_METRICS_COMPRESSION="GZIP": must be gzip or none`},
		{[]string{"OTEL_EXPORTER_OTLP_INSECURE", "yes"}, nil, `OTEL_EXPORTER_OTLP_INSECURE="yes": must be true or false`},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_INSECURE", "1"}, nil, `OTEL_EXPORTER_OTLP_TRACES_INSECURE="1": must be true or false`},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317", "OTEL_EXPORTER_OTLP_INSECURE", "true"}, nil, `OTEL_EXPORTER_OTLP_INSECURE="true": contradicts the endpoint https://collector:4317 (OTEL_EXPORTER_OTLP_ENDPOINT), whose scheme says whether to use TLS: use http:// for none, https:// for TLS`},
		{[]string{"OTEL_EXPORTER_OTLP_METRICS_INSECURE", "false"}, nil, `OTEL_EXPORTER_OTLP_METRICS_INSECURE="false": contradicts the endpoint http://localhost:4318 (default)`},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/ca.pem"}, nil, `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: set, but the endpoint http://collector:4318 (OTEL_EXPORTER_OTLP_ENDPOINT) has no TLS: use https://`},
		{[]string{"OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"}, nil, `OTEL_EXPORTER_OTLP_CERTIFICATE="/nonexistent/ca.pem": cannot be read: no such file or directory`},
		{[]string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/tls/client.pem"}, nil, `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE="/tls/client.pem": OTEL_EXPORTER_OTLP_CLIENT_KEY must be set too`},
		{[]string{"OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "/tls/key.pem"}, nil, `OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY="/tls/key.pem": OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE must be set too`},
		{[]string{"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "deltas"}, nil, `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="deltas": must be cumulative, delta or lowmemory`},
		{[]string{"OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "exponential"}, nil, `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION="exponential": must be explicit_bucket_histogram or base2_exponential_bucket_histogram`},
		{[]string{"OTEL_METRICS_EXEMPLAR_FILTER", "sometimes"}, nil, `OTEL_METRICS_EXEMPLAR_FILTER="sometimes": must be always_on, always_off or trace_based`},
		{[]string{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "-1"}, nil, `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT="-1": must be a non-negative integer`},
		{[]string{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "1k"}, nil, `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT="1k": must be a non-negative integer`},
		{nil, []Option{WithShutdownTimeout(-time.Second)}, `WithShutdownTimeout(-1s): must be positive`},
		{nil, []Option{WithSpanExporter(nil)}, `WithSpanExporter(nil): an exporter is required`},
		{nil, []Option{WithMetricExporter(nil)}, `WithMetricExporter(nil): an exporter is required`},
	} {
		_, err := newSettings(envMap(tc.env...), tc.opts)
		if err == nil {
			t.Errorf("%v: no error; want %s", tc.env, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error\n  %v\nwant it to contain\n  %s", tc.env, err, tc.want)
		}
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	_, err := newSettings(envMap(
		"OTEL_TRACES_SAMPLER_ARG", "2", "OTEL_TRACES_SAMPLER", "traceidratio",
		"OTEL_METRIC_EXPORT_INTERVAL", "soon",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json",
		"OTEL_BSP_MAX_QUEUE_SIZE", "-1",
	), []Option{WithShutdownTimeout(0)})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"OTEL_TRACES_SAMPLER_ARG", "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_BSP_MAX_QUEUE_SIZE", "WithShutdownTimeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestHeaderErrorsDoNotLeakValues(t *testing.T) {
	const secret = "Bearer%zzs3cr3t"
	_, err := newSettings(envMap("OTEL_EXPORTER_OTLP_HEADERS", "authorization="+secret), nil)
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error %v must exist and not contain the header value", err)
	}
	_, err = newSettings(envMap("OTEL_EXPORTER_OTLP_HEADERS", "s3cr3t-token"), nil)
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error %v must exist and not contain the entry", err)
	}
}

func TestDisabledSkipsOtherValidation(t *testing.T) {
	for _, v := range []string{"true", "TRUE", " True "} {
		s, err := newSettings(envMap(envSDKDisabled, v, envTracesSampler, "bogus"), nil)
		if err != nil || !s.disabled {
			t.Errorf("%s=%q: disabled=%v err=%v; want disabled and no error", envSDKDisabled, v, s != nil && s.disabled, err)
		}
	}
	if s := mustSettings(t, envMap(envSDKDisabled, "false")); s.disabled {
		t.Error(`OTEL_SDK_DISABLED="false" disabled the SDK`)
	}
}

// TestTLSFileValidation: the certificate variables name files; what the exporters would only
// log before sending without them is an error at Start.
func TestTLSFileValidation(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	caFile := writeFile(t, dir, "ca.pem", ca.certPEM)
	client := ca.issue(t, "operator", false)
	certFile := writeFile(t, dir, "client.pem", client.certPEM)
	keyFile := writeFile(t, dir, "client-key.pem", client.keyPEM)
	otherKey := writeFile(t, dir, "other-key.pem", ca.issue(t, "other", false).keyPEM)
	notPEM := writeFile(t, dir, "not.pem", []byte("hello"))
	// A variable pointing at a FIFO (or /dev/stdin) must not block the operator's start; one
	// pointing at something huge must not exhaust it; a mounted Secret's symlink is fine.
	fifo := filepath.Join(dir, "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := writeFile(t, dir, "huge.pem", bytes.Repeat([]byte("A"), 2<<20))
	link := filepath.Join(dir, "secret-link.pem")
	if err := os.Symlink(caFile, link); err != nil {
		t.Fatal(err)
	}
	mustSettings(t, envMap("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318", "OTEL_EXPORTER_OTLP_CERTIFICATE", link))

	mustSettings(t, envMap("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318", "OTEL_EXPORTER_OTLP_CERTIFICATE", caFile,
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", certFile, "OTEL_EXPORTER_OTLP_CLIENT_KEY", keyFile))
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", notPEM}, `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE="` + notPEM + `": holds no PEM certificate`},
		{[]string{"OTEL_EXPORTER_OTLP_CERTIFICATE", fifo}, `OTEL_EXPORTER_OTLP_CERTIFICATE="` + fifo + `": is not a regular file`},
		{[]string{"OTEL_EXPORTER_OTLP_CERTIFICATE", dir}, `OTEL_EXPORTER_OTLP_CERTIFICATE="` + dir + `": is not a regular file`},
		{[]string{"OTEL_EXPORTER_OTLP_CERTIFICATE", huge}, `OTEL_EXPORTER_OTLP_CERTIFICATE="` + huge + `": is 2097152 bytes, more than a certificate file can be`},
		{[]string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", certFile, "OTEL_EXPORTER_OTLP_CLIENT_KEY", fifo}, `OTEL_EXPORTER_OTLP_CLIENT_KEY="` + fifo + `": is not a regular file`},
		{[]string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", certFile, "OTEL_EXPORTER_OTLP_CLIENT_KEY", otherKey},
			`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE="` + certFile + `" and OTEL_EXPORTER_OTLP_CLIENT_KEY="` + otherKey + `": not a certificate and its private key`},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", certFile, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", dir + "/missing.pem"},
			`OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY="` + dir + `/missing.pem": cannot be read: no such file or directory`},
	} {
		_, err := newSettings(envMap(tc.env...), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v; want it to contain %s", tc.env, err, tc.want)
		}
	}
	// A complete per-signal pair replaces the general one, which is then not read.
	mustSettings(t, envMap(envMetricsExporter, "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318",
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", notPEM, "OTEL_EXPORTER_OTLP_CLIENT_KEY", notPEM,
		"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", certFile, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", keyFile))
}

func TestExporterSelection(t *testing.T) {
	for _, tc := range []struct {
		traces, metrics         string
		wantTraces, wantMetrics string
	}{
		{"", "", "otlp", "otlp"},
		{"otlp", "otlp", "otlp", "otlp"},
		{"console", "console", "console", "console"},
		{"none", "none", "none", "none"},
		{" OTLP , otlp", "prometheus", "otlp", "none"},
		{"Console", "otlp,prometheus", "console", "otlp"},
		{"none", "prometheus,console", "none", "console"},
	} {
		s := mustSettings(t, envMap(envTracesExporter, tc.traces, envMetricsExporter, tc.metrics))
		if s.tracesExporter != tc.wantTraces || s.metricsExporter != tc.wantMetrics {
			t.Errorf("%q, %q: exporters %s, %s; want %s, %s", tc.traces, tc.metrics,
				s.tracesExporter, s.metricsExporter, tc.wantTraces, tc.wantMetrics)
		}
	}
}
