package kafkatopicscheckextension

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/kafka/configkafka"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/confmap/xconfmap"
)

func loadConfig(t *testing.T, id string) *Config {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cm.Sub(id)
	if err != nil {
		t.Fatal(err)
	}
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	if err := sub.Unmarshal(cfg); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	return cfg
}

// The exporter's keys and value forms: a comma-separated broker list, tls, auth::sasl.
func TestConfigHasTheExportersKeys(t *testing.T) {
	got := loadConfig(t, "kafka_topics_check")
	want := &Config{
		Brokers:  []string{"kafka-0:9093", "kafka-1:9093"},
		ClientID: "gateway-0",
		TLS: &configtls.ClientConfig{
			Config:     configtls.Config{CAFile: "/etc/kafka-tls/ca.crt"},
			ServerName: "kafka.example",
		},
		Authentication: configkafka.AuthenticationConfig{SASL: &configkafka.SASLConfig{
			Mechanism: "SCRAM-SHA-512", Username: "otelcol", Password: "secret",
		}},
		Topics:           []string{"otlp_spans", "otlp_metrics"},
		OnMissing:        Warn,
		StartTimeout:     3 * time.Second,
		MaxRetryInterval: 5 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unmarshalled\n%+v\nwant\n%+v", got, want)
	}
	if err := xconfmap.Validate(got); err != nil {
		t.Errorf("a valid config: %v", err)
	}
	if opts, err := got.clientOptions(t.Context()); err == nil {
		t.Errorf("client options built with a CA file that does not exist (%d options)", len(opts))
	} else if !strings.Contains(err.Error(), "tls") {
		t.Errorf("the TLS file error does not name tls: %v", err)
	}

	def := loadConfig(t, "kafka_topics_check/defaults")
	if def.OnMissing != Fail || def.StartTimeout != 10*time.Second || def.MaxRetryInterval != 30*time.Second || !reflect.DeepEqual(def.Brokers, []string{"localhost:9092"}) {
		t.Errorf("defaults: %+v", def)
	}
	if err := xconfmap.Validate(def); err != nil {
		t.Errorf("the defaults with a topic: %v", err)
	}
}

// Each invalid setting is refused with an error naming its key, as the collector prints it
// (the path from the extension's config down to the field).
func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no topics", func(c *Config) { c.Topics = nil }, "`topics` must name at least one topic"},
		{"empty topic", func(c *Config) { c.Topics = []string{"otlp_spans", ""} }, "`topics[1]` \"\" is not a valid Kafka topic name"},
		{"topic with a space", func(c *Config) { c.Topics = []string{"otlp spans"} }, "`topics[0]` \"otlp spans\" is not a valid Kafka topic name"},
		{"topic too long", func(c *Config) { c.Topics = []string{strings.Repeat("t", 250)} }, "`topics[0]`"},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "`brokers` must name at least one broker"},
		{"empty broker", func(c *Config) { c.Brokers = []string{"kafka:9092", " "} }, "`brokers[1]` is empty"},
		{"bad on_missing", func(c *Config) { c.OnMissing = "ignore" }, "`on_missing` must be \"fail\" or \"warn\", not \"ignore\""},
		{"zero start_timeout", func(c *Config) { c.StartTimeout = 0 }, "`start_timeout` must be positive"},
		{"negative max_retry_interval", func(c *Config) { c.MaxRetryInterval = -time.Second }, "`max_retry_interval` must be positive"},
		{"bad protocol_version", func(c *Config) { c.ProtocolVersion = "kafka-9" }, "`protocol_version` \"kafka-9\" is not a Kafka version"},
		{"unknown SASL mechanism", func(c *Config) {
			c.Authentication.SASL = &configkafka.SASLConfig{Mechanism: "MD5", Username: "u", Password: "p"}
		}, "auth::sasl: mechanism should be one of"},
		{"SASL without password", func(c *Config) {
			c.Authentication.SASL = &configkafka.SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "u"}
		}, "auth::sasl: password is required"},
		{"OAUTHBEARER", func(c *Config) {
			c.Authentication.SASL = &configkafka.SASLConfig{Mechanism: "OAUTHBEARER", OAuthBearerTokenSource: component.MustNewID("oauth2client")}
		}, "`auth::sasl::mechanism` OAUTHBEARER is not supported"},
		{"kerberos", func(c *Config) { c.Authentication.Kerberos = &configkafka.KerberosConfig{} }, "`auth::kerberos` is not supported"},
		{"TLS minimum version", func(c *Config) {
			c.TLS = &configtls.ClientConfig{Config: configtls.Config{MinVersion: "1.9"}}
		}, "tls: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := createDefaultConfig()
			cfg.Topics = []string{"otlp_spans"}
			tc.edit(cfg)
			err := xconfmap.Validate(cfg)
			if err == nil {
				t.Fatalf("accepted %+v", cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigUnknownKeyIsRefused(t *testing.T) {
	cfg := createDefaultConfig()
	err := confmap.NewFromStringMap(map[string]any{"topics": []any{"otlp_spans"}, "topic": "otlp_spans"}).Unmarshal(cfg)
	if err == nil || !strings.Contains(err.Error(), "topic") {
		t.Errorf("an unknown key: %v", err)
	}
}

func TestUniqueTopics(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Topics = []string{"otlp", "otlp_metrics", "otlp"}
	if got := cfg.uniqueTopics(); !reflect.DeepEqual(got, []string{"otlp", "otlp_metrics"}) {
		t.Errorf("uniqueTopics = %v", got)
	}
}

func TestConfigErrorsOnOneLine(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.OnMissing, cfg.StartTimeout = "maybe", 0
	err := xconfmap.Validate(cfg)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "`on_missing`") || !strings.Contains(err.Error(), "`start_timeout`") || !strings.Contains(err.Error(), "`topics`") {
		t.Errorf("three errors on one line: %q", err)
	}
}
