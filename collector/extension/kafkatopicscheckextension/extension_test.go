package kafkatopicscheckextension

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/kafka/configkafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// These tests run the check against kfake, franz-go's in-process fake broker; the real Apache
// Kafka (TLS, SCRAM, a broker started late) is integration/kafka_topics_test.go's.

func newBroker(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// startCheck creates the extension from cfg as the collector does and starts it; the returned
// logs hold what it logged at debug level and above.
func startCheck(t *testing.T, cfg *Config) (extension.Extension, *observer.ObservedLogs, error) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	set := extensiontest.NewNopSettings(Type)
	set.Logger = zap.New(core)
	ext, err := NewFactory().Create(t.Context(), set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = ext.Start(t.Context(), componenttest.NewNopHost())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ext.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return ext, logs, err
}

func testConfig(brokers []string, topics ...string) *Config {
	cfg := createDefaultConfig()
	cfg.Brokers = brokers
	cfg.Topics = topics
	cfg.StartTimeout = 2 * time.Second
	cfg.MaxRetryInterval = 100 * time.Millisecond
	return cfg
}

func topicsOf(t *testing.T, brokers []string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return td.Names()
}

func createTopic(t *testing.T, brokers []string, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until a line at level contains msg.
func waitLog(t *testing.T, logs *observer.ObservedLogs, level zapcore.Level, msg string) observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range logs.All() {
			if e.Level == level && strings.Contains(e.Message, msg) {
				return e
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s log containing %q; logged: %v", level, msg, messages(logs))
	return observer.LoggedEntry{}
}

func messages(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, e.Level.String()+": "+e.Message)
	}
	return out
}

func TestTopicsExist(t *testing.T) {
	b := newBroker(t, kfake.SeedTopics(1, "otlp_spans", "otlp_metrics"))
	_, logs, err := startCheck(t, testConfig(b.ListenAddrs(), "otlp_spans", "otlp_metrics", "otlp_spans"))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	e := waitLog(t, logs, zapcore.InfoLevel, "Kafka topics exist")
	if got := e.ContextMap()["topics"]; !slices.Equal(toStrings(got), []string{"otlp_spans", "otlp_metrics"}) {
		t.Errorf("logged topics %v", got)
	}
}

// A missing topic fails the start with a message naming it, the brokers and the documented
// step; the check itself creates nothing, even on a broker that creates topics on request.
func TestMissingTopicFailsTheStart(t *testing.T) {
	b := newBroker(t, kfake.SeedTopics(1, "otlp_metrics"), kfake.AllowAutoTopicCreation())
	brokers := b.ListenAddrs()
	_, _, err := startCheck(t, testConfig(brokers, "otlp_spanz", "otlp_metrics"))
	if err == nil {
		t.Fatal("Start succeeded with a missing topic")
	}
	for _, want := range []string{
		`Kafka topic "otlp_spanz" does not exist on the brokers ` + brokers[0],
		"never creates a topic",
		"kafka-topics.sh --bootstrap-server " + brokers[0] + " --create --topic otlp_spanz",
		`docs/deploy.md, "Create the Kafka topics"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not contain %q:\n%v", want, err)
		}
	}
	if names := topicsOf(t, brokers); slices.Contains(names, "otlp_spanz") {
		t.Errorf("the check created the topic: %v", names)
	}

	_, _, err = startCheck(t, testConfig(brokers, "otlp_spanz", "otlp_metricz"))
	if err == nil || !strings.Contains(err.Error(), `Kafka topics "otlp_spanz", "otlp_metricz" do not exist`) {
		t.Errorf("two missing topics: %v", err)
	}
}

// on_missing: warn starts, logs the missing topic as an error once, and logs when it exists.
func TestMissingTopicWarnKeepsChecking(t *testing.T) {
	b := newBroker(t, kfake.SeedTopics(1, "otlp_metrics"))
	cfg := testConfig(b.ListenAddrs(), "otlp_spans", "otlp_metrics")
	cfg.OnMissing = Warn
	_, logs, err := startCheck(t, cfg)
	if err != nil {
		t.Fatalf("Start with on_missing warn: %v", err)
	}
	waitLog(t, logs, zapcore.ErrorLevel, `Kafka topic "otlp_spans" does not exist`)
	time.Sleep(500 * time.Millisecond) // several background checks
	if n := logs.FilterMessageSnippet("does not exist").Len(); n != 1 {
		t.Errorf("the missing topic was logged %d times, want once: %v", n, messages(logs))
	}
	createTopic(t, b.ListenAddrs(), "otlp_spans")
	waitLog(t, logs, zapcore.InfoLevel, "Kafka topics exist")
}

// No broker answers: Start tries for start_timeout, then succeeds with a warning that says why; once a broker listens
// there, the background check finds a missing topic (logged as an error) and then the topic.
func TestUnreachableBrokerDoesNotFailTheStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	addr := l.Addr().String()
	l.Close() // nothing listens: connection refused

	cfg := testConfig([]string{addr}, "otlp_spans")
	cfg.StartTimeout = 500 * time.Millisecond
	began := time.Now()
	_, logs, err := startCheck(t, cfg)
	took := time.Since(began)
	if err != nil {
		t.Fatalf("Start failed with no broker: %v", err)
	}
	if took < cfg.StartTimeout || took > cfg.StartTimeout+2*time.Second {
		t.Errorf("Start took %s with a start_timeout of %s: it should try until then, and no longer", took, cfg.StartTimeout)
	}
	w := waitLog(t, logs, zapcore.WarnLevel, "Could not check that the Kafka topics exist; starting anyway")
	if why := w.ContextMap()["error"]; !strings.Contains(toString(why), "connection refused") {
		t.Errorf("the warning's error is %q, want the refused connection", why)
	}
	t.Logf("after %s: %s %v", took.Round(time.Millisecond), w.Message, w.ContextMap()["error"])

	b := newBroker(t, kfake.Ports(port))
	waitLog(t, logs, zapcore.ErrorLevel, `Kafka topic "otlp_spans" does not exist on the brokers `+addr)
	createTopic(t, b.ListenAddrs(), "otlp_spans")
	waitLog(t, logs, zapcore.InfoLevel, "Kafka topics exist")
}

// Shutdown ends the background check even while no broker answers.
func TestShutdownStopsTheBackgroundCheck(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := testConfig([]string{addr}, "otlp_spans")
	cfg.StartTimeout = 200 * time.Millisecond
	ext, _, err := startCheck(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := ext.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Shutdown without Start, and twice, is fine.
	idle := newTopicsCheck(cfg, zap.NewNop())
	if err := idle.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown before Start: %v", err)
	}
}

// SCRAM-SHA-512 and PLAIN as configured for the exporter; a wrong password does not fail the
// start (it is logged, and the exporter reports its own failures).
func TestSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			b := newBroker(t, kfake.EnableSASL(), kfake.Superuser(mech, "otelcol", "s3cret"), kfake.SeedTopics(1, "otlp_spans"))
			cfg := testConfig(b.ListenAddrs(), "otlp_spans")
			cfg.Authentication = configkafka.AuthenticationConfig{SASL: &configkafka.SASLConfig{Mechanism: mech, Username: "otelcol", Password: "s3cret"}}
			_, logs, err := startCheck(t, cfg)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			waitLog(t, logs, zapcore.InfoLevel, "Kafka topics exist")

			cfg = testConfig(b.ListenAddrs(), "otlp_spans")
			cfg.StartTimeout = time.Second
			cfg.Authentication = configkafka.AuthenticationConfig{SASL: &configkafka.SASLConfig{Mechanism: mech, Username: "otelcol", Password: "wrong"}}
			_, logs, err = startCheck(t, cfg)
			if err != nil {
				t.Fatalf("Start with a wrong password failed: %v", err)
			}
			w := waitLog(t, logs, zapcore.WarnLevel, "Could not check")
			for _, e := range logs.All() {
				if strings.Contains(e.Message, "wrong") || strings.Contains(toString(e.ContextMap()["error"]), "wrong") {
					t.Errorf("a log line holds the password: %v", e)
				}
			}
			t.Logf("wrong password: %v", w.ContextMap()["error"])
		})
	}
}

func toStrings(v any) []string {
	var out []string
	if s, ok := v.([]any); ok {
		for _, x := range s {
			out = append(out, toString(x))
		}
	}
	if s, ok := v.([]string); ok {
		out = s
	}
	return out
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}

// auth::plain_text, deprecated upstream for auth::sasl PLAIN, is still what the exporter honours.
func TestDeprecatedPlainText(t *testing.T) {
	b := newBroker(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "otelcol", "s3cret"), kfake.SeedTopics(1, "otlp_spans"))
	cfg := testConfig(b.ListenAddrs(), "otlp_spans")
	cfg.Authentication = configkafka.AuthenticationConfig{PlainText: &configkafka.PlainTextConfig{Username: "otelcol", Password: "s3cret"}}
	_, logs, err := startCheck(t, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitLog(t, logs, zapcore.InfoLevel, "Kafka topics exist")
}
