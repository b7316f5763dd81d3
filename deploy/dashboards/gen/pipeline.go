package main

//lint:file-ignore SA1019 the classic dashboard model is the importable one (see main.go)

import (
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// colSel selects the collectors chosen in the variables. The collector's own telemetry
// (service.telemetry.metrics, the self-metrics port) has these names at the collector release
// otelcol-watchtower is built from: counters without a _total suffix, units not in the name.
const colSel = `job=~"$job", instance=~"$instance"`

// The signals a collector pipeline carries, as the suffix of the per-signal metric names and as
// shown in legends.
var signals = []struct{ suffix, name string }{
	{"spans", "spans"},
	{"metric_points", "metric points"},
	{"log_records", "log records"},
}

// perSignal is the rate of metric+"_"+signal for every signal, summed by the labels in by, each
// leg labelled with signal="<prefix><signal name>" and joined with `or`: a panel shows every
// signal the collector carries, and a pipeline without logs costs no empty query.
func perSignal(by string, prefix string, metrics ...string) string {
	var legs []string
	for _, m := range metrics {
		for _, s := range signals {
			legs = append(legs, fmt.Sprintf(`label_replace(sum by (%s) (rate(%s_%s{%s}[$__rate_interval])), "signal", "%s%s", "", "")`,
				by, m, s.suffix, colSel, prefix, s.name))
		}
	}
	return strings.Join(legs, "\nor ")
}

// dropped is what the collector lost or pushed back: refused at a receiver, or failed to be
// queued or sent by an exporter (the WatchtowerCollectorDroppingData alert).
func dropped(by string) string {
	var legs []string
	for _, m := range []struct{ metric, what string }{
		{"otelcol_receiver_refused", "refused"},
		{"otelcol_exporter_enqueue_failed", "enqueue failed"},
		{"otelcol_exporter_send_failed", "send failed"},
	} {
		for _, s := range signals {
			legs = append(legs, fmt.Sprintf(`label_replace(sum by (%s) (rate(%s_%s{%s}[$__rate_interval])), "signal", "%s %s", "", "")`,
				by, m.metric, s.suffix, colSel, m.what, s.name))
		}
	}
	return strings.Join(legs, "\nor ")
}

func kafkaLatency(q, name string) *prometheus.DataqueryBuilder {
	return query(fmt.Sprintf(`histogram_quantile(%s, sum by (instance, le) (rate(otelcol_kafka_exporter_write_latency_bucket{%s}[$__rate_interval])))`, q, colSel),
		"{{instance}} "+name)
}

// telemetryPipeline is the "Telemetry pipeline" dashboard: otelcol-watchtower's own telemetry,
// from receivers through the memory limiter and tail sampling to the exporters and Kafka.
func telemetryPipeline() (dashboard.Dashboard, error) {
	return dashboard.NewDashboardBuilder("Telemetry pipeline").
		Uid("gowatchtower-telemetry-pipeline").
		Description("otelcol-watchtower's own telemetry: what its receivers accepted and refused, the memory limiter, tail sampling, the exporters' queues and failures, and Kafka. docs/dashboards.md explains every panel.").
		Tags([]string{"gowatchtower", "opentelemetry-collector"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(datasourceVariable()).
		WithVariable(labelVariable("job", "Job", "job", "otelcol_process_uptime",
			"The scrape job of the collectors' self-metrics port (service.telemetry, 8888 by default).")).
		WithVariable(labelVariable("instance", "Instance", "instance", `otelcol_process_uptime{job=~"$job"}`,
			"Collector instances (gateway replicas, sampler replicas, agents).")).
		WithRow(row("Overview")).
		WithPanel(single("Spans accepted per second", "Spans the receivers of the selected collectors accepted.", "ops",
			query(`sum(rate(otelcol_receiver_accepted_spans{`+colSel+`}[$__rate_interval]))`, "spans/s"))).
		WithPanel(single("Metric points accepted per second", "Metric points the receivers of the selected collectors accepted.", "ops",
			query(`sum(rate(otelcol_receiver_accepted_metric_points{`+colSel+`}[$__rate_interval]))`, "points/s"))).
		WithPanel(single("Refused or dropped per second", "Items refused by receivers, or that exporters failed to queue or send, all signals. Anything above zero for 5 minutes is the WatchtowerCollectorDroppingData alert.", "ops",
			query("sum(\n"+dropped("instance")+"\n)", "lost/s"), threshold(0.001, "red"))).
		WithPanel(single("Kafka write p99", "99th percentile of the time a Kafka write (a produce of a batch of records) took.", "s",
			query(`histogram_quantile(0.99, sum by (le) (rate(otelcol_kafka_exporter_write_latency_bucket{`+colSel+`}[$__rate_interval])))`, "p99"),
			threshold(0.25, "yellow"), threshold(1, "red"))).
		WithRow(row("Receivers")).
		WithPanel(graph("Accepted per second by receiver", "Spans, metric points and log records the receivers accepted into their pipelines.", "ops",
			query(perSignal("instance, receiver", "", "otelcol_receiver_accepted"), "{{instance}} {{receiver}} {{signal}}"))).
		WithPanel(graph("Refused and failed per second by receiver", "Refused: a processor (the memory limiter) or an exporter whose queue is full pushed back, and the sender was told to retry. Failed: the data could not be processed at all.", "ops",
			query(perSignal("instance, receiver", "refused ", "otelcol_receiver_refused")+"\nor "+perSignal("instance, receiver", "failed ", "otelcol_receiver_failed"),
				"{{instance}} {{receiver}} {{signal}}"))).
		WithRow(row("Memory")).
		WithPanel(graph("Memory limiter refusals per second", "Items the memory_limiter processor refused because the collector's heap was over its soft limit (WATCHTOWER_MEMORY_LIMIT_MIB minus the spike limit).", "ops",
			query(perSignal("instance, processor", "", "otelcol_processor_memory_limiter_refused"), "{{instance}} {{processor}} {{signal}}"))).
		WithPanel(graph("Collector memory", "Resident memory and Go heap of each collector; the memory limiter acts on the heap.", "bytes",
			query(`sum by (instance) (otelcol_process_memory_rss{`+colSel+`})`, "{{instance}} RSS"),
			query(`sum by (instance) (otelcol_process_runtime_heap_alloc_bytes{`+colSel+`})`, "{{instance}} heap"))).
		WithRow(row("Tail sampling")).
		WithPanel(graph("Tail-sampling decisions per second", "Traces the tail_sampling processor decided on: sampled (sent to Jaeger or Tempo) or not_sampled; and traces whose spans were dropped before the decision (decision_wait too short or num_traces too small).", "ops",
			query(`sum by (instance, decision) (rate(otelcol_processor_tail_sampling_global_count_traces_sampled{`+colSel+`}[$__rate_interval]))`, "{{instance}} {{decision}}"),
			query(`sum by (instance) (rate(otelcol_processor_tail_sampling_sampling_trace_dropped_too_early{`+colSel+`}[$__rate_interval]))`, "{{instance}} dropped too early"))).
		WithPanel(graph("Traces sampled per second by policy", "Which policy kept the traces: slow (latency over the slow threshold), errors (status ERROR), baseline (probabilistic). One trace can match more than one policy.", "ops",
			query(`sum by (instance, policy) (rate(otelcol_processor_tail_sampling_count_traces_sampled{`+colSel+`, decision="sampled"}[$__rate_interval]))`, "{{instance}} {{policy}}"))).
		WithPanel(graph("Traces waiting for a decision", "Traces held in memory by the tail sampler until decision_wait has passed.", "short",
			query(`sum by (instance) (otelcol_processor_tail_sampling_sampling_traces_on_memory{`+colSel+`})`, "{{instance}}"))).
		WithRow(row("Exporters")).
		WithPanel(graph("Sent per second by exporter", "Items the exporters delivered: kafka, the trace backend (otlp_grpc), prometheus.", "ops",
			query(perSignal("instance, exporter", "", "otelcol_exporter_sent"), "{{instance}} {{exporter}} {{signal}}"))).
		WithPanel(graph("Exporter failures per second", "Enqueue failed: the sending queue was full and the data was refused. Send failed: sending failed; after retry_on_failure gives up the data is dropped.", "ops",
			query(perSignal("instance, exporter", "enqueue failed ", "otelcol_exporter_enqueue_failed")+"\nor "+perSignal("instance, exporter", "send failed ", "otelcol_exporter_send_failed"),
				"{{instance}} {{exporter}} {{signal}}"))).
		WithPanel(graph("Sending queue size", "Batches waiting in each exporter's sending queue (persistent for kafka).", "short",
			query(`max by (instance, exporter, data_type) (otelcol_exporter_queue_size{`+colSel+`})`, "{{instance}} {{exporter}} {{data_type}}"))).
		WithPanel(withThreshold(graph("Sending queue fill", "Queue size over capacity; when it reaches 100% new data is refused. The dashed line is the WatchtowerKafkaExportFailing threshold for the kafka exporter.", "percentunit",
			query(`max by (instance, exporter, data_type) (otelcol_exporter_queue_size{`+colSel+`} / otelcol_exporter_queue_capacity{`+colSel+`})`, "{{instance}} {{exporter}} {{data_type}}")), 0.8)).
		WithRow(row("Kafka")).
		WithPanel(graph("Kafka write latency p50 / p95 / p99", "How long the Kafka exporter's produce requests took, successful or not (otelcol_kafka_exporter_write_latency).", "s",
			kafkaLatency("0.50", "p50"), kafkaLatency("0.95", "p95"), kafkaLatency("0.99", "p99"))).
		WithPanel(graph("Kafka records per second by topic and outcome", "Records written to each topic; outcome failure is the WatchtowerKafkaExportFailing alert.", "ops",
			query(`sum by (instance, topic, outcome) (rate(otelcol_kafka_exporter_records{`+colSel+`}[$__rate_interval]))`, "{{instance}} {{topic}} {{outcome}}"))).
		WithPanel(graph("Kafka broker connections per second by outcome", "Connections the Kafka client opened; failures mean a broker is unreachable.", "ops",
			query(`sum by (instance, outcome) (rate(otelcol_kafka_broker_connects{`+colSel+`}[$__rate_interval]))`, "{{instance}} {{outcome}}"))).
		WithPanel(withThreshold(graph("Kafka consumer lag by sampler", "Records of the spans topic each sampler of the sampler tier has yet to read, over the partitions it holds. The dashed line is the WatchtowerSamplerLagging threshold.", "short",
			query(`sum by (instance, topic) (otelcol_kafka_receiver_offset_lag{`+colSel+`})`, "{{instance}} {{topic}}")), 1000)).
		Build()
}
