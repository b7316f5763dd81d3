package sdk

import (
	"strings"
	"testing"
)

// fuzzedVariables are the OTEL_* variables the SDK reads (docs/sdk.md's table).
var fuzzedVariables = []string{
	"OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
	"OTEL_LOGS_EXPORTER", "OTEL_PROPAGATORS", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
	"OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT", "OTEL_METRICS_EXEMPLAR_FILTER",
	"OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
	"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
	"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
	"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
	"OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
	"OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
	"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_METRICS_INSECURE",
	"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY",
	"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
}

// FuzzEnvironment sets two of the SDK's variables to arbitrary values. Whatever they are, reading
// the environment never panics; a refusal names a variable that was set; and a refusal of a
// headers variable never shows a header's value (it may be a secret). `go test` runs the seeds;
// `go test -fuzz=FuzzEnvironment -fuzztime=60s ./sdk` explores.
func FuzzEnvironment(f *testing.F) {
	seeds := []struct {
		i     uint8
		value string
	}{
		{0, "yes"}, {2, "team=%zz,tier"}, {2, "=,=,="}, {3, "otlp,zipkin,,"}, {6, "tracecontext,b3multi,\x00"},
		{7, "traceidratio"}, {8, "NaN"}, {8, "1e309"}, {9, "-1"}, {9, "99999999999999999999"}, {12, "0"},
		{24, "http://[::1"}, {24, "http://user:secret@collector:4318"}, {27, "http/json"},
		{30, "api-key"}, {30, "a=1,bad key=supersecretvalue"}, {30, "k=%zzsupersecret"}, {31, "authorization=Bearer abc,\xff=1"},
		{42, "/nonexistent/ca.pem"}, {44, "/etc/passwd"}, {45, "cumulative,delta"}, {46, "exponential"},
	}
	for _, s := range seeds {
		f.Add(s.i, s.value, uint8(7), "parentbased_traceidratio")
	}
	f.Fuzz(func(t *testing.T, i uint8, value string, j uint8, value2 string) {
		a, b := fuzzedVariables[int(i)%len(fuzzedVariables)], fuzzedVariables[int(j)%len(fuzzedVariables)]
		env := map[string]string{a: value}
		if b != a {
			env[b] = value2
		}
		_, err := newSettings(func(k string) string { return env[k] }, nil)
		if err == nil {
			return
		}
		msg := err.Error()
		if !strings.Contains(msg, a) && !strings.Contains(msg, b) {
			t.Errorf("%s=%q %s=%q: the error does not name either variable: %v", a, value, b, value2, err)
		}
		for k, v := range env {
			if !strings.HasSuffix(k, "_HEADERS") {
				continue
			}
			for _, entry := range strings.Split(v, ",") {
				if _, secret, ok := strings.Cut(entry, "="); ok && len(strings.TrimSpace(secret)) >= 6 && strings.Contains(msg, strings.TrimSpace(secret)) {
					t.Errorf("%s=%q: the error shows the header value %q: %v", k, v, secret, err)
				}
			}
		}
	})
}
