package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestGatewayNeverCreatesATopic points the gateway at a spans topic that does not exist, on a
// broker that would create it for any client asking (Kafka's default): the gateway does not
// ask (allow_auto_topic_creation: false), so no stray topic appears, its sends fail with an
// error that names the topic, and it keeps the spans to send them once the topic is created.
func TestGatewayNeverCreatesATopic(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	// A typo of otlp_spans.
	const topic = "otlp_spanz"
	kafka := harness.StartKafka(t, harness.WithKafkaAutoCreateTopics())
	kafka.CreateTopic(t, "otlp_metrics", 1)
	jaeger := harness.StartJaeger(t)
	gw := startGateway(t, kafka, jaeger.OTLPGRPC, "WATCHTOWER_KAFKA_SPANS_TOPIC="+topic)
	ctx := ctxTimeout(t, 3*time.Minute)

	service := colUniqueService("missing-topic")
	if code, msg := postOTLPTraces(ctx, gw.OTLPHTTP, marshalTraces(t, badTraces(service, nil)), "application/x-protobuf", ""); code != 200 {
		t.Fatalf("the gateway answered %d %s to a valid span", code, msg)
	}
	waitFor(t, ctx, "the gateway's log to name the missing topic", func() (bool, error) {
		log := gw.Process().LogTail(64 << 10)
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, topic) && strings.Contains(strings.ToLower(l), "error") {
				t.Logf("the gateway says: %s", l)
				return true, nil
			}
		}
		return false, fmt.Errorf("no error line names %s", topic)
	})
	adm := kadm.NewClient(kafka.Client(t))
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := topics.Names(); slices.Contains(names, topic) {
		t.Fatalf("the gateway created topic %s (topics: %v)", topic, names)
	}

	// The documented step, late: the queued span goes out.
	kafka.CreateTopic(t, topic, 1)
	waitFor(t, ctx, "the span in the topic once it exists", func() (bool, error) {
		for _, s := range readSpans(t, ctx, kafka, topic) {
			if s.service == service {
				return true, nil
			}
		}
		return false, nil
	})
}
