package integration

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestGatewayRefusesToStartWithoutItsTopics points the gateway at a spans topic that does not
// exist, on a broker that would create it for any client asking (Kafka's default): the
// kafka_topics_check extension asks the broker at start, the gateway exits non-zero with an
// error naming the missing topic, the brokers and the documented step that creates it, and the
// check did not create the topic by asking.
func TestGatewayRefusesToStartWithoutItsTopics(t *testing.T) {
	t.Parallel()               // its components are its own, on reserved ports; see docs/testing.md
	const topic = "otlp_spanz" // a typo of otlp_spans
	kafka := harness.StartKafka(t, harness.WithKafkaAutoCreateTopics())
	kafka.CreateTopic(t, "otlp_metrics", 1)

	gw, began := startGatewayProcess(t, kafka, "WATCHTOWER_KAFKA_SPANS_TOPIC="+topic)
	select {
	case <-gw.Done():
	case <-time.After(90 * time.Second):
		t.Fatalf("the gateway is still running 90 s after its start with topic %s missing", topic)
	}
	exited := time.Since(began)
	if code := gw.ExitCode(); code == 0 {
		t.Errorf("the gateway exited with status 0 with topic %s missing", topic)
	}
	log := gw.LogTail(64 << 10)
	var errorLine string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "Error:") {
			errorLine = l
		}
	}
	t.Logf("exit status %d after %s; the gateway says:\n%s", gw.ExitCode(), exited.Round(time.Millisecond), errorLine)
	for _, want := range []string{
		`Error: failed to start extensions: Kafka topic "otlp_spanz" does not exist on the brokers ` + kafka.Bootstrap,
		"kafka-topics.sh --bootstrap-server " + kafka.Bootstrap + " --create --topic otlp_spanz",
		`docs/deploy.md, "Create the Kafka topics"`,
	} {
		if !strings.Contains(errorLine, want) {
			t.Errorf("the gateway's last error line does not contain %q:\n%s", want, errorLine)
		}
	}
	if strings.Contains(log, "Everything is ready") {
		t.Errorf("the gateway said it was ready with a missing topic")
	}

	ctx := ctxTimeout(t, time.Minute)
	topics, err := kadm.NewClient(kafka.Client(t)).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := topics.Names(); slices.Contains(names, topic) {
		t.Fatalf("the check created topic %s (topics: %v)", topic, names)
	}
}

// TestGatewayStartsWhileKafkaIsDown: with no broker answering, the check does not fail the
// start (the persistent queue holds what the gateway accepts): the gateway is healthy after the
// check's timeout and accepts spans. When the broker is back without the spans topic, the
// background check logs the missing topic once; once the topic is created, it logs that the
// topics exist, and the accepted span reaches it.
func TestGatewayStartsWhileKafkaIsDown(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kafka := harness.StartKafka(t)
	kafka.CreateTopic(t, "otlp_metrics", 1)
	kafka.Stop(t)
	jaeger := harness.StartJaeger(t)
	const checkTimeout = 3 * time.Second
	gw := startGateway(t, kafka, jaeger.OTLPGRPC, "WATCHTOWER_KAFKA_TOPICS_CHECK_TIMEOUT="+checkTimeout.String())
	t.Logf("healthy %s after its start, with the check's timeout at %s", gw.Started.Round(time.Millisecond), checkTimeout)
	if gw.Started < checkTimeout {
		t.Errorf("healthy after %s: the check gave up before its %s timeout", gw.Started, checkTimeout)
	}
	ctx := ctxTimeout(t, 4*time.Minute)
	logLine := func(what string, match func(string) bool) string {
		t.Helper()
		var found string
		waitFor(t, ctx, what, func() (bool, error) {
			for _, l := range strings.Split(gw.Process().LogTail(256<<10), "\n") {
				if match(l) {
					found = l
					return true, nil
				}
			}
			return false, nil
		})
		return found
	}
	warning := logLine("the check's warning", func(l string) bool {
		return strings.Contains(l, "warn") && strings.Contains(l, "Could not check that the Kafka topics exist")
	})
	t.Logf("Kafka down at start: %s", warning)
	if !strings.Contains(warning, "connection refused") {
		t.Errorf("the warning does not say why: %s", warning)
	}

	service := colUniqueService("kafka-down-at-start")
	if code, msg := postOTLPTraces(ctx, gw.OTLPHTTP, marshalTraces(t, badTraces(service, nil)), "application/x-protobuf", ""); code != 200 {
		t.Fatalf("the gateway answered %d %s to a valid span while Kafka is down", code, msg)
	}

	// The broker is back, without the spans topic.
	kafka.Start(t)
	back := time.Now()
	missing := logLine("the background check to name the missing topic", func(l string) bool {
		return strings.Contains(l, "error") && strings.Contains(l, `Kafka topic "otlp_spans" does not exist`) && strings.Contains(l, "found after the start")
	})
	t.Logf("%s after the broker answered again: %s", time.Since(back).Round(time.Millisecond), missing)

	kafka.CreateTopic(t, "otlp_spans", 1)
	created := time.Now()
	logLine("the background check to find the topics", func(l string) bool {
		return strings.Contains(l, "info") && strings.Contains(l, "Kafka topics exist")
	})
	t.Logf("the check found the topics %s after they were created", time.Since(created).Round(time.Millisecond))
	waitFor(t, ctx, "the span accepted while Kafka was down, in the topic", func() (bool, error) {
		for _, s := range readSpans(t, ctx, kafka, "otlp_spans") {
			if s.service == service {
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("the span reached Kafka %s after the topic was created", time.Since(created).Round(time.Millisecond))
	if n := strings.Count(gw.Process().LogTail(1<<20), `does not exist on the brokers`); n != 1 {
		t.Errorf("the missing topic was logged %d times, want once", n)
	}
}

// TestGatewayNeverCreatesATopic points the gateway at a spans topic that does not exist, on a
// broker that would create it for any client asking (Kafka's default), with the topic check
// set to warn (WATCHTOWER_KAFKA_TOPICS_CHECK=warn) so that the gateway starts anyway: the check
// logs the missing topic at start, neither it nor the exporter asks for the topic to be created
// (allow_auto_topic_creation: false), so no stray topic appears; the exporter's sends fail
// with an error that names the topic, and it keeps the spans to send them once the topic is
// created.
func TestGatewayNeverCreatesATopic(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	// A typo of otlp_spans.
	const topic = "otlp_spanz"
	kafka := harness.StartKafka(t, harness.WithKafkaAutoCreateTopics())
	kafka.CreateTopic(t, "otlp_metrics", 1)
	jaeger := harness.StartJaeger(t)
	gw := startGateway(t, kafka, jaeger.OTLPGRPC, "WATCHTOWER_KAFKA_SPANS_TOPIC="+topic, "WATCHTOWER_KAFKA_TOPICS_CHECK=warn")
	ctx := ctxTimeout(t, 3*time.Minute)

	service := colUniqueService("missing-topic")
	if code, msg := postOTLPTraces(ctx, gw.OTLPHTTP, marshalTraces(t, badTraces(service, nil)), "application/x-protobuf", ""); code != 200 {
		t.Fatalf("the gateway answered %d %s to a valid span", code, msg)
	}
	for _, c := range []struct{ who, marker string }{
		{"the topic check", `Kafka topic "` + topic + `" does not exist`},
		{"the exporter", "kafka records export failed"},
	} {
		waitFor(t, ctx, c.who+" to name the missing topic in the gateway's log", func() (bool, error) {
			log := gw.Process().LogTail(64 << 10)
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, c.marker) && strings.Contains(l, topic) && strings.Contains(strings.ToLower(l), "error") {
					t.Logf("%s says: %s", c.who, l)
					return true, nil
				}
			}
			return false, fmt.Errorf("no error line of %s names %s", c.who, topic)
		})
	}
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

// startGatewayProcess starts the built otelcol-watchtower with deploy/collector/gateway.yaml as
// startGateway does, on reserved ports, but does not wait for it to be healthy: for a gateway
// that is expected to exit at start. It returns the process and when it was started.
func startGatewayProcess(t *testing.T, kafka *harness.Kafka, env ...string) (*harness.Process, time.Time) {
	t.Helper()
	build := harness.BuildCollector(t)
	tools := harness.MustTools(t)
	vars := []string{
		"WATCHTOWER_KAFKA_BROKERS=" + kafka.Bootstrap,
		"WATCHTOWER_TRACES_ENDPOINT=" + harness.Loopback(harness.FreePort(t)),
		"WATCHTOWER_HEALTH_ENDPOINT=" + harness.Loopback(harness.FreePort(t)),
		"WATCHTOWER_OTLP_GRPC_ENDPOINT=" + harness.Loopback(harness.FreePort(t)),
		"WATCHTOWER_OTLP_HTTP_ENDPOINT=" + harness.Loopback(harness.FreePort(t)),
		"WATCHTOWER_PROMETHEUS_ENDPOINT=" + harness.Loopback(harness.FreePort(t)),
		"WATCHTOWER_SELF_METRICS_HOST=127.0.0.1",
		"WATCHTOWER_SELF_METRICS_PORT=" + strconv.Itoa(harness.FreePort(t)),
		"WATCHTOWER_QUEUE_DIR=" + filepath.Join(t.TempDir(), "queue"),
	}
	began := time.Now()
	p := harness.StartProcess(t, harness.ProcessSpec{
		Name:        "otelcol-watchtower",
		Path:        build.Path,
		Args:        []string{"--config", filepath.Join(tools.RepoRoot, "deploy", "collector", "gateway.yaml")},
		Env:         append(vars, env...),
		StopTimeout: 20 * time.Second,
	})
	return p, began
}
