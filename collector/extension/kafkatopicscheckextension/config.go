package kafkatopicscheckextension

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/kafka/configkafka"
	"github.com/twmb/franz-go/pkg/kversion"
	"go.opentelemetry.io/collector/config/configtls"
)

// OnMissing is what Start does when the broker answers that a topic does not exist.
type OnMissing string

const (
	// Fail makes Start return an error naming the missing topics: the collector exits at start.
	Fail OnMissing = "fail"
	// Warn logs the missing topics as an error, starts anyway, and keeps checking in the
	// background until they exist.
	Warn OnMissing = "warn"
)

// Config is the extension's configuration. The connection settings (brokers, client_id,
// protocol_version, tls, auth) have the keys and types of the Kafka exporter's, so a
// configuration gives both the same values.
type Config struct {
	// Brokers are the bootstrap brokers, "host:port".
	Brokers []string `mapstructure:"brokers"`
	// ClientID is the client ID the check announces to the brokers.
	ClientID string `mapstructure:"client_id"`
	// ProtocolVersion pins the Kafka protocol version, as the exporter's protocol_version.
	ProtocolVersion string `mapstructure:"protocol_version"`
	// TLS to the brokers; nil is plaintext.
	TLS *configtls.ClientConfig `mapstructure:"tls"`
	// Authentication: SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Authentication configkafka.AuthenticationConfig `mapstructure:"auth"`

	// Topics are the topics that must exist: those the collector writes to.
	Topics []string `mapstructure:"topics"`
	// OnMissing is what Start does when a topic is missing: fail (default) or warn.
	OnMissing OnMissing `mapstructure:"on_missing"`
	// StartTimeout bounds the check at start: a broker that has not answered by then does not
	// fail the start; the check goes on in the background. It also bounds each later attempt.
	StartTimeout time.Duration `mapstructure:"start_timeout"`
	// MaxRetryInterval is the longest wait between two background checks (the wait starts at
	// one second and doubles up to it).
	MaxRetryInterval time.Duration `mapstructure:"max_retry_interval"`

	// prevent unkeyed literal initialization
	_ struct{}
}

func createDefaultConfig() *Config {
	return &Config{
		Brokers:          []string{"localhost:9092"},
		ClientID:         "otel-collector",
		OnMissing:        Fail,
		StartTimeout:     10 * time.Second,
		MaxRetryInterval: 30 * time.Second,
	}
}

// Kafka's own rule for a topic name (org.apache.kafka.common.internals.Topic).
var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// Validate checks the settings; each error names its key. The nested tls and auth::sasl
// sections are validated by their own types as well.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("`brokers` must name at least one broker"))
	}
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			errs = append(errs, fmt.Errorf("`brokers[%d]` is empty", i))
		}
	}
	if c.ProtocolVersion != "" && kversion.FromString(c.ProtocolVersion) == nil {
		errs = append(errs, fmt.Errorf("`protocol_version` %q is not a Kafka version", c.ProtocolVersion))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("`topics` must name at least one topic"))
	}
	for i, t := range c.Topics {
		if !topicName.MatchString(t) || t == "." || t == ".." {
			errs = append(errs, fmt.Errorf("`topics[%d]` %q is not a valid Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)", i, t))
		}
	}
	switch c.OnMissing {
	case Fail, Warn:
	default:
		errs = append(errs, fmt.Errorf("`on_missing` must be %q or %q, not %q", Fail, Warn, c.OnMissing))
	}
	if c.StartTimeout <= 0 {
		errs = append(errs, fmt.Errorf("`start_timeout` must be positive, not %s", c.StartTimeout))
	}
	if c.MaxRetryInterval <= 0 {
		errs = append(errs, fmt.Errorf("`max_retry_interval` must be positive, not %s", c.MaxRetryInterval))
	}
	if s := c.Authentication.SASL; s != nil {
		switch s.Mechanism {
		case mechanismPlain, mechanismSCRAMSHA256, mechanismSCRAMSHA512:
		case "AWS_MSK_IAM_OAUTHBEARER", "OAUTHBEARER":
			errs = append(errs, fmt.Errorf("`auth::sasl::mechanism` %s is not supported by this extension (only %s, %s and %s)",
				s.Mechanism, mechanismPlain, mechanismSCRAMSHA256, mechanismSCRAMSHA512))
		}
		// Other mechanisms: configkafka.SASLConfig.Validate names them.
	}
	if c.Authentication.Kerberos != nil {
		errs = append(errs, errors.New("`auth::kerberos` is not supported by this extension (only SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512)"))
	}
	// One line, so that the collector's prefix (extensions::kafka_topics_check:) heads each.
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New(strings.Join(msgs, "; "))
}

// uniqueTopics is Topics without repeats, in order (two signals may share a topic).
func (c *Config) uniqueTopics() []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range c.Topics {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}
