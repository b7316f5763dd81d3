// The gateway end to end: an operator's traces and metrics go through otelcol-watchtower
// running deploy/collector/gateway.yaml into a real Apache Kafka, a real Prometheus and a real
// Jaeger, and each is asked what it received.
package integration

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gowatchtower/watchtower/integration/harness"
	"github.com/gowatchtower/watchtower/semconv"
)

// Prometheus names of the span metrics the gateway derives (span_metrics connector, namespace
// traces.span.metrics, histogram unit seconds).
const (
	colSpanMetricsCalls     = "traces_span_metrics_calls_total"
	colSpanMetricsDuration  = "traces_span_metrics_duration_seconds"
	colSpanMetricsCallsOTel = "traces.span.metrics.calls"
)

func TestCollectorGatewayEndToEnd(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kafka := harness.StartKafka(t)
	jaeger := harness.StartJaeger(t)
	const spansTopic, metricsTopic, partitions = "watchtower-e2e-spans", "watchtower-e2e-metrics", 4
	kafka.CreateTopic(t, spansTopic, partitions)
	kafka.CreateTopic(t, metricsTopic, 2)

	gw := harness.StartCollector(t, "otelcol-gateway", "deploy/collector/gateway.yaml", map[string]string{
		"WATCHTOWER_KAFKA_BROKERS":              kafka.Bootstrap,
		"WATCHTOWER_KAFKA_SPANS_TOPIC":          spansTopic,
		"WATCHTOWER_KAFKA_METRICS_TOPIC":        metricsTopic,
		"WATCHTOWER_TRACES_ENDPOINT":            jaeger.OTLPGRPC,
		"WATCHTOWER_SLOW_THRESHOLD_MS":          fmt.Sprint(colSlowThreshold.Milliseconds()),
		"WATCHTOWER_SAMPLING_BASELINE_PERCENT":  "0", // so that no fast successful trace may be kept
		"WATCHTOWER_SAMPLING_DECISION_WAIT":     "8s",
		"WATCHTOWER_SPANMETRICS_FLUSH_INTERVAL": "1s",
	})
	prom := harness.StartPrometheus(t, harness.WithScrapeTarget("otelcol-watchtower", gw.Prometheus, "/metrics"))
	t.Logf("gateway healthy %s after start", gw.Started.Round(time.Millisecond))

	ctx := ctxTimeout(t, 4*time.Minute)
	service := colUniqueService("watchtower-e2e")
	plan := colPlan{Fast: 10, Slow: 4, Failed: 3}
	wantSpans := plan.total() * colSpansPerReconcile

	// Traces: the API call spans first; once Kafka has them all, the reconcile spans. Every
	// trace thus reaches Kafka in at least two records, which must share a partition.
	sent := colSendTraces(ctx, t, gw.OTLPGRPC, service, plan, func() {
		children := plan.total() * (colSpansPerReconcile - 1)
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := kafka.ReadRecordsUntil(rctx, spansTopic, func(recs []*kgo.Record) bool {
			tds, err := harness.DecodeTraces(recs)
			return err == nil && harness.SpanCount(tds) >= children
		}); err != nil {
			t.Fatalf("the %d API call spans did not reach Kafka: %v", children, err)
		}
	})
	exported := colSendMetrics(ctx, t, gw.OTLPGRPC, service, plan, 3)
	byTrace := map[string]colTrace{}
	for _, s := range sent {
		byTrace[s.TraceID] = s
	}

	t.Run("prometheus", func(t *testing.T) {
		ctx := ctxTimeout(t, 90*time.Second)
		job := fmt.Sprintf(`exported_job=%q`, service)
		expect := func(promql string, want float64) {
			t.Helper()
			res, err := prom.WaitForQuery(ctx, promql, func(s []harness.Sample) bool { return len(s) == 1 && s[0].Value == want })
			if err != nil {
				t.Errorf("want %v: %v", want, err)
				return
			}
			t.Logf("prometheus: %s = %v", promql, res[0].Value)
		}
		// The operator's own metrics, through the prometheus exporter.
		ctrl := fmt.Sprintf(`%s, watchtower_controller_name=%q`, job, colController)
		expect(fmt.Sprintf(`sum(%s_count{%s})`, semconv.ReconcileDurationPrometheusName, ctrl), float64(plan.total()))
		expect(fmt.Sprintf(`sum(%s_bucket{%s, le="0.05"})`, semconv.ReconcileDurationPrometheusName, ctrl), float64(plan.Fast+plan.Failed))
		expect(fmt.Sprintf(`sum(%s_bucket{%s, le="+Inf"})`, semconv.ReconcileDurationPrometheusName, ctrl), float64(plan.total()))
		expect(fmt.Sprintf(`count(%s_bucket{%s, watchtower_reconcile_result="success"})`, semconv.ReconcileDurationPrometheusName, ctrl), float64(len(colBuckets)+1))
		expect(fmt.Sprintf(`sum(%s{%s, watchtower_reconcile_result="success"})`, semconv.ReconcilesPrometheusName, ctrl), float64(plan.Fast+plan.Slow))
		expect(fmt.Sprintf(`sum(%s{%s, watchtower_reconcile_result="error"})`, semconv.ReconcilesPrometheusName, ctrl), float64(plan.Failed))
		// Span metrics over all spans, sampled or not.
		svc := fmt.Sprintf(`service_name=%q, span_name=%q`, service, semconv.ReconcileSpanName(colController))
		expect(fmt.Sprintf(`sum(%s{%s})`, colSpanMetricsCalls, svc), float64(plan.total()))
		expect(fmt.Sprintf(`sum(%s{%s, status_code="STATUS_CODE_ERROR"})`, colSpanMetricsCalls, svc), float64(plan.Failed))
		expect(fmt.Sprintf(`sum(%s{%s, watchtower_reconcile_result="success"})`, colSpanMetricsCalls, svc), float64(plan.Fast+plan.Slow))
		expect(fmt.Sprintf(`sum(%s{service_name=%q, span_name="get Workload"})`, colSpanMetricsCalls, service), float64(plan.total()))
		// Prometheus 3 writes classic histogram boundaries as floats ("1.0").
		expect(fmt.Sprintf(`sum(%s_bucket{%s, le=~"1(\\.0)?"})`, colSpanMetricsDuration, svc), float64(plan.Fast+plan.Failed))
		expect(fmt.Sprintf(`sum(%s_count{%s})`, colSpanMetricsDuration, svc), float64(plan.total()))
	})

	t.Run("jaeger", func(t *testing.T) {
		ctx := ctxTimeout(t, 90*time.Second)
		var kept []string
		for _, s := range sent {
			if s.Kind == colFast {
				continue
			}
			kept = append(kept, s.TraceID)
			tr := colWaitJaegerTrace(ctx, t, jaeger, s)
			root := tr.Spans[slices.IndexFunc(tr.Spans, func(sp harness.JaegerSpan) bool { return sp.SpanID == s.SpanIDs[0] })]
			if got, _ := root.Tag(string(semconv.ReconcileResultKey)); s.Kind == colFailed && got != semconv.ReconcileResultErrorValue {
				t.Errorf("failed reconcile %s: root tag %s = %v, want %q", s.TraceID, semconv.ReconcileResultKey, got, semconv.ReconcileResultErrorValue)
			}
			if s.Kind == colSlow && time.Duration(root.Duration)*time.Microsecond != colSlowTime {
				t.Errorf("slow reconcile %s lasted %dµs in Jaeger, want %s", s.TraceID, root.Duration, colSlowTime)
			}
		}
		// Every trace has been decided, and the backend exporter has sent exactly the kept
		// traces' spans: only then does the absence of the fast traces mean anything.
		if _, err := gw.WaitSelfMetric(ctx, "otelcol_processor_tail_sampling_global_count_traces_sampled", nil, func(v float64) bool { return v == float64(plan.total()) }); err != nil {
			t.Fatal(err)
		}
		wantKept := float64((plan.Slow + plan.Failed) * colSpansPerReconcile)
		if _, err := gw.WaitSelfMetric(ctx, "otelcol_exporter_sent_spans", map[string]string{"exporter": "otlp_grpc/traces_backend"}, func(v float64) bool { return v == wantKept }); err != nil {
			t.Fatal(err)
		}
		colCheckJaegerHoldsExactly(ctx, t, jaeger, service, sent, kept)
		t.Logf("jaeger: %d slow and %d failed traces kept whole, %d fast ones dropped", plan.Slow, plan.Failed, plan.Fast)
	})

	// Kafka last. The Kafka exporter's queue is persistent: a stop leaves what it holds on disk
	// for the next start. So first wait until the gateway has sent every span to Kafka and its
	// metrics queue is empty, then stop it; after that the topics hold all the gateway will
	// write, and the counts can be exact.
	{
		ctx := ctxTimeout(t, time.Minute)
		if _, err := gw.WaitSelfMetric(ctx, "otelcol_exporter_sent_spans", map[string]string{"exporter": "kafka"}, func(v float64) bool { return v == float64(wantSpans) }); err != nil {
			t.Fatal(err)
		}
		if _, err := gw.WaitSelfMetric(ctx, "otelcol_exporter_queue_size", map[string]string{"exporter": "kafka", "data_type": "metrics"}, func(v float64) bool { return v == 0 }); err != nil {
			t.Fatal(err)
		}
	}
	gw.Stop(t)

	t.Run("kafka spans", func(t *testing.T) {
		ctx := ctxTimeout(t, 2*time.Minute)
		recs, err := kafka.ReadAllRecords(ctx, spansTopic)
		if err != nil {
			t.Fatal(err)
		}
		tds, err := harness.DecodeTraces(recs)
		if err != nil {
			t.Fatal(err)
		}
		if got := harness.SpanCount(tds); got != wantSpans {
			t.Errorf("Kafka topic %s holds %d spans in %d records, want exactly the %d sent", spansTopic, got, len(recs), wantSpans)
		}
		seen := map[string]bool{}
		partitionsOf := map[string]map[int32]bool{}
		recordsOf := map[string]int{}
		for i, td := range tds {
			r := recs[i]
			var traceIDs []string
			for _, rs := range td.ResourceSpans().All() {
				if svc, _ := rs.Resource().Attributes().Get("service.name"); svc.Str() != service {
					t.Errorf("record %d/%d: resource service.name %q, want %q", r.Partition, r.Offset, svc.Str(), service)
				}
				for _, ss := range rs.ScopeSpans().All() {
					for _, sp := range ss.Spans().All() {
						id := sp.SpanID().String()
						if seen[id] {
							t.Errorf("span %s is in Kafka twice", id)
						}
						seen[id] = true
						tid := sp.TraceID().String()
						if _, ok := byTrace[tid]; !ok {
							t.Errorf("record %d/%d holds span %s of trace %s, which the test did not send", r.Partition, r.Offset, id, tid)
						}
						if !slices.Contains(traceIDs, tid) {
							traceIDs = append(traceIDs, tid)
						}
					}
				}
			}
			if len(traceIDs) != 1 {
				t.Errorf("record %d/%d holds spans of traces %v; partition_traces_by_id puts one trace in a record", r.Partition, r.Offset, traceIDs)
				continue
			}
			if string(r.Key) != traceIDs[0] {
				t.Errorf("record %d/%d has key %q, want its trace ID %s", r.Partition, r.Offset, r.Key, traceIDs[0])
			}
			if partitionsOf[traceIDs[0]] == nil {
				partitionsOf[traceIDs[0]] = map[int32]bool{}
			}
			partitionsOf[traceIDs[0]][r.Partition] = true
			recordsOf[traceIDs[0]]++
		}
		for _, s := range sent {
			for _, id := range s.SpanIDs {
				if !seen[id] {
					t.Errorf("span %s of %s trace %s is not in Kafka", id, s.Kind, s.TraceID)
				}
			}
			if ps := slices.Collect(maps.Keys(partitionsOf[s.TraceID])); len(ps) != 1 {
				t.Errorf("trace %s is spread over partitions %v, want one", s.TraceID, ps)
			}
			if recordsOf[s.TraceID] < 2 {
				t.Errorf("trace %s reached Kafka in %d record(s); the test sent it in two exports, so the partition check would prove nothing", s.TraceID, recordsOf[s.TraceID])
			}
		}
		usedPartitions := map[int32]bool{}
		for _, r := range recs {
			usedPartitions[r.Partition] = true
		}
		t.Logf("kafka: %d spans of %d traces in %d otlp_proto records over %d of %d partitions, each trace in one partition", len(seen), len(sent), len(recs), len(usedPartitions), partitions)

		colCheckConsoleConsumer(ctx, t, kafka, spansTopic, recs, true)
	})

	t.Run("kafka metrics", func(t *testing.T) {
		ctx := ctxTimeout(t, 2*time.Minute)
		recs, err := kafka.ReadAllRecords(ctx, metricsTopic)
		if err != nil {
			t.Fatal(err)
		}
		mds, err := harness.DecodeMetrics(recs)
		if err != nil {
			t.Fatal(err)
		}
		points := harness.MetricPoints(mds)
		for _, name := range []string{semconv.ReconcileDurationName, semconv.ReconcilesName} {
			if exported[name] == 0 {
				t.Fatalf("the SDK exported no points of %s; the test is broken", name)
			}
			if points[name] != exported[name] {
				t.Errorf("Kafka topic %s holds %d points of %s, the SDK exported exactly %d", metricsTopic, points[name], name, exported[name])
			}
		}
		if points[colSpanMetricsCallsOTel] == 0 {
			t.Errorf("Kafka topic %s holds no span metrics (%s); got metrics %v", metricsTopic, colSpanMetricsCallsOTel, points)
		}
		t.Logf("kafka: metric points by name in %d otlp_proto records: %v (SDK exported %v)", len(recs), points, exported)

		// Metric records are keyed by a binary hash of their resource: compared without keys.
		colCheckConsoleConsumer(ctx, t, kafka, metricsTopic, recs, false)
	})
}

// colWaitJaegerTrace waits until Jaeger returns the whole trace s (all its spans) and returns it.
// colCheckJaegerHoldsExactly checks that Jaeger has no fast successful trace of sent and holds
// exactly the traces want for service, no more, no fewer.
func colCheckJaegerHoldsExactly(ctx context.Context, t *testing.T, jaeger *harness.Jaeger, service string, sent []colTrace, want []string) {
	t.Helper()
	for _, s := range sent {
		if s.Kind != colFast {
			continue
		}
		if _, found, err := jaeger.Trace(ctx, s.TraceID); err != nil || found {
			t.Errorf("fast successful reconcile %s: in Jaeger = %v (err %v), want absent (baseline 0%%)", s.TraceID, found, err)
		}
	}
	all, err := jaeger.FindTraces(ctx, harness.TraceQuery{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tr := range all {
		got = append(got, tr.TraceID)
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("Jaeger has traces %v for %s, want exactly the %d slow or failed ones %v", got, service, len(want), want)
	}
}

func colWaitJaegerTrace(ctx context.Context, t *testing.T, jaeger *harness.Jaeger, s colTrace) harness.JaegerTrace {
	t.Helper()
	var tr harness.JaegerTrace
	for {
		var found bool
		var err error
		tr, found, err = jaeger.Trace(ctx, s.TraceID)
		if err != nil {
			t.Fatalf("Jaeger trace %s: %v", s.TraceID, err)
		}
		if found && len(tr.Spans) >= len(s.SpanIDs) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Jaeger never returned the %s trace %s whole (%d spans); last answer had %d spans", s.Kind, s.TraceID, len(s.SpanIDs), len(tr.Spans))
		case <-time.After(250 * time.Millisecond):
		}
	}
	var got []string
	for _, sp := range tr.Spans {
		got = append(got, sp.SpanID)
	}
	want := slices.Clone(s.SpanIDs)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Jaeger's %s trace %s has spans %v, want exactly %v", s.Kind, s.TraceID, got, want)
	}
	return tr
}

// colCheckConsoleConsumer reads topic with Kafka's own console consumer and checks that it sees
// exactly the records franz-go read: same count, same partitions and offsets, and with
// withKeys (text keys only) the same keys.
func colCheckConsoleConsumer(ctx context.Context, t *testing.T, kafka *harness.Kafka, topic string, recs []*kgo.Record, withKeys bool) {
	t.Helper()
	console, total, err := kafka.ConsoleConsumeRecords(ctx, topic, len(recs), 60*time.Second, withKeys)
	if err != nil {
		t.Fatal(err)
	}
	if len(console) != len(recs) || total != len(recs) {
		t.Fatalf("kafka-console-consumer printed %d records and reported %d, franz-go read %d", len(console), total, len(recs))
	}
	key := func(p int32, o int64, k string) string { return fmt.Sprintf("%d/%d/%s", p, o, k) }
	var want, got []string
	for _, r := range recs {
		k := ""
		if withKeys {
			k = string(r.Key)
			if r.Key == nil {
				k = "null"
			}
		}
		want = append(want, key(r.Partition, r.Offset, k))
	}
	for _, c := range console {
		got = append(got, key(c.Partition, c.Offset, c.Key))
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("kafka-console-consumer saw records %v, franz-go %v", got, want)
	}
	t.Logf("kafka-console-consumer: %d records of %s, the same as franz-go read", total, topic)
}
