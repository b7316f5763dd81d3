// The sampler tier: the gateway writes every span to a multi-partition Kafka topic keyed by
// trace ID, and two collectors running deploy/collector/sampler.yaml share that topic as one
// consumer group, each tail-sampling the traces of its partitions into Jaeger.
package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gowatchtower/watchtower/integration/harness"
)

func TestCollectorSamplerTier(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kafka := harness.StartKafka(t)
	jaeger := harness.StartJaeger(t)
	const spansTopic, partitions = "watchtower-sampler-spans", 6
	kafka.CreateTopic(t, spansTopic, partitions)
	group := colUniqueService("watchtower-samplers")

	var samplers []*harness.Collector
	for i := 1; i <= 2; i++ {
		samplers = append(samplers, harness.StartCollector(t, fmt.Sprintf("otelcol-sampler-%d", i), "deploy/collector/sampler.yaml", map[string]string{
			"WATCHTOWER_KAFKA_BROKERS":             kafka.Bootstrap,
			"WATCHTOWER_KAFKA_SPANS_TOPIC":         spansTopic,
			"WATCHTOWER_KAFKA_SAMPLER_GROUP":       group,
			"WATCHTOWER_KAFKA_CLIENT_ID":           fmt.Sprintf("sampler-%d", i),
			"WATCHTOWER_TRACES_ENDPOINT":           jaeger.OTLPGRPC,
			"WATCHTOWER_SLOW_THRESHOLD_MS":         fmt.Sprint(colSlowThreshold.Milliseconds()),
			"WATCHTOWER_SAMPLING_BASELINE_PERCENT": "0",
			"WATCHTOWER_SAMPLING_DECISION_WAIT":    "8s",
		}))
	}
	ctx := ctxTimeout(t, 4*time.Minute)
	colWaitGroupShared(ctx, t, kafka, group, spansTopic, partitions, len(samplers))

	// The gateway in front: its own tail sampling goes to a sink, so that Jaeger gets only
	// what the sampler tier sends.
	sink := harness.NewOTLPSink(t)
	gw := harness.StartCollector(t, "otelcol-gateway", "deploy/collector/gateway.yaml", map[string]string{
		"WATCHTOWER_KAFKA_BROKERS":       kafka.Bootstrap,
		"WATCHTOWER_KAFKA_SPANS_TOPIC":   spansTopic,
		"WATCHTOWER_KAFKA_METRICS_TOPIC": "watchtower-sampler-metrics",
		"WATCHTOWER_TRACES_ENDPOINT":     sink.Endpoint,
	})

	service := colUniqueService("watchtower-sampler")
	plan := colPlan{Fast: 12, Slow: 12}
	// Each trace reaches Kafka in two records (API call spans, then the reconcile span): both
	// must reach the same sampler for its decision to see the whole trace.
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

	// Every slow trace is in Jaeger, whole.
	var slow []string
	for _, s := range sent {
		if s.Kind == colSlow {
			colWaitJaegerTrace(ctx, t, jaeger, s)
			slow = append(slow, s.TraceID)
		}
	}

	// Exactly once: across the tier, every trace was new to exactly one sampler and decided
	// once, and the samplers together exported exactly the slow traces' spans. A trace split
	// between the samplers would count twice; a duplicate export would count its spans twice.
	sum := func(name string, labels map[string]string, want float64) []float64 {
		t.Helper()
		var per []float64
		deadline := time.Now().Add(time.Minute)
		for {
			per = per[:0]
			total := 0.0
			for _, s := range samplers {
				v, _, err := s.SelfMetric(ctx, name, labels)
				if err != nil {
					t.Fatal(err)
				}
				per = append(per, v)
				total += v
			}
			if total == want {
				return per
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s%v summed over the samplers is %v (per sampler %v), want %v", name, labels, total, per, want)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	traces := float64(plan.total())
	accepted := sum("otelcol_receiver_accepted_spans", map[string]string{"receiver": "kafka"}, float64(plan.total()*colSpansPerReconcile))
	for i, v := range accepted {
		if v == 0 {
			t.Errorf("sampler %d consumed no spans: the group did not share the partitions (per sampler %v)", i+1, accepted)
		}
	}
	sum("otelcol_processor_tail_sampling_new_trace_id_received", nil, traces)
	sum("otelcol_processor_tail_sampling_global_count_traces_sampled", nil, traces)
	sum("otelcol_processor_tail_sampling_global_count_traces_sampled", map[string]string{"decision": "sampled"}, float64(plan.Slow))
	exported := sum("otelcol_exporter_sent_spans", map[string]string{"exporter": "otlp_grpc/traces_backend"}, float64(plan.Slow*colSpansPerReconcile))

	colCheckJaegerHoldsExactly(ctx, t, jaeger, service, sent, slow)
	t.Logf("sampler tier: 2 samplers in group %s over %d partitions consumed %v spans, exported %v spans: all %d slow traces in Jaeger once and whole, no fast one",
		group, partitions, accepted, exported, plan.Slow)
}

// colWaitGroupShared waits until consumer group has members members and all partitions of topic
// are assigned, each member holding at least one.
func colWaitGroupShared(ctx context.Context, t *testing.T, kafka *harness.Kafka, group, topic string, partitions, members int) {
	t.Helper()
	adm := kadm.NewClient(kafka.Client(t))
	var last string
	for {
		described, err := adm.DescribeGroups(ctx, group)
		if err == nil {
			g := described[group]
			assigned := 0
			every := len(g.Members) == members
			for _, m := range g.Members {
				c, ok := m.Assigned.AsConsumer()
				n := 0
				if ok {
					for _, tp := range c.Topics {
						if tp.Topic == topic {
							n += len(tp.Partitions)
						}
					}
				}
				every = every && n > 0
				assigned += n
			}
			last = fmt.Sprintf("state %s, %d members, %d of %d partitions assigned", g.State, len(g.Members), assigned, partitions)
			if g.State == "Stable" && every && assigned == partitions {
				t.Logf("consumer group %s: %s", group, last)
				return
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer group %s never shared %s between %d samplers: %s", group, topic, members, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
