package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestMemoryQueueDrainsOnGracefulStop runs the gateway with its Kafka queues in memory
// (deploy/collector/overlays/gateway-memory-queue.yaml, the chart's persistentQueue.volume=memory)
// and freezes the broker (SIGSTOP) while a client streams, so that what the gateway acknowledges
// waits in its queues; then the gateway is stopped gracefully (SIGTERM, as a rollout does) and
// the broker thawed a second later: everything acknowledged is in Kafka once the gateway has
// exited, and nothing was written to the queue volume.
func TestMemoryQueueDrainsOnGracefulStop(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kafka := harness.StartKafka(t)
	kafka.CreateTopic(t, "otlp_spans", 3)
	kafka.CreateTopic(t, "otlp_metrics", 1)
	jaeger := harness.StartJaeger(t)
	gw := harness.StartCollectorWithOverlays(t, "otelcol-watchtower", "deploy/collector/gateway.yaml",
		[]string{"deploy/collector/overlays/gateway-memory-queue.yaml"},
		map[string]string{"WATCHTOWER_KAFKA_BROKERS": kafka.Bootstrap, "WATCHTOWER_TRACES_ENDPOINT": jaeger.OTLPGRPC})
	ctx := ctxTimeout(t, 3*time.Minute)

	f := &faultStream{endpoint: gw.OTLPHTTP, service: colUniqueService("memory-queue"), spansPer: 50, pointsPer: 10}
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- f.run(ctx, stop, 20*time.Millisecond) }()
	time.Sleep(2 * time.Second) // some delivered while the broker runs

	broker := -kafka.Process().Pid() // its process group
	if err := syscall.Kill(broker, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(broker, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	var queued float64
	waitFor(t, ctx, "acknowledged spans waiting in the gateway's memory queue", func() (bool, error) {
		v, _, err := gw.SelfMetric(ctx, "otelcol_exporter_queue_size", map[string]string{"exporter": "kafka", "data_type": "traces"})
		queued = v
		return err == nil && v > 0, fmt.Errorf("queue %v bytes (%v)", v, err)
	})
	time.Sleep(2 * time.Second) // more of them
	close(stop)
	queued, _, _ = gw.SelfMetric(ctx, "otelcol_exporter_queue_size", map[string]string{"exporter": "kafka", "data_type": "traces"})
	if err := <-errc; err != nil {
		t.Fatalf("the client's stream failed: %v", err)
	}
	spans, points, _ := f.acked()

	// A rollout: SIGTERM; the broker comes back a second later, within the grace period.
	stopped := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		gw.Stop(t)
		stopped <- time.Since(start)
	}()
	time.Sleep(time.Second)
	thaw()
	took := <-stopped

	var got tally
	waitFor(t, ctx, "every acknowledged span and point in Kafka", func() (bool, error) {
		got = countInKafka(t, ctx, kafka, f.service)
		return got.spans >= spans && got.points >= points, fmt.Errorf("Kafka holds %s of %d spans and %d points", got, spans, points)
	})
	if got.spans != spans || got.points != points {
		t.Errorf("Kafka holds %s; the gateway acknowledged %d spans and %d points", got, spans, points)
	}
	// In memory: the queue volume holds no queue file.
	files, _ := filepath.Glob(filepath.Join(gw.QueueDir, "*"))
	var queueFiles []string
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && !st.IsDir() && st.Size() > 0 {
			queueFiles = append(queueFiles, filepath.Base(f))
		}
	}
	if len(queueFiles) > 0 {
		t.Errorf("the queue volume holds %v: the queues were not in memory", queueFiles)
	}
	t.Logf("memory-queue: %.1f KiB of spans waiting in memory at the SIGTERM (broker frozen); SIGTERM with the broker back 1 s later: the gateway exited after %s; Kafka holds %s of the %d spans and %d points acknowledged; lost 0",
		queued/1024, took.Round(10*time.Millisecond), got, spans, points)
}
