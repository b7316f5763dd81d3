package kafkatopicscheckextension

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

const (
	mechanismPlain       = "PLAIN"
	mechanismSCRAMSHA256 = "SCRAM-SHA-256"
	mechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// clientOptions maps the connection settings to franz-go options as the Kafka exporter does
// (contrib's internal/kafka, which other modules cannot import): TLS from tls (or the
// deprecated auth::tls), SASL PLAIN and SCRAM, the client ID and the protocol version.
// Loading the TLS files happens here, so a missing CA file is an error at start.
func (c *Config) clientOptions(ctx context.Context) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		// As the exporter: brokers that claim to support client metrics and then fail them.
		kgo.DisableClientMetrics(),
	}
	tlsSettings := c.TLS
	if tlsSettings == nil {
		// Deprecated upstream, still honoured by the exporter when tls is unset; so here.
		tlsSettings = c.Authentication.TLS
	}
	if tlsSettings != nil {
		tc, err := tlsSettings.LoadTLSConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("load the TLS settings (tls): %w", err)
		}
		if tc != nil {
			opts = append(opts, kgo.DialTLSConfig(tc))
		}
	}
	// auth::plain_text: deprecated upstream for auth::sasl PLAIN, still honoured by the exporter.
	if p := c.Authentication.PlainText; p != nil {
		opts = append(opts, kgo.SASL(plain.Auth{User: p.Username, Pass: p.Password}.AsMechanism()))
	}
	if s := c.Authentication.SASL; s != nil {
		switch s.Mechanism {
		case mechanismPlain:
			opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism()))
		case mechanismSCRAMSHA256:
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism()))
		case mechanismSCRAMSHA512:
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism()))
		default:
			return nil, fmt.Errorf("SASL mechanism %q is not supported (auth::sasl::mechanism)", s.Mechanism)
		}
	}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.ProtocolVersion != "" {
		v := kversion.FromString(c.ProtocolVersion)
		if v == nil {
			return nil, fmt.Errorf("protocol_version %q is not a Kafka version", c.ProtocolVersion)
		}
		opts = append(opts, kgo.MinVersions(v), kgo.MaxVersions(v))
	}
	return opts, nil
}

// checkResult is what one look at the brokers found.
type checkResult struct {
	// missing are the topics the broker says do not exist (UNKNOWN_TOPIC_OR_PARTITION).
	missing []string
	// err is why some or all topics could not be checked: no broker answered, TLS or SASL
	// failed, a topic is not ours to describe. Nil when every topic was checked.
	err error
}

// checkTopics asks the brokers for the metadata of topics, once, with a client of its own.
// The request does not allow topic auto-creation: asking never creates a topic, whatever the
// broker's auto.create.topics.enable says.
func checkTopics(ctx context.Context, opts []kgo.Opt, topics []string) checkResult {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return checkResult{err: err}
	}
	defer cl.Close()

	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return checkResult{err: err}
	}
	answered := make(map[string]int16, len(resp.Topics))
	for _, t := range resp.Topics {
		if t.Topic != nil {
			answered[*t.Topic] = t.ErrorCode
		}
	}
	var r checkResult
	var errs []error
	for _, t := range topics {
		code, ok := answered[t]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("topic %q: not in the broker's answer", t))
		case code == 0, code == kerr.LeaderNotAvailable.Code:
			// It exists (without a leader for the moment: being created, or an election).
		case code == kerr.UnknownTopicOrPartition.Code:
			r.missing = append(r.missing, t)
		default:
			errs = append(errs, fmt.Errorf("topic %q: %w", t, kerr.ErrorForCode(code)))
		}
	}
	r.err = errors.Join(errs...)
	return r
}
