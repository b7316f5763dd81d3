package integration

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// diskUsage is the space the files under dir take on disk (allocated blocks, as du counts).
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			return err
		}
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestKafkaQueueIsBoundedInBytes stops Kafka under a gateway whose Kafka queues hold 4 MiB each
// (WATCHTOWER_KAFKA_QUEUE_BYTES; one queue per signal) and streams until the gateway refuses:
// each queue holds at most its bytes, the queue files on disk stay within the bound
// docs/reliability.md gives for sizing the volume, and once Kafka is back every acknowledged
// span and point arrives.
func TestKafkaQueueIsBoundedInBytes(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	const capacity = 4 << 20
	kafka, gw := startGatewayStack(t, fmt.Sprintf("WATCHTOWER_KAFKA_QUEUE_BYTES=%d", capacity), "WATCHTOWER_LOG_LEVEL=warn")
	ctx := ctxTimeout(t, 4*time.Minute)
	kafka.Stop(t)
	f := &faultStream{endpoint: gw.OTLPHTTP, service: colUniqueService("queue-bytes"), spansPer: 500, pointsPer: 100}
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- f.run(ctx, stop, 10*time.Millisecond) }()
	waitFor(t, ctx, "the gateway to refuse once its Kafka queues are full", func() (bool, error) {
		_, _, refused := f.acked()
		return refused >= 5, fmt.Errorf("%d refusals", refused)
	})
	type queue struct{ size, capacity float64 }
	queues := map[string]queue{}
	for _, signal := range []string{"traces", "metrics"} {
		labels := map[string]string{"exporter": "kafka", "data_type": signal}
		size, _, err := gw.SelfMetric(ctx, "otelcol_exporter_queue_size", labels)
		if err != nil {
			t.Fatal(err)
		}
		capa, _, err := gw.SelfMetric(ctx, "otelcol_exporter_queue_capacity", labels)
		if err != nil {
			t.Fatal(err)
		}
		queues[signal] = queue{size, capa}
		if capa != capacity {
			t.Errorf("%s queue capacity %v, want %d bytes", signal, capa, capacity)
		}
		if size > capa {
			t.Errorf("%s queue holds %v bytes, over its capacity %v", signal, size, capa)
		}
	}
	if q := queues["traces"]; q.size < 0.8*q.capacity {
		t.Errorf("the traces queue refused at %v of %v bytes: it must fill before refusing", q.size, q.capacity)
	}
	disk := diskUsage(t, gw.QueueDir)
	// The chart's rule (docs/deploy.md): the queue volume is four times a queue's bytes, so the
	// files of two full queues must fit in half of it. Measured: 1.1× the bytes held.
	bound := int64(2 * 2 * capacity)
	if disk > bound {
		t.Errorf("the queue files take %d MiB on disk, over the %d MiB bound for two %d MiB queues", disk>>20, bound>>20, capacity>>20)
	}
	kafka.Start(t)
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("the client's stream failed: %v", err)
	}
	spans, points, refusals := f.acked()
	got := waitDelivered(t, ctx, gw, kafka, f.service, spans, points)
	t.Logf("queue-bytes: two %d MiB queues: traces held %.1f MiB, metrics %.1f MiB when the gateway refused (%d refusals); %.1f MiB of files on disk (bound %d MiB); after Kafka returned: %s, lost 0",
		capacity>>20, queues["traces"].size/(1<<20), queues["metrics"].size/(1<<20), refusals, float64(disk)/(1<<20), bound>>20, got)
}
