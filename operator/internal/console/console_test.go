package console

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// A reconcile trace as Jaeger's /api/traces/{id} returns it: a reconcile with a cache read, an
// API call that the API server traced (one span of its own) and a link to its trigger.
const jaegerTraceJSON = `{"traceID":"7602d3297b6bec07d2cebf5b48a72702","processes":{"p1":{"serviceName":"workload-operator"},"p2":{"serviceName":"apiserver"}},
"spans":[
 {"traceID":"7602d3297b6bec07d2cebf5b48a72702","spanID":"c1","operationName":"get Deployment (cache)","processID":"p1","startTime":1000100,"duration":50,
  "references":[{"refType":"CHILD_OF","traceID":"7602d3297b6bec07d2cebf5b48a72702","spanID":"r"}],
  "logs":[{"timestamp":1000120,"fields":[{"key":"event","value":"exception"},{"key":"exception.message","value":"not found"}]}]},
 {"traceID":"7602d3297b6bec07d2cebf5b48a72702","spanID":"a1","operationName":"apiserver PUT","processID":"p2","startTime":1000300,"duration":100,
  "references":[{"refType":"CHILD_OF","traceID":"7602d3297b6bec07d2cebf5b48a72702","spanID":"c2"}]},
 {"traceID":"7602d3297b6bec07d2cebf5b48a72702","spanID":"r","operationName":"reconcile workload","processID":"p1","startTime":1000000,"duration":2000,
  "references":[{"refType":"FOLLOWS_FROM","traceID":"3a1d7e79c79a266c915643d96c4a5106","spanID":"74ff3a8320bf3d64"}],
  "tags":[{"key":"watchtower.object.namespace","value":"default"},{"key":"watchtower.object.name","value":"flaky"},{"key":"watchtower.reconcile.result","value":"error"},
          {"key":"otel.status_code","value":"ERROR"},{"key":"watchtower.trigger.event","value":"update"},{"key":"watchtower.trigger.count","type":"int64","value":3},
          {"key":"watchtower.queue.wait","type":"float64","value":0.002}],
  "logs":[{"timestamp":1001900,"fields":[{"key":"event","value":"k8s.event"},{"key":"watchtower.event.type","value":"Warning"},{"key":"watchtower.event.reason","value":"ReconcileFailed"}]},
          {"timestamp":1001950,"fields":[{"key":"event","value":"exception"},{"key":"exception.message","value":"flaky asks to fail"},{"key":"exception.type","value":"*errors.errorString"}]}]},
 {"traceID":"7602d3297b6bec07d2cebf5b48a72702","spanID":"c2","operationName":"update Workload","processID":"p1","startTime":1000200,"duration":400,
  "references":[{"refType":"CHILD_OF","traceID":"7602d3297b6bec07d2cebf5b48a72702","spanID":"r"}],
  "tags":[{"key":"watchtower.api.source","value":"api_server"}]}
]}`

func TestBuildTraceLaysOutTheWaterfall(t *testing.T) {
	var tr jaegerTrace
	if err := json.Unmarshal([]byte(jaegerTraceJSON), &tr); err != nil {
		t.Fatal(err)
	}
	v := buildTrace(&tr)
	var got []string
	for _, r := range v.Rows {
		got = append(got, strings.Repeat(">", r.Depth)+r.Name+"="+r.Kind)
	}
	want := "reconcile workload=reconcile,>get Deployment (cache)=cache,>update Workload=api_server,>>apiserver PUT=apiserver"
	if strings.Join(got, ",") != want {
		t.Errorf("waterfall %v, want %s (children under their parent, by start)", got, want)
	}
	if v.Object != "default/flaky" || v.Result != "error" || v.Controller != "workload" || v.QueueWait != "2 ms" {
		t.Errorf("summary: object %q result %q controller %q queue wait %q", v.Object, v.Result, v.Controller, v.QueueWait)
	}
	if v.Duration != 2*time.Millisecond || v.Rows[0].Offset != 0 || v.Rows[0].Width != 100 || v.Rows[2].Offset != 10 {
		t.Errorf("geometry: duration %s, reconcile at %.1f%% width %.1f%%, update at %.1f%%", v.Duration, v.Rows[0].Offset, v.Rows[0].Width, v.Rows[2].Offset)
	}
	if v.APICalls != 1 || v.CacheHits != 1 || v.APIServerSpans != 1 {
		t.Errorf("counts: %d API calls, %d cache reads, %d API server spans", v.APICalls, v.CacheHits, v.APIServerSpans)
	}
	if len(v.Links) != 1 || v.Links[0].TraceID != "3a1d7e79c79a266c915643d96c4a5106" || v.Links[0].SameTrace {
		t.Errorf("links %+v", v.Links)
	}
	if strings.Join(v.Triggers, "; ") != "update; 3 triggers coalesced by the work queue" {
		t.Errorf("triggers %q", v.Triggers)
	}
	// The cache read's handled NotFound stays with its span; the reconcile's error is the banner.
	if len(v.Exceptions) != 1 || v.Exceptions[0].Message != "flaky asks to fail" {
		t.Errorf("exceptions %+v", v.Exceptions)
	}
	if len(v.Events) != 1 || v.Events[0].Reason != "ReconcileFailed" {
		t.Errorf("events %+v", v.Events)
	}
}

func TestReconcileRowsCountAPICalls(t *testing.T) {
	var tr jaegerTrace
	if err := json.Unmarshal([]byte(jaegerTraceJSON), &tr); err != nil {
		t.Fatal(err)
	}
	rows := reconcileRows(&tr, "workload-operator")
	if len(rows) != 1 {
		t.Fatalf("%d rows, want the one reconcile", len(rows))
	}
	r := rows[0]
	if r.Controller != "workload" || r.Name != "flaky" || r.Result != "error" || r.APICalls != 1 || r.CacheReads != 1 || r.Duration != 2*time.Millisecond || r.Trigger != "update" {
		t.Errorf("row %+v", r)
	}
	if rows := reconcileRows(&tr, "other-operator"); len(rows) != 0 {
		t.Errorf("a search of another service kept this service's reconcile: %+v", rows)
	}
	q := traceQuery{Operation: "reconcile workload", MinDuration: time.Second}
	if matches(r, reconcileFilter{}, q) {
		t.Error("a 2 ms reconcile matched a search for at least 1 s")
	}
	q = traceQuery{Tags: map[string]string{"watchtower.reconcile.result": "error"}}
	if !matches(r, reconcileFilter{Object: "flaky"}, q) || matches(r, reconcileFilter{Object: "broken"}, q) {
		t.Error("object filter")
	}
}

func TestSearchOpensWhatWasPasted(t *testing.T) {
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ q, want string }{
		{"7602D3297B6BEC07D2CEBF5B48A72702", "/trace/7602d3297b6bec07d2cebf5b48a72702"},
		{`2026-12-03T18:49:54Z INFO slowing down on purpose {"controller": "workload", "trace_id": "7602d3297b6bec07d2cebf5b48a72702", "span_id": "b45ac78a7112dfe0"}`, "/trace/7602d3297b6bec07d2cebf5b48a72702"},
		{"00-b45ac78a7112dfe0b45ac78a7112dfe0-74ff3a8320bf3d64-01", "/trace/b45ac78a7112dfe0b45ac78a7112dfe0"},
		{"default/flaky", "/reconciles?namespace=default&object=flaky&result=any"},
		{"flaky", "/reconciles?object=flaky&result=any"},
		{"", "/reconciles"},
	} {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/search?"+url.Values{"q": {tc.q}}.Encode(), nil))
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != tc.want {
			t.Errorf("search %q: %d to %q, want %s", tc.q, rec.Code, rec.Header().Get("Location"), tc.want)
		}
	}
}

// Without backends, every page renders and says what is not configured, with the flag to set.
func TestPagesSayWhatIsNotConfigured(t *testing.T) {
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/controllers": "-prometheus-url", "/reconciles": "-jaeger-url", "/pipeline": "-prometheus-url",
		"/trace/7602d3297b6bec07d2cebf5b48a72702": "-jaeger-url", "/configure": "Helm values",
	} {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) || !strings.Contains(rec.Body.String(), `<nav aria-label="Pages">`) {
			t.Errorf("%s: %d, want 200 with the whole page and %q", path, rec.Code, want)
		}
		if !strings.HasPrefix(rec.Header().Get("Server-Timing"), "app;dur=") || !strings.Contains(rec.Header().Get("Content-Security-Policy"), "script-src 'none'") {
			t.Errorf("%s: headers %v", path, rec.Header())
		}
	}
}

func TestValidateKnobsNamesTheField(t *testing.T) {
	good := knobs{SlowThreshold: "1s", BaselinePercent: "0.5", DecisionWait: "10s", SpansTopic: "otlp_spans", SpansPartitions: "3", MetricsTopic: "otlp_metrics", MetricsPartitions: "1",
		Receivers: []receiverForm{{Name: "oncall", Type: "Slack", SecretName: "s", SecretKey: "url", Severities: []string{"critical"}}}}
	if errs := validateKnobs(good); len(errs) != 0 {
		t.Fatalf("good knobs refused: %v", errs)
	}
	for _, tc := range []struct {
		change func(*knobs)
		field  string
	}{
		{func(k *knobs) { k.SlowThreshold = "0s" }, "slowThreshold"},
		{func(k *knobs) { k.SlowThreshold = "61m" }, "slowThreshold"},
		{func(k *knobs) { k.DecisionWait = "500ms" }, "decisionWait"},
		{func(k *knobs) { k.DecisionWait = "later" }, "decisionWait"},
		{func(k *knobs) { k.BaselinePercent = "100.5" }, "baselinePercent"},
		{func(k *knobs) { k.BaselinePercent = "-1" }, "baselinePercent"},
		{func(k *knobs) { k.SpansTopic = "spans topic" }, "spansTopic"},
		{func(k *knobs) { k.MetricsTopic = "otlp_spans" }, "metricsTopic"},
		{func(k *knobs) { k.SpansPartitions = "0" }, "spansPartitions"},
		{func(k *knobs) { k.MetricsPartitions = "x" }, "metricsPartitions"},
		{func(k *knobs) { k.Receivers[0].Name = "On Call" }, "r0.name"},
		{func(k *knobs) { k.Receivers[0].Type = "Pager" }, "r0.type"},
		{func(k *knobs) { k.Receivers[0].SecretName = "" }, "r0.secretName"},
		{func(k *knobs) { k.Receivers[0].Type, k.Receivers[0].Channel = "Webhook", "#ops" }, "r0.channel"},
		{func(k *knobs) { k.Receivers = append(k.Receivers, k.Receivers[0]) }, "r1.name"},
	} {
		k := good
		k.Receivers = append([]receiverForm(nil), good.Receivers...)
		tc.change(&k)
		errs := validateKnobs(k)
		if errs[tc.field] == "" || len(errs) != 1 {
			t.Errorf("%+v: errors %v, want one on %s", k, errs, tc.field)
		}
	}
}

func TestAPIFieldErrorsGoNextToTheirInput(t *testing.T) {
	err := apierrors.NewInvalid(schema.GroupKind{Group: "observability.gowatchtower.io", Kind: "Watchtower"}, "demo", field.ErrorList{
		field.Invalid(field.NewPath("spec", "sampling", "decisionWait"), "10m", "spec.sampling.decisionWait must be between 1s and 5m"),
		field.Invalid(field.NewPath("spec", "alerting", "receivers").Index(1).Child("urlSecret", "key"), "", "key is required"),
		field.Invalid(field.NewPath("spec", "sampler", "replicas"), 4, "spec.sampler.replicas may not exceed spec.kafka.topics.spans.partitions"),
		field.Invalid(field.NewPath("spec", "gateway", "replicas"), 2, "needs the sampler"),
	})
	got := apiFieldErrors(err)
	for k, want := range map[string]string{
		"decisionWait":    "must be between 1s and 5m",
		"r1.secretKey":    "key is required",
		"spansPartitions": "may not exceed",
		"":                "spec.gateway.replicas: ",
	} {
		if !strings.Contains(got[k], want) {
			t.Errorf("%q: %q, want %q (all: %v)", k, got[k], want, got)
		}
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{fmtDuration(1500 * time.Millisecond), "1.5 s"}, {fmtDuration(315 * time.Microsecond), "315 µs"},
		{fmtDuration(2500 * time.Microsecond), "2.5 ms"}, {fmtSeconds(math.NaN()), "–"},
		{fmtPercent(1.0 / 3), "33 %"}, {fmtPercent(0.0004), "<0.1 %"}, {fmtPercent(0), "0 %"},
		{fmtRate(1.53), "1.5/s"}, {fmtNumber(268435456), "268.4M"}, {fmtBytes(100 << 20), "100.0 MiB"},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
	if s := string(sparkline("rate", []point{{V: 1}, {V: math.NaN()}, {V: 3}})); !strings.Contains(s, `aria-label="rate"`) || !strings.Contains(s, "M0.0 ") {
		t.Errorf("sparkline %s", s)
	}
	if s := string(sparkline("rate", []point{{V: 1}})); !strings.Contains(s, "no data") {
		t.Errorf("one point: %s", s)
	}
}
