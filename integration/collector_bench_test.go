// Figures of the gateway, measured with the real components: start to healthy, resident memory
// idle and under load, and spans per CPU-second of the collector through the full gateway.yaml
// (span metrics, Kafka, tail sampling) with telemetrygen as the load and Kafka as the sink.
//
//	cd integration && go test -run '^$' -bench BenchmarkCollectorGateway -benchtime 1x .
//
// The work is fixed (one run = the load below), so run it with -benchtime 1x; b.N is ignored.
package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowatchtower/watchtower/integration/harness"
)

func BenchmarkCollectorGatewayThroughput(b *testing.B) {
	tools := harness.MustTools(b)
	telemetrygen := tools.Path(b, "telemetrygen", "TELEMETRYGEN_VERSION", "telemetrygen")
	kafka := harness.StartKafka(b)
	const spansTopic, metricsTopic = "watchtower-bench-spans", "watchtower-bench-metrics"
	kafka.CreateTopic(b, spansTopic, 6)
	kafka.CreateTopic(b, metricsTopic, 1) // the gateway checks at start that its topics exist
	sink := harness.NewOTLPSink(b)
	gw := harness.StartCollector(b, "otelcol-gateway", "deploy/collector/gateway.yaml", map[string]string{
		"WATCHTOWER_KAFKA_BROKERS":          kafka.Bootstrap,
		"WATCHTOWER_KAFKA_SPANS_TOPIC":      spansTopic,
		"WATCHTOWER_KAFKA_METRICS_TOPIC":    metricsTopic,
		"WATCHTOWER_TRACES_ENDPOINT":        sink.Endpoint,
		"WATCHTOWER_SAMPLING_DECISION_WAIT": "2s",
		"WATCHTOWER_LOG_LEVEL":              "warn",
	})
	pid := gw.Process().Pid()
	time.Sleep(5 * time.Second)
	rssIdle := colRSS(b, pid)

	// 8 workers × 3,000 traces of 10 spans = 240,000 spans; telemetrygen's --rate is spans per
	// second per worker (unthrottled it drops spans from its own full queue).
	const workers, tracesPerWorker, children, rate = 8, 3_000, 9, 5_000
	const spans = workers * tracesPerWorker * (1 + children)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cpu0 := colCPUSeconds(b, pid)
	var rssPeak int64
	var mu sync.Mutex
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if v, err := colRSSBytes(pid); err == nil {
				mu.Lock()
				rssPeak = max(rssPeak, v)
				mu.Unlock()
			}
		}
	}()
	start := time.Now()
	gen := exec.CommandContext(ctx, telemetrygen, "traces",
		"--otlp-endpoint", gw.OTLPGRPC, "--otlp-insecure",
		"--service", colUniqueService("bench"),
		"--workers", strconv.Itoa(workers),
		"--traces", strconv.Itoa(tracesPerWorker),
		"--child-spans", strconv.Itoa(children),
		"--rate", strconv.Itoa(rate),
		"--batch-size", "1000",
	)
	if out, err := gen.CombinedOutput(); err != nil {
		b.Fatalf("telemetrygen: %v\n%s", err, out)
	}
	genTime := time.Since(start)
	accepted, err := gw.WaitSelfMetric(ctx, "otelcol_receiver_accepted_spans", map[string]string{"receiver": "otlp"}, func(v float64) bool { return v > 0 })
	if err != nil {
		b.Fatal(err)
	}
	// Done when Kafka has every accepted span and every trace has been decided.
	if _, err := gw.WaitSelfMetric(ctx, "otelcol_exporter_sent_spans", map[string]string{"exporter": "kafka"}, func(v float64) bool { return v == accepted }); err != nil {
		b.Fatal(err)
	}
	traces, _, err := gw.SelfMetric(ctx, "otelcol_processor_tail_sampling_new_trace_id_received", nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := gw.WaitSelfMetric(ctx, "otelcol_processor_tail_sampling_global_count_traces_sampled", nil, func(v float64) bool { return v >= traces }); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	cpu := colCPUSeconds(b, pid) - cpu0
	close(stop)
	<-sampled

	b.ReportMetric(accepted/cpu, "spans/cpu-s")
	b.ReportMetric(accepted/elapsed.Seconds(), "spans/s")
	b.ReportMetric(float64(gw.Started.Milliseconds()), "ms-to-healthy")
	b.ReportMetric(float64(rssIdle)/(1<<20), "MiB-rss-idle")
	b.ReportMetric(float64(rssPeak)/(1<<20), "MiB-rss-load")
	b.Logf("gateway: %v of %d spans accepted (telemetrygen sent for %s), all in Kafka, %v traces decided; collector CPU %.2fs over %s: %.0f spans per CPU-second; RSS idle %.1f MiB, peak under load %.1f MiB; healthy %s after start",
		accepted, spans, genTime.Round(time.Millisecond), traces, cpu, elapsed.Round(time.Millisecond), accepted/cpu,
		float64(rssIdle)/(1<<20), float64(rssPeak)/(1<<20), gw.Started.Round(time.Millisecond))
}

// colCPUSeconds is the user+system CPU time pid has used.
func colCPUSeconds(tb testing.TB, pid int) float64 {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may contain spaces.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64) // field 14 of proc(5)
	stime, _ := strconv.ParseFloat(f[12], 64) // field 15
	const clockTicks = 100                    // USER_HZ on Linux
	return (utime + stime) / clockTicks
}

func colRSS(tb testing.TB, pid int) int64 {
	tb.Helper()
	v, err := colRSSBytes(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// colRSSBytes is VmRSS of pid.
func colRSSBytes(pid int) (int64, error) { return procStatusBytes(pid, "VmRSS") }
