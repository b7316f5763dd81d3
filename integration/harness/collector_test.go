package harness

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestParseSample(t *testing.T) {
	cases := []struct {
		line   string
		ok     bool
		name   string
		labels map[string]string
		value  float64
	}{
		{`otelcol_processor_tail_sampling_new_trace_id_received 5`, true, "otelcol_processor_tail_sampling_new_trace_id_received", map[string]string{}, 5},
		{`otelcol_exporter_sent_spans{exporter="otlp_grpc/traces_backend",data_type="traces"} 21 1700000000000`, true, "otelcol_exporter_sent_spans", map[string]string{"exporter": "otlp_grpc/traces_backend", "data_type": "traces"}, 21},
		{`m{a="x,y",b="q\"uo\\te\n"} 1.5e3`, true, "m", map[string]string{"a": "x,y", "b": "q\"uo\\te\n"}, 1500},
		{`m{le="+Inf"} +Inf`, true, "m", map[string]string{"le": "+Inf"}, posInf()},
		{`# TYPE m counter`, false, "", nil, 0},
		{``, false, "", nil, 0},
		{`m{a="unterminated} 1`, false, "", nil, 0},
		{`m{a=x} 1`, false, "", nil, 0},
		{`m notanumber`, false, "", nil, 0},
	}
	for _, tc := range cases {
		s, ok := parseSample(tc.line)
		if ok != tc.ok {
			t.Errorf("parseSample(%q) ok = %v, want %v", tc.line, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if s.name != tc.name || s.value != tc.value || fmt.Sprint(s.labels) != fmt.Sprint(tc.labels) {
			t.Errorf("parseSample(%q) = %+v, want name %q labels %v value %v", tc.line, s, tc.name, tc.labels, tc.value)
		}
	}
}

func posInf() float64 {
	var zero float64
	return 1 / zero
}

func TestScrapeSum(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `# HELP otelcol_exporter_sent_spans Spans sent.
# TYPE otelcol_exporter_sent_spans counter
otelcol_exporter_sent_spans{exporter="kafka"} 40
otelcol_exporter_sent_spans{exporter="otlp_grpc/traces_backend"} 2
otelcol_exporter_sent_spans_other{exporter="kafka"} 1000
otelcol_exporter_sent_spans{exporter="otlp_grpc/traces_backend",extra="1"} 3
`)
	}))
	defer srv.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		labels map[string]string
		want   float64
		found  bool
	}{
		{nil, 45, true},
		{map[string]string{"exporter": "otlp_grpc/traces_backend"}, 5, true},
		{map[string]string{"exporter": "debug"}, 0, false},
	} {
		got, found, err := ScrapeSum(ctx, srv.URL, "otelcol_exporter_sent_spans", tc.labels)
		if err != nil || got != tc.want || found != tc.found {
			t.Errorf("ScrapeSum(%v) = %v, %v, %v; want %v, %v, nil", tc.labels, got, found, err, tc.want, tc.found)
		}
	}
}
