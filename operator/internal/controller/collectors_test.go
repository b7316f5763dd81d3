package controller

import (
	"strings"
	"testing"
)

func TestSumSamples(t *testing.T) {
	body := `# HELP otelcol_receiver_accepted_spans Number of spans successfully pushed into the pipeline.
# TYPE otelcol_receiver_accepted_spans counter
otelcol_receiver_accepted_spans{receiver="otlp",transport="grpc"} 1200
otelcol_receiver_accepted_spans{receiver="otlp",transport="http"} 34 1733220000000
otelcol_receiver_accepted_spans_bytes{receiver="otlp"} 999999
otelcol_receiver_refused_spans{receiver="otlp",transport="grpc",note="a } in a value"} 5
otelcol_exporter_send_failed_spans{exporter="kafka"} 7
otelcol_exporter_send_failed_spans{exporter="otlp_grpc/traces"} 1e+01
otelcol_exporter_sent_spans{exporter="kafka"} 1234
`
	got := sumSamples(strings.NewReader(body), metricAccepted, metricRefused, metricSendFailed)
	want := map[string]float64{metricAccepted: 1234, metricRefused: 5, metricSendFailed: 17}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}
