package sdk

import (
	"strings"
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
	if s.traces.protocol != ProtocolHTTPProtobuf || s.metrics.protocol != ProtocolHTTPProtobuf {
		t.Errorf("protocols = %q, %q; want http/protobuf", s.traces.protocol, s.metrics.protocol)
	}
	if got, want := s.sampler.Description(), sdktrace.ParentBased(sdktrace.AlwaysSample()).Description(); got != want {
		t.Errorf("sampler = %s; want %s", got, want)
	}
	if s.metricInterval != 10*time.Second {
		t.Errorf("metric interval = %s; want 10s", s.metricInterval)
	}
	if s.queueSize != 2048 || s.maxBatch != 512 {
		t.Errorf("queue, batch = %d, %d; want 2048, 512", s.queueSize, s.maxBatch)
	}
	if s.promRegisterer != metrics.Registry || s.promGatherer != metrics.Registry {
		t.Error("the Prometheus registerer and gatherer must default to controller-runtime's metrics.Registry")
	}
}

func TestServiceNamePrecedence(t *testing.T) {
	const attrs = "service.name=from-attributes,team=platform"
	for _, tc := range []struct {
		name string
		env  func(string) string
		opts []Option
		want string // empty: no service.name from config, the executable name applies
	}{
		{"executable", envMap(), nil, ""},
		{"resource attributes", envMap(envResourceAttributes, attrs), nil, "from-attributes"},
		{"OTEL_SERVICE_NAME", envMap(envResourceAttributes, attrs, envServiceName, "from-env"), nil, "from-env"},
		{"option", envMap(envResourceAttributes, attrs, envServiceName, "from-env"), []Option{WithServiceName("from-option")}, "from-option"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSettings(t, tc.env, tc.opts...)
			got := s.serviceName
			if got == "" {
				got, _ = attrValue(s.envAttrs, "service.name")
			}
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
		if got, want := s.sampler.Description(), tc.want.Description(); got != want {
			t.Errorf("%s=%q %s=%q: sampler %s; want %s", envTracesSampler, tc.name, envTracesSamplerArg, tc.arg, got, want)
		}
	}
	// The option wins, and an environment it overrides is not even validated.
	s := mustSettings(t, envMap(envTracesSampler, "bogus"), WithSampler(sdktrace.NeverSample()))
	if s.sampler.Description() != sdktrace.NeverSample().Description() {
		t.Errorf("WithSampler did not win over %s", envTracesSampler)
	}
}

func TestProtocolPrecedence(t *testing.T) {
	const general, traces = "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	for _, tc := range []struct {
		name                string
		env                 func(string) string
		opts                []Option
		wantTraces, wantMet string
	}{
		{"default", envMap(), nil, "http/protobuf", "http/protobuf"},
		{"general grpc", envMap(general, "grpc"), nil, "grpc", "grpc"},
		{"general", envMap(general, "http/protobuf"), nil, "http/protobuf", "http/protobuf"},
		{"per-signal", envMap(general, "http/protobuf", traces, "grpc"), nil, "grpc", "http/protobuf"},
		{"option", envMap(general, "grpc", traces, "grpc"), []Option{WithProtocol("http/protobuf")}, "http/protobuf", "http/protobuf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSettings(t, tc.env, tc.opts...)
			if s.traces.protocol != tc.wantTraces || s.metrics.protocol != tc.wantMet {
				t.Errorf("traces, metrics = %q, %q; want %q, %q", s.traces.protocol, s.metrics.protocol, tc.wantTraces, tc.wantMet)
			}
		})
	}
}

func TestMetricIntervalPrecedence(t *testing.T) {
	if s := mustSettings(t, envMap(envMetricInterval, "2500")); s.metricInterval != 2500*time.Millisecond {
		t.Errorf("from env: %s; want 2.5s", s.metricInterval)
	}
	if s := mustSettings(t, envMap(envMetricInterval, "2500"), WithMetricExportInterval(time.Minute)); s.metricInterval != time.Minute {
		t.Errorf("option: %s; want 1m", s.metricInterval)
	}
}

func TestQueueSizeCapsBatch(t *testing.T) {
	s := mustSettings(t, envMap(), WithQueueSize(100))
	if s.queueSize != 100 || s.maxBatch != 100 {
		t.Errorf("queue, batch = %d, %d; want 100, 100", s.queueSize, s.maxBatch)
	}
}

func TestOptionsOverrideEnv(t *testing.T) {
	bad := envMap(
		"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317",
		"OTEL_EXPORTER_OTLP_HEADERS", "garbage",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json",
	)
	// Options replace each bad variable, so none of them is an error.
	s := mustSettings(t, bad,
		WithEndpoint("http://collector:4317"), WithHeaders(map[string]string{"a": "b"}), WithProtocol("grpc"), WithInsecure())
	for _, o := range []otlpSettings{s.traces, s.metrics} {
		if o.endpoint != "http://collector:4317" || o.headers["a"] != "b" || o.protocol != "grpc" || !o.insecure {
			t.Errorf("otlp settings = %+v; want the options' values", o)
		}
	}
	// Replacing the exporters means the OTLP variables are not used, hence not validated.
	mustSettings(t, bad, WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{}))
}

func TestPrometheusOptions(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := mustSettings(t, envMap(), WithPrometheusRegisterer(reg), WithPrometheusGatherer(nil))
	if s.promRegisterer != reg || s.promGatherer != nil {
		t.Errorf("registerer, gatherer = %v, %v; want the given registry and nil", s.promRegisterer, s.promGatherer)
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
		{nil, []Option{WithProtocol("http/json")}, `WithProtocol("http/json"): http/json is not supported; use "grpc" or "http/protobuf"`},
		{nil, []Option{WithEndpoint("collector:4317")}, `WithEndpoint("collector:4317"): must be a URL with scheme http or https`},
		{nil, []Option{WithServiceName(" ")}, `WithServiceName(""): must not be empty`},
		{nil, []Option{WithQueueSize(0)}, `WithQueueSize(0): must be positive`},
		{nil, []Option{WithMetricExportInterval(-time.Second)}, `WithMetricExportInterval(-1s): must be positive`},
		{nil, []Option{WithSampler(nil)}, `WithSampler(nil): a sampler is required`},
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
	), []Option{WithQueueSize(-1)})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"OTEL_TRACES_SAMPLER_ARG", "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_EXPORTER_OTLP_PROTOCOL", "WithQueueSize"} {
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
