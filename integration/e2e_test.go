package integration

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/integration/harness"
)

// startGateway starts the built otelcol-watchtower with deploy/collector/gateway.yaml, exporting
// to kafka and to tracesEndpoint, with extra NAME=value environment.
func startGateway(t *testing.T, kafka *harness.Kafka, tracesEndpoint string, env ...string) *harness.Collector {
	t.Helper()
	vars := map[string]string{"WATCHTOWER_KAFKA_BROKERS": kafka.Bootstrap, "WATCHTOWER_TRACES_ENDPOINT": tracesEndpoint}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	return harness.StartCollector(t, "otelcol-watchtower", "deploy/collector/gateway.yaml", vars)
}

// kafkaSpan is one span read back from Kafka, with where it was found.
type kafkaSpan struct {
	service   string
	partition int32
	span      ptrace.Span
}

func (s kafkaSpan) attr(key string) string {
	v, ok := s.span.Attributes().Get(key)
	if !ok {
		return ""
	}
	return v.AsString()
}

// readSpans decodes every record of the spans topic (OTLP protobuf) up to its current end.
func readSpans(t *testing.T, ctx context.Context, kafka *harness.Kafka, topic string) []kafkaSpan {
	t.Helper()
	recs, err := kafka.ReadAllRecords(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []kafkaSpan
	var u ptrace.ProtoUnmarshaler
	for _, rec := range recs {
		td, err := u.UnmarshalTraces(rec.Value)
		if err != nil {
			t.Fatalf("record at partition %d offset %d is not OTLP protobuf traces: %v", rec.Partition, rec.Offset, err)
		}
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			rs := td.ResourceSpans().At(i)
			svc, _ := rs.Resource().Attributes().Get("service.name")
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				ss := rs.ScopeSpans().At(j)
				for k := 0; k < ss.Spans().Len(); k++ {
					out = append(out, kafkaSpan{service: svc.AsString(), partition: rec.Partition, span: ss.Spans().At(k)})
				}
			}
		}
	}
	return out
}

// TestEndToEnd is what a user of GoWatchtower checks: the example operator, instrumented as
// documented, reconciles fast, slow and failing Workloads on a real API server; its telemetry
// goes through otelcol-watchtower (gateway.yaml) to Kafka (everything), Prometheus (metrics)
// and Jaeger (only the slow and failed reconciles).
func TestEndToEnd(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	const slowThreshold = 1000 * time.Millisecond
	testStart := time.Now()
	kube, c := startKubeWithWorkloadCRD(t)
	kafka := harness.StartKafka(t)
	kafka.CreateTopic(t, "otlp_spans", 3)
	kafka.CreateTopic(t, "otlp_metrics", 1)
	jaeger := harness.StartJaeger(t)
	gw := startGateway(t, kafka, jaeger.OTLPGRPC,
		"WATCHTOWER_SLOW_THRESHOLD_MS="+fmt.Sprint(slowThreshold.Milliseconds()),
		"WATCHTOWER_SAMPLING_BASELINE_PERCENT=0", // fast successful reconciles must not reach Jaeger at all
		"WATCHTOWER_SAMPLING_DECISION_WAIT=3s",
		"WATCHTOWER_SPANMETRICS_FLUSH_INTERVAL=1s",
	)
	metricsURL, op := startOperator(t, kube,
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+gw.OTLPHTTP,
		"OTEL_METRIC_EXPORT_INTERVAL=1000",
		"POD_NAME=workload-operator-e2e", "POD_NAMESPACE=default")
	prom := harness.StartPrometheus(t,
		harness.WithScrapeTarget("otelcol-watchtower", gw.Prometheus, "/metrics"),
		harness.WithScrapeTarget("workload-operator", strings.TrimSuffix(strings.TrimPrefix(metricsURL, "http://"), "/metrics"), "/metrics"))
	ctx := ctxTimeout(t, 4*time.Minute)

	workloads := map[string]demov1alpha1.WorkloadSpec{
		"fast-nginx":  {Type: demov1alpha1.Nginx, Replicas: ptr.To[int32](2)},
		"fast-cpu":    {Type: demov1alpha1.StressCPU},
		"slow-memory": {Type: demov1alpha1.MemoryLoad, ReconcileDelay: "1200ms"},
		"flaky":       {Type: demov1alpha1.Nginx, FailWith: demov1alpha1.FailTransient},
		"broken":      {Type: demov1alpha1.StressCPU, FailWith: demov1alpha1.FailTerminal},
	}
	// slow-memory is applied as `kubectl apply` with the KEP-5915 annotation would: a writer's
	// span context, which starts a chain of links (docs/causality.md).
	writerTrace, writerSpan := "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for name, spec := range workloads {
		w := &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: spec}
		if name == "slow-memory" {
			w.Annotations = map[string]string{otelctrl.TraceparentAnnotation: "00-" + writerTrace + "-" + writerSpan + "-01"}
		}
		if err := c.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	waitReconciled(t, ctx, c, len(workloads))
	// Deleting goes through the finalizer path; deleting the failing ones also ends their retries.
	for _, name := range []string{"fast-cpu", "flaky", "broken"} {
		if err := c.Delete(ctx, &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, "the deleted Workloads to be gone", func() (bool, error) {
		var list demov1alpha1.WorkloadList
		err := c.List(ctx, &list)
		return err == nil && len(list.Items) == 2, err
	})
	events, err := eventReasonsByObject(ctx, c)
	if err != nil {
		t.Fatal(err)
	}

	// Prometheus, scraping the operator: our reconcile count equals controller-runtime's own.
	if _, err := prom.WaitForQuery(ctx,
		`sum(watchtower_reconciles_total{job="workload-operator",watchtower_controller_name="workload"}) == sum(controller_runtime_reconcile_total{job="workload-operator",controller="workload"}) and sum(watchtower_reconciles_total{job="workload-operator"}) > 0`,
		func(s []harness.Sample) bool { return len(s) == 1 }); err != nil {
		t.Errorf("watchtower_reconciles_total must equal controller_runtime_reconcile_total on the operator's /metrics: %v", err)
	}

	// Stop the operator: its SDK flushes every span and then the final metrics on the way out.
	if err := op.Stop(); err != nil {
		t.Fatal(err)
	}
	if op.Killed() {
		t.Fatalf("the operator needed SIGKILL to stop:\n%s", op.LogTail(4096))
	}
	stopped := time.Now()

	// Prometheus, through the collector: reconcile metrics per controller and result, queue wait,
	// API calls, and the operator's exported-span counter (its final value, pushed at shutdown).
	for q, want := range map[string]int{
		`count by (watchtower_reconcile_result) (watchtower_reconciles_total{job="otelcol-watchtower",exported_job="workload-operator",watchtower_controller_name="workload"})`: 3, // success, error, terminal_error
		`sum(watchtower_reconcile_duration_seconds_bucket{job="otelcol-watchtower",exported_job="workload-operator",le="+Inf"})`:                                                1,
		`sum(watchtower_queue_wait_seconds_count{job="otelcol-watchtower",exported_job="workload-operator"})`:                                                                   1,
		`count(watchtower_api_cache_reads_total{job="otelcol-watchtower",exported_job="workload-operator",watchtower_api_kind="Workload"})`:                                     1,
		`count(watchtower_api_duration_seconds_count{job="otelcol-watchtower",exported_job="workload-operator",watchtower_api_verb="update"})`:                                  1,
	} {
		q, want := q, want
		if _, err := prom.WaitForQuery(ctx, q, func(s []harness.Sample) bool { return len(s) >= want }); err != nil {
			t.Errorf("Prometheus (via the collector): %v", err)
		}
	}
	// The operator's final push returned before it exited, and metrics pass no batch processor
	// in the gateway, so a scrape that began after the exit sees the final values: wait for
	// one, then read them once.
	if _, err := prom.WaitForQuery(ctx, `timestamp(up{job="otelcol-watchtower"})`, func(s []harness.Sample) bool {
		return len(s) == 1 && s[0].Value > float64(stopped.UnixMilli())/1000
	}); err != nil {
		t.Fatalf("no scrape of the collector after the operator stopped: %v", err)
	}
	exported, err := prom.Query(ctx, `sum(watchtower_telemetry_exported_total{job="otelcol-watchtower",exported_job="workload-operator",watchtower_telemetry_signal="traces"})`)
	if err != nil || len(exported) != 1 || exported[0].Value <= 0 {
		t.Fatalf("the operator's exported-span counter in Prometheus: %v %v", exported, err)
	}
	exportedSpans := int(exported[0].Value)

	// Kafka holds every span the operator exported — exactly — as OTLP protobuf, each trace in
	// one partition.
	var spans []kafkaSpan
	waitFor(t, ctx, fmt.Sprintf("Kafka to hold the %d spans the operator exported", exportedSpans), func() (bool, error) {
		spans = readSpans(t, ctx, kafka, "otlp_spans")
		n := 0
		for _, s := range spans {
			if s.service == "workload-operator" {
				n++
			}
		}
		if n > exportedSpans {
			return false, fmt.Errorf("Kafka has %d operator spans, more than the %d exported", n, exportedSpans)
		}
		return n == exportedSpans, nil
	})
	partitionOf := map[pcommon.TraceID]int32{}
	byTrace := map[pcommon.TraceID][]kafkaSpan{}
	for _, s := range spans {
		tid := s.span.TraceID()
		if p, ok := partitionOf[tid]; ok && p != s.partition {
			t.Errorf("trace %s is split over partitions %d and %d", tid, p, s.partition)
		}
		partitionOf[tid] = s.partition
		byTrace[tid] = append(byTrace[tid], s)
	}

	// Which reconciles the tail sampler must keep: the slow ones and the failed ones.
	want := map[string]string{} // trace ID -> object
	var roots []kafkaSpan
	for _, s := range spans {
		if s.span.Name() != "reconcile workload" {
			continue
		}
		roots = append(roots, s)
		d := s.span.EndTimestamp().AsTime().Sub(s.span.StartTimestamp().AsTime())
		if d >= slowThreshold || s.span.Status().Code() == ptrace.StatusCodeError {
			want[s.span.TraceID().String()] = s.attr("watchtower.object.name")
		}
	}
	if len(want) == 0 {
		t.Fatal("no slow or failed reconcile in Kafka")
	}
	// The reconcile metrics the collector exports count exactly the reconciles traced, per result.
	byResult := map[string]float64{}
	for _, r := range roots {
		byResult[r.attr("watchtower.reconcile.result")]++
	}
	final, err := prom.Query(ctx, `sum by (watchtower_reconcile_result) (watchtower_reconciles_total{job="otelcol-watchtower",exported_job="workload-operator",watchtower_controller_name="workload"})`)
	if err != nil {
		t.Fatal(err)
	}
	gotByResult := map[string]float64{}
	for _, s := range final {
		gotByResult[s.Metric["watchtower_reconcile_result"]] = s.Value
	}
	if fmt.Sprint(gotByResult) != fmt.Sprint(byResult) {
		t.Errorf("watchtower_reconciles_total by result via the collector is %v, the reconcile spans in Kafka %v", gotByResult, byResult)
	}
	if d, err := prom.Query(ctx, `sum(watchtower_reconcile_duration_seconds_count{job="otelcol-watchtower",exported_job="workload-operator",watchtower_controller_name="workload"})`); err != nil || len(d) != 1 || int(d[0].Value) != len(roots) {
		t.Errorf("watchtower_reconcile_duration_seconds_count via the collector is %v (%v), want the %d reconciles in Kafka", d, err, len(roots))
	}

	// Every Kubernetes Event the operator emitted is a span event of the reconcile of its object.
	spanEvents := map[string]bool{} // object/reason
	for _, r := range roots {
		for i := 0; i < r.span.Events().Len(); i++ {
			e := r.span.Events().At(i)
			if reason, ok := e.Attributes().Get("watchtower.event.reason"); ok && e.Name() == "k8s.event" {
				spanEvents[r.attr("watchtower.object.name")+"/"+reason.AsString()] = true
			}
		}
	}
	if len(events) == 0 {
		t.Fatal("the operator emitted no Events")
	}
	for _, ev := range events {
		if !spanEvents[ev] {
			t.Errorf("Event %s is not a span event of any reconcile (span events: %v)", ev, keys(spanEvents))
		}
	}

	// Deleting a Workload is traced through the finalizer path.
	deletion := false
	for _, r := range roots {
		if r.attr("watchtower.object.name") != "fast-cpu" || !spanEvents["fast-cpu/CleanedUp"] {
			continue
		}
		for _, s := range byTrace[r.span.TraceID()] {
			if s.span.Name() == "delete Deployment" && s.span.ParentSpanID() == r.span.SpanID() {
				deletion = true
			}
		}
	}
	if !deletion {
		t.Error("no reconcile of fast-cpu with a delete Deployment child span and a CleanedUp event in Kafka")
	}

	// Jaeger holds exactly the slow and failed reconciles, each whole, and none of the fast
	// successful ones (baseline 0).
	var got map[string]harness.JaegerTrace
	waitFor(t, ctx, fmt.Sprintf("Jaeger to hold the %d slow or failed reconcile traces", len(want)), func() (bool, error) {
		traces, err := jaeger.FindTraces(ctx, harness.TraceQuery{Service: "workload-operator", Limit: 1000})
		if err != nil {
			return false, err
		}
		got = map[string]harness.JaegerTrace{}
		for _, tr := range traces {
			got[tr.TraceID] = tr
		}
		return len(got) >= len(want), nil
	})
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("Jaeger has trace %s, which is neither slow nor failed (baseline 0)", id)
		}
	}
	slowSeen, failedSeen := false, false
	for id, object := range want {
		tr, ok := got[id]
		if !ok {
			t.Errorf("Jaeger lacks the trace %s of a slow or failed reconcile of %s", id, object)
			continue
		}
		var tid pcommon.TraceID
		if b, err := hex.DecodeString(id); err != nil || copy(tid[:], b) != len(tid) {
			t.Fatalf("bad trace ID %q", id)
		}
		if len(tr.Spans) != len(byTrace[tid]) {
			t.Errorf("trace %s: Jaeger has %d spans, Kafka %d: the trace must arrive whole", id, len(tr.Spans), len(byTrace[tid]))
		}
		var root harness.JaegerSpan
		children := map[string]harness.JaegerSpan{}
		for _, s := range tr.Spans {
			if s.OperationName == "reconcile workload" {
				root = s
			}
		}
		for _, s := range tr.Spans {
			if s.ParentSpanID() == root.SpanID {
				children[s.OperationName] = s
			}
		}
		if v, _ := root.Tag("watchtower.object.name"); v != object {
			t.Errorf("trace %s: root span names object %v, want %s", id, v, object)
		}
		if _, ok := children["get Workload (cache)"]; !ok {
			t.Errorf("trace %s: no get Workload child served from the cache; children %v", id, keys(children))
		}
		switch object {
		case "slow-memory":
			slowSeen = true
			if root.Duration < slowThreshold.Microseconds() {
				t.Errorf("trace %s of slow-memory lasted %dµs", id, root.Duration)
			}
		case "flaky", "broken":
			failedSeen = true
			if v, _ := root.Tag("error"); v != true {
				t.Errorf("trace %s of %s: root span is not marked as an error (tags %v)", id, object, root.Tags)
			}
			if len(root.Logs) == 0 {
				t.Errorf("trace %s of %s: the error is not recorded as an event", id, object)
			}
		}
	}
	if !slowSeen || !failedSeen {
		t.Errorf("want at least one slow and one failed reconcile in Jaeger, got slow=%v failed=%v", slowSeen, failedSeen)
	}

	// The chain: the user's write → the Workload reconcile that created the Deployment (linked
	// to the writer) → the second controller's reconcile of that Deployment (linked to the
	// Workload reconcile, through the annotation its write carried). All of it is in Kafka; the
	// slow Workload reconcile is in Jaeger with its link as a reference.
	var creator, rollout *kafkaSpan
	for i, sp := range spans {
		switch {
		case sp.span.Name() == "reconcile workload" && sp.attr("watchtower.object.name") == "slow-memory":
			for _, child := range byTrace[sp.span.TraceID()] {
				if child.span.Name() == "create Deployment" && child.span.ParentSpanID() == sp.span.SpanID() {
					creator = &spans[i]
				}
			}
		}
	}
	if creator == nil {
		t.Fatal("no reconcile of slow-memory created its Deployment")
	}
	linksTo := func(sp ptrace.Span, traceID, spanID string) bool {
		for i := 0; i < sp.Links().Len(); i++ {
			if l := sp.Links().At(i); l.TraceID().String() == traceID && l.SpanID().String() == spanID {
				return true
			}
		}
		return false
	}
	if !linksTo(creator.span, writerTrace, writerSpan) {
		t.Errorf("the reconcile that created slow-memory's Deployment does not link to the writer's span %s/%s", writerTrace, writerSpan)
	}
	for i, sp := range spans {
		if sp.span.Name() == "reconcile workload-rollout" && sp.attr("watchtower.object.name") == "slow-memory" &&
			linksTo(sp.span, creator.span.TraceID().String(), creator.span.SpanID().String()) {
			rollout = &spans[i]
		}
	}
	if rollout == nil {
		t.Errorf("no reconcile of the second controller (workload-rollout) links to the Workload reconcile %s that wrote the Deployment", creator.span.SpanID())
	}
	if tr, ok := got[creator.span.TraceID().String()]; !ok {
		t.Errorf("the slow reconcile of slow-memory (trace %s) is not in Jaeger", creator.span.TraceID())
	} else {
		var refs []harness.JaegerReference
		for _, sp := range tr.Spans {
			if sp.SpanID == creator.span.SpanID().String() {
				refs = sp.References
			}
		}
		if !slices.ContainsFunc(refs, func(r harness.JaegerReference) bool { return r.TraceID == writerTrace && r.SpanID == writerSpan }) {
			t.Errorf("in Jaeger the slow-memory reconcile's references are %+v, want one to the writer %s/%s", refs, writerTrace, writerSpan)
		}
		b, _ := json.Marshal(refs)
		t.Logf("e2e: chain: writer %s/%s ← reconcile workload %s (Jaeger references %s) ← reconcile workload-rollout %v",
			writerTrace, writerSpan, creator.span.SpanID(), b, rollout != nil)
	}

	// Exemplars, end to end: the SDK keeps a sampled reconcile's trace ID with its histogram
	// measurement, OTLP carries it, the collector's Prometheus exporter serves it (OpenMetrics)
	// and Prometheus stores it. A failed reconcile's exemplar is a trace Jaeger has (the tail
	// sampler keeps every error); an API call's is the trace of a reconcile in Kafka.
	kafkaTraces := map[string]bool{}
	for id := range byTrace {
		kafkaTraces[id.String()] = true
	}
	exemplarTraces := func(what, promql string) []string {
		t.Helper()
		var ids []string
		waitFor(t, ctx, "exemplars of "+what, func() (bool, error) {
			ex, err := prom.QueryExemplars(ctx, promql, testStart, time.Now())
			ids = nil
			for _, e := range ex {
				if id := e.Labels["trace_id"]; id != "" {
					ids = append(ids, id)
				}
			}
			return len(ids) > 0, fmt.Errorf("%d exemplars with a trace_id (%v)", len(ids), err)
		})
		return ids
	}
	failedIDs := exemplarTraces("failed reconciles", `watchtower_reconcile_duration_seconds_bucket{job="otelcol-watchtower", watchtower_reconcile_result=~"error|terminal_error"}`)
	for _, id := range failedIDs {
		if _, ok := want[id]; !ok {
			t.Errorf("exemplar trace %s of a failed reconcile is not one of the failed or slow reconciles in Kafka", id)
		} else if _, ok := got[id]; !ok {
			t.Errorf("exemplar trace %s of a failed reconcile is not in Jaeger", id)
		}
	}
	apiIDs := exemplarTraces("API-server calls", `watchtower_api_duration_seconds_bucket{job="otelcol-watchtower"}`)
	for _, id := range apiIDs {
		if !kafkaTraces[id] {
			t.Errorf("exemplar trace %s of an API call is no reconcile trace in Kafka", id)
		}
	}
	// The manager's own /metrics (controller-runtime's handler) speaks the text format only:
	// no exemplars there (docs/causality.md).
	if ex, err := prom.QueryExemplars(ctx, `watchtower_reconcile_duration_seconds_bucket{job="workload-operator"}`, testStart, time.Now()); err != nil || len(ex) != 0 {
		t.Errorf("exemplars from the manager's /metrics: %d (%v), want none: controller-runtime's handler does not negotiate OpenMetrics", len(ex), err)
	}
	t.Logf("e2e: exemplars: %d failed-reconcile traces (all in Jaeger), %d API-call traces (all in Kafka)", len(failedIDs), len(apiIDs))
	t.Logf("e2e: %d operator spans exported = %d in Kafka; %d reconciles, %d slow or failed kept in Jaeger; %d Events as span events",
		exportedSpans, exportedSpans, len(roots), len(want), len(events))
}

// eventReasonsByObject lists "object/reason" for every Event the operator reported in the
// default namespace.
func eventReasonsByObject(ctx context.Context, c client.Client) ([]string, error) {
	var list corev1.EventList
	if err := c.List(ctx, &list, client.InNamespace("default")); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, e := range list.Items {
		// The operator's Events only: the API server reports on its own objects in the same
		// namespace now and then (ClusterIPNotAllocated for the kubernetes Service).
		if e.ReportingController != "workload-operator" && e.Source.Component != "workload-operator" {
			continue
		}
		seen[e.InvolvedObject.Name+"/"+e.Reason] = true
	}
	return keys(seen), nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// waitReconciled waits until n Workloads report a Reconciled condition for their generation.
func waitReconciled(t *testing.T, ctx context.Context, c client.Client, n int) {
	t.Helper()
	waitFor(t, ctx, "every Workload to report its Reconciled condition", func() (bool, error) {
		var list demov1alpha1.WorkloadList
		if err := c.List(ctx, &list); err != nil {
			return false, err
		}
		done := 0
		for _, w := range list.Items {
			for _, cond := range w.Status.Conditions {
				if cond.Type == "Reconciled" && cond.ObservedGeneration == w.Generation {
					done++
				}
			}
		}
		return done == n, nil
	})
}
