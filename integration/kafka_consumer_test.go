package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/gowatchtower/watchtower/integration/harness"
	wtkafka "github.com/gowatchtower/watchtower/kafka"
)

// TestKafkaConsumerReadsWhatTheGatewayWrote: the gateway writes an operator's spans and metric
// points to Kafka as docs/kafka.md says, and the kafka package's consumer reads every one of them
// back — with a consumer stopped halfway and a new one of the same group taking over from its
// committed offsets: nothing lost, duplicates counted.
func TestKafkaConsumerReadsWhatTheGatewayWrote(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kafka, gw := startGatewayStack(t)
	ctx := ctxTimeout(t, 5*time.Minute)
	service := colUniqueService("kafka-consumer")
	sent := colSendTraces(ctx, t, gw.OTLPGRPC, service, colPlan{Fast: 150, Slow: 10, Failed: 20}, nil)
	exported := colSendMetrics(ctx, t, gw.OTLPGRPC, service, colPlan{Fast: 20, Slow: 2, Failed: 3}, 3)
	want := map[string]string{} // span ID → its trace ID
	for _, tr := range sent {
		for _, id := range tr.SpanIDs {
			want[id] = tr.TraceID
		}
	}

	var (
		mu          sync.Mutex
		spans       = map[string]int{} // span ID → times handled
		points      = map[string]int{} // metric name → points handled
		badKeys     []string
		records     int
		undecodable int
		stopFirst   func() // stops the first consumer from its handler, halfway through the spans
	)
	handler := func(_ context.Context, b wtkafka.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		records++
		if b.Traces != nil {
			for _, rs := range b.Traces.ResourceSpans().All() {
				if v, _ := rs.Resource().Attributes().Get("service.name"); v.Str() != service {
					continue
				}
				for _, ss := range rs.ScopeSpans().All() {
					for _, sp := range ss.Spans().All() {
						spans[sp.SpanID().String()]++
						if stopFirst != nil && len(spans) >= len(want)/2 {
							stopFirst()
							stopFirst = nil
						}
						// The contract: a spans record is keyed by its trace ID.
						if string(b.Key) != sp.TraceID().String() {
							badKeys = append(badKeys, string(b.Key)+"≠"+sp.TraceID().String())
						}
					}
				}
			}
		}
		if b.Metrics != nil {
			// The contract: a metrics record holds one resource, keyed by a 16-byte hash of it.
			if n := b.Metrics.ResourceMetrics().Len(); n != 1 || len(b.Key) != 16 {
				badKeys = append(badKeys, fmt.Sprintf("metrics record %d@%d: %d resources, a %d-byte key", b.Partition, b.Offset, n, len(b.Key)))
			}
			for _, rm := range b.Metrics.ResourceMetrics().All() {
				if v, _ := rm.Resource().Attributes().Get("service.name"); v.Str() != service {
					continue
				}
				md := pmetric.NewMetrics()
				rm.CopyTo(md.ResourceMetrics().AppendEmpty())
				for name, n := range harness.MetricPoints([]pmetric.Metrics{md}) {
					points[name] += n
				}
			}
		}
		return nil
	}
	read := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		done := len(spans) == len(want)
		for name, n := range exported {
			done = done && points[name] >= n
		}
		return len(spans), done
	}
	consume := func(first bool, stop func(seen int, done bool) bool) {
		c, err := wtkafka.NewConsumer([]string{kafka.Bootstrap}, "kafka-consumer-test", wtkafka.FromStart(),
			wtkafka.OnDecodeError(func(_ *kgo.Record, _ error) { mu.Lock(); undecodable++; mu.Unlock() }))
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if first {
			mu.Lock()
			stopFirst = cancel
			mu.Unlock()
		}
		errc := make(chan error, 1)
		go func() { errc <- c.Run(cctx, handler) }()
		for {
			select {
			case err := <-errc:
				if err != nil || !first {
					t.Fatalf("the consumer stopped by itself: %v", err)
				}
				return // stopped by its handler, halfway
			case <-ctx.Done():
				seen, _ := read()
				t.Fatalf("after %s the consumers had handled %d of the %d spans sent", 5*time.Minute, seen, len(want))
			case <-time.After(100 * time.Millisecond):
			}
			if seen, done := read(); stop(seen, done) {
				cancel()
				if err := <-errc; err != nil {
					t.Fatalf("the consumer stopped with %v", err)
				}
				return
			}
		}
	}
	// The first consumer stops once it has handled half of the spans; the second, of the same
	// group, resumes from what the first committed.
	consume(true, func(seen int, _ bool) bool { return seen >= len(want)/2 })
	mu.Lock()
	half := len(spans)
	mu.Unlock()
	if half >= len(want) {
		t.Fatalf("the first consumer handled all %d spans: the restart proves nothing", half)
	}
	consume(false, func(_ int, done bool) bool { return done })

	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for id, n := range spans {
		if _, ok := want[id]; !ok {
			t.Errorf("the consumer handled span %s of %s, which the test did not send", id, service)
		}
		dups += n - 1
	}
	for name, n := range exported {
		if points[name] != n {
			t.Errorf("metric %s: %d points sent, %d handled", name, n, points[name])
		}
	}
	if len(badKeys) > 0 {
		t.Errorf("%d records break the key contract of docs/kafka.md, e.g. %s", len(badKeys), badKeys[0])
	}
	if undecodable > 0 {
		t.Errorf("%d records could not be decoded as OTLP protobuf", undecodable)
	}
	t.Logf("kafka consumer: %d spans sent, %d handled (%d by the first consumer, the rest after it stopped), %d duplicates; %d records; metric points %v",
		len(want), len(spans), half, dups, records, points)
}

// TestWatchtowerKafkaTail: `watchtower kafka tail` prints exactly the slow and failed reconciles
// the gateway wrote (one line each, with its trace ID), and `watchtower kafka stats` counts them
// per controller.
func TestWatchtowerKafkaTail(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kafka, gw := startGatewayStack(t)
	ctx := ctxTimeout(t, 3*time.Minute)
	service := colUniqueService("kafka-tail")
	plan := colPlan{Fast: 60, Slow: 8, Failed: 12}
	sent := colSendTraces(ctx, t, gw.OTLPGRPC, service, plan, nil)
	want := map[string]string{} // trace ID → kind, of the reconciles the tail must print
	for _, tr := range sent {
		if tr.Kind != colFast {
			want[tr.TraceID] = tr.Kind
		}
	}
	bin := harness.BuildBinary(t, "./kafka/cmd/watchtower")

	// -n: the tail stops after as many lines as there are slow and failed reconciles; a fast one
	// printed would take the place of one of them.
	cmd := exec.CommandContext(ctx, bin, "kafka", "tail", "-brokers", kafka.Bootstrap, "-from-start", "-min-duration", colSlowThreshold.String(), "-json", "-n", strconv.Itoa(len(want)))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("watchtower kafka tail: %v\n%s", err, out)
	}
	printed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			Service, Controller, Name, Result string
			TraceID                           string `json:"trace_id"`
			Duration                          int64  `json:"duration_ns"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("tail line %q: %v", line, err)
		}
		kind, ok := want[r.TraceID]
		switch {
		case !ok:
			t.Errorf("the tail printed %s reconcile %s (%s, %s), which is neither slow nor failed", r.Result, r.TraceID, r.Name, time.Duration(r.Duration))
		case kind == colSlow && time.Duration(r.Duration) < colSlowThreshold, kind == colFailed && r.Result != "error":
			t.Errorf("the tail printed %s reconcile %s as %s, %s", kind, r.TraceID, r.Result, time.Duration(r.Duration))
		}
		if r.Service != service || r.Controller != colController {
			t.Errorf("line %q: want service %s, controller %s", line, service, colController)
		}
		printed[r.TraceID] = true
	}
	if len(printed) != len(want) {
		t.Errorf("the tail printed %d of the %d slow and failed reconciles", len(printed), len(want))
	}

	out, err = exec.CommandContext(ctx, bin, "kafka", "stats", "-brokers", kafka.Bootstrap, "-from-start", "-interval", "5s", "-min-duration", colSlowThreshold.String(), "-group", "").Output()
	if err != nil {
		t.Fatalf("watchtower kafka stats: %v\n%s", err, out)
	}
	// service/controller  reconciles/s  failed  slow  p50  p99
	var row []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 6 && f[0] == service+"/"+colController {
			row = f
		}
	}
	if row == nil || row[2] != strconv.Itoa(plan.Failed) || row[3] != strconv.Itoa(plan.Slow) {
		t.Errorf("stats: want %s/%s with %d failed and %d slow:\n%s", service, colController, plan.Failed, plan.Slow, out)
	}
	t.Logf("watchtower kafka tail printed the %d slow and failed reconciles of %d; stats:\n%s", len(printed), plan.total(), out)
}
