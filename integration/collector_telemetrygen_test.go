// Load from the collector's own load generator: telemetrygen sends a fixed number of spans
// through the gateway, and Kafka must hold exactly that many.
package integration

import (
	"context"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/gowatchtower/watchtower/integration/harness"
)

func TestCollectorTelemetrygenSpansReachKafka(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	tools := harness.MustTools(t)
	telemetrygen := tools.Path(t, "telemetrygen", "TELEMETRYGEN_VERSION", "telemetrygen")
	kafka := harness.StartKafka(t)
	const spansTopic, metricsTopic = "watchtower-telemetrygen-spans", "watchtower-telemetrygen-metrics"
	kafka.CreateTopic(t, spansTopic, 3)
	kafka.CreateTopic(t, metricsTopic, 1) // the gateway checks at start that its topics exist
	sink := harness.NewOTLPSink(t)        // the trace backend; this test is about Kafka
	gw := harness.StartCollector(t, "otelcol-gateway", "deploy/collector/gateway.yaml", map[string]string{
		"WATCHTOWER_KAFKA_BROKERS":       kafka.Bootstrap,
		"WATCHTOWER_KAFKA_SPANS_TOPIC":   spansTopic,
		"WATCHTOWER_KAFKA_METRICS_TOPIC": metricsTopic,
		"WATCHTOWER_TRACES_ENDPOINT":     sink.Endpoint,
	})

	// 2 workers × 300 traces × (1 root + 4 children) = 3000 spans.
	const workers, traces, children = 2, 300, 4
	const want = workers * traces * (1 + children)
	ctx := ctxTimeout(t, 3*time.Minute)
	gen := exec.CommandContext(ctx, telemetrygen, "traces",
		"--otlp-endpoint", gw.OTLPGRPC, "--otlp-insecure",
		"--service", colUniqueService("telemetrygen"),
		"--workers", strconv.Itoa(workers),
		"--traces", strconv.Itoa(traces),
		"--child-spans", strconv.Itoa(children),
		// Throttled: unthrottled, telemetrygen overflows its own batch span processor's queue
		// (2048 spans) and drops spans before they are sent.
		"--rate", "1000",
	)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("telemetrygen: %v\n%s", err, out)
	}
	// The gateway accepted every span (its own count, which may lag the responses briefly).
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err := gw.WaitSelfMetric(wctx, "otelcol_receiver_accepted_spans", map[string]string{"receiver": "otlp"}, func(v float64) bool { return v == want }); err != nil {
		t.Fatalf("the gateway did not accept the %d spans telemetrygen sent: %v", want, err)
	}
	// The Kafka queue is persistent (a stop leaves its content on disk for the next start):
	// wait until the gateway has sent every span, then stop it; then the topic holds all it
	// will ever hold.
	if _, err := gw.WaitSelfMetric(wctx, "otelcol_exporter_sent_spans", map[string]string{"exporter": "kafka"}, func(v float64) bool { return v == want }); err != nil {
		t.Fatalf("the gateway did not send the %d spans to Kafka: %v", want, err)
	}
	gw.Stop(t)

	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tds, err := kafka.ReadAllTraces(rctx, spansTopic)
	if err != nil {
		t.Fatal(err)
	}
	if got := harness.SpanCount(tds); got != want {
		t.Fatalf("Kafka holds %d spans in %d records, want exactly the %d telemetrygen sent", got, len(tds), want)
	}
	t.Logf("telemetrygen: %d spans through the gateway, exactly %d spans in %d otlp_proto records in Kafka", want, want, len(tds))
}
