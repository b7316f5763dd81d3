// Package kafka connects to a Watchtower's Kafka cluster with the pipeline's own credentials,
// creates the topics that are missing and reports how existing ones differ from the spec. It
// never changes an existing topic: partitions cannot shrink and retention is a data decision.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// Credentials are the Secret values the spec refers to, read by the caller.
type Credentials struct {
	Username, Password string
	CA, Cert, Key      []byte
}

// Topic is a topic as the spec wants it.
type Topic struct {
	Name              string
	Partitions        int32
	ReplicationFactor int32         // 0: the broker's default
	Retention         time.Duration // 0: the broker's default
}

// Reasons of a failed check, for the KafkaReachable condition.
const (
	ReasonUnreachable       = "BrokersUnreachable"
	ReasonAuthentication    = "AuthenticationFailed"
	ReasonTLS               = "TLSFailed"
	ReasonNotAuthorized     = "NotAuthorized"
	ReasonTopicCreateFailed = "TopicCreateFailed"
)

// Error is a failed check with the reason a condition reports.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Ensure connects to the brokers, creates the missing topics and returns every topic as found.
// A failure is an *Error whose message a person on call understands.
func Ensure(ctx context.Context, spec v1alpha1.KafkaSpec, creds Credentials, topics []Topic) ([]v1alpha1.TopicStatus, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(spec.Brokers...),
		kgo.ClientID("watchtower-operator"),
		kgo.DialTimeout(5 * time.Second),
		kgo.RequestRetries(2),
		kgo.RetryTimeout(8 * time.Second),
	}
	if spec.TLS != nil {
		cfg, err := tlsConfig(spec.TLS, creds)
		if err != nil {
			return nil, &Error{ReasonTLS, err}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if spec.SASL != nil {
		switch spec.SASL.MechanismOrDefault() {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: creds.Username, Pass: creds.Password}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: creds.Username, Pass: creds.Password}.AsSha256Mechanism()))
		default:
			opts = append(opts, kgo.SASL(scram.Auth{User: creds.Username, Pass: creds.Password}.AsSha512Mechanism()))
		}
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, &Error{ReasonUnreachable, fmt.Errorf("configuring the Kafka client: %w", err)}
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.Name
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, classify(spec, err)
	}
	var out []v1alpha1.TopicStatus
	for _, t := range topics {
		d, ok := details[t.Name]
		if ok && d.Err == nil {
			out = append(out, existing(t, d))
			continue
		}
		if ok && d.Err != nil && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			return nil, classify(spec, fmt.Errorf("reading topic %q: %w", t.Name, d.Err))
		}
		rf := int16(-1)
		if t.ReplicationFactor > 0 {
			rf = int16(t.ReplicationFactor)
		}
		var configs map[string]*string
		if t.Retention > 0 {
			ms := strconv.FormatInt(t.Retention.Milliseconds(), 10)
			configs = map[string]*string{"retention.ms": &ms}
		}
		resp, err := adm.CreateTopic(ctx, t.Partitions, rf, configs, t.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			if e := classify(spec, err); e.Reason != ReasonUnreachable {
				return nil, e
			}
			msg := err.Error()
			if resp.ErrMessage != "" {
				msg += ": " + resp.ErrMessage
			}
			return nil, &Error{ReasonTopicCreateFailed, fmt.Errorf("creating topic %q (%d partitions): %s", t.Name, t.Partitions, msg)}
		}
		st := v1alpha1.TopicStatus{Name: t.Name, Partitions: resp.NumPartitions, ReplicationFactor: int32(resp.ReplicationFactor), Created: err == nil}
		if st.Partitions <= 0 {
			st.Partitions = t.Partitions
		}
		out = append(out, st)
	}
	// Retention of the existing topics, where the spec sets one.
	var withRetention []string
	for _, t := range topics {
		if t.Retention > 0 {
			withRetention = append(withRetention, t.Name)
		}
	}
	if len(withRetention) > 0 {
		cfgs, err := adm.DescribeTopicConfigs(ctx, withRetention...)
		if err == nil {
			for i := range out {
				t := topics[i]
				if t.Retention <= 0 || out[i].Created {
					continue
				}
				if rc, err := cfgs.On(t.Name, nil); err == nil {
					for _, c := range rc.Configs {
						if c.Key == "retention.ms" && c.Value != nil && *c.Value != strconv.FormatInt(t.Retention.Milliseconds(), 10) {
							out[i].Differs = joinDiff(out[i].Differs, fmt.Sprintf("retention.ms is %s, the spec says %d", *c.Value, t.Retention.Milliseconds()))
						}
					}
				}
			}
		}
	}
	return out, nil
}

func existing(t Topic, d kadm.TopicDetail) v1alpha1.TopicStatus {
	st := v1alpha1.TopicStatus{Name: t.Name, Partitions: int32(len(d.Partitions))}
	if rf := d.Partitions.NumReplicas(); rf > 0 {
		st.ReplicationFactor = int32(rf)
	}
	if st.Partitions != t.Partitions {
		st.Differs = fmt.Sprintf("%d partitions, the spec says %d", st.Partitions, t.Partitions)
	}
	if t.ReplicationFactor > 0 && st.ReplicationFactor != t.ReplicationFactor {
		st.Differs = joinDiff(st.Differs, fmt.Sprintf("replication factor %d, the spec says %d", st.ReplicationFactor, t.ReplicationFactor))
	}
	return st
}

func joinDiff(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// classify names what went wrong in words a person on call can act on.
func classify(spec v1alpha1.KafkaSpec, err error) *Error {
	brokers := strings.Join(spec.Brokers, ", ")
	var ke *kerr.Error
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.UnsupportedSaslMechanism):
		secret := ""
		if spec.SASL != nil {
			secret = fmt.Sprintf(" (Secret %q, mechanism %s)", spec.SASL.SecretName, spec.SASL.Mechanism)
		}
		return &Error{ReasonAuthentication, fmt.Errorf("the brokers %s rejected the SASL credentials%s: %w", brokers, secret, err)}
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return &Error{ReasonNotAuthorized, fmt.Errorf("the pipeline's Kafka user may not describe or create its topics on %s: %w", brokers, err)}
	case isTLS(err):
		return &Error{ReasonTLS, fmt.Errorf("TLS to the brokers %s failed: %w", brokers, err)}
	case errors.As(err, &ke):
		return &Error{ReasonUnreachable, fmt.Errorf("the brokers %s answered with an error: %w", brokers, err)}
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{ReasonUnreachable, fmt.Errorf("no broker of %s answered: %w", brokers, err)}
	}
	// A closed connection right after the handshake is how many brokers refuse a client that
	// speaks plaintext to a SASL or TLS listener.
	return &Error{ReasonUnreachable, fmt.Errorf("no broker of %s answered (check the address, the listener's security protocol and the credentials): %w", brokers, err)}
}

func isTLS(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var rh tls.RecordHeaderError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &rh)
}

func tlsConfig(t *v1alpha1.KafkaTLS, creds Credentials) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if len(creds.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(creds.CA) {
			return nil, fmt.Errorf("the Secret %q key %q holds no PEM certificate", t.SecretName, t.CAKeyOrDefault())
		}
		cfg.RootCAs = pool
	}
	if len(creds.Cert) > 0 {
		pair, err := tls.X509KeyPair(creds.Cert, creds.Key)
		if err != nil {
			return nil, fmt.Errorf("the Secret %q keys %q and %q are not a certificate and its key: %w", t.SecretName, t.CertKey, t.KeyKey, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
