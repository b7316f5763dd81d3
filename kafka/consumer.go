package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The gateway's default topics (docs/kafka.md).
const (
	DefaultSpansTopic   = "otlp_spans"
	DefaultMetricsTopic = "otlp_metrics"
)

// Batch is one Kafka record, decoded: the spans of one trace (on the spans topic, keyed by
// its trace ID) or a set of metric points (on the metrics topic).
type Batch struct {
	Topic     string
	Partition int32
	Offset    int64
	// Key is the record's key: the trace ID (32 hex digits) on the spans topic.
	Key  []byte
	Time time.Time
	// Traces is set on the spans topic, Metrics on the metrics topic.
	Traces  *ptrace.Traces
	Metrics *pmetric.Metrics
}

// Handler handles one batch. A nil error lets the consumer commit past it; an error is
// retried (with backoff) until it is nil or the consumer stops.
type Handler func(ctx context.Context, b Batch) error

// Consumer reads the gateway's topics in a consumer group. Make one with NewConsumer, run it
// with Run, stop it by cancelling Run's context.
type Consumer struct {
	cfg    config
	client *kgo.Client

	records metric.Int64Counter
	retries metric.Int64Counter
}

type config struct {
	spans, metrics string
	encoding       string
	fromStart      bool
	kgoOpts        []kgo.Opt
	meter          metric.MeterProvider
	onDecodeError  func(*kgo.Record, error)
	maxBackoff     time.Duration
}

// Option configures a Consumer.
type Option func(*config)

// WithTopics sets the topics to read; an empty name is not read. The defaults are the
// gateway's: otlp_spans and otlp_metrics.
func WithTopics(spans, metrics string) Option {
	return func(c *config) { c.spans, c.metrics = spans, metrics }
}

// WithEncoding is the topics' encoding: "otlp_proto" (the gateway's default) or "otlp_json".
func WithEncoding(e string) Option { return func(c *config) { c.encoding = e } }

// FromStart makes a new group start at the oldest retained records instead of the newest. A
// group that has committed offsets resumes from them either way.
func FromStart() Option { return func(c *config) { c.fromStart = true } }

// WithClientOptions adds franz-go options: TLS (kgo.DialTLSConfig), SASL (kgo.SASL), limits.
func WithClientOptions(opts ...kgo.Opt) Option {
	return func(c *config) { c.kgoOpts = append(c.kgoOpts, opts...) }
}

// WithMeterProvider is where the consumer's own metrics go (otel.GetMeterProvider()):
// watchtower.kafka.consumer.records (by topic and outcome), .retries.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.meter = mp } }

// OnDecodeError is told of each record that cannot be decoded, before it is skipped.
func OnDecodeError(f func(r *kgo.Record, err error)) Option {
	return func(c *config) { c.onDecodeError = f }
}

// NewConsumer returns a consumer of group on the brokers (host:port each).
func NewConsumer(brokers []string, group string, opts ...Option) (*Consumer, error) {
	cfg := config{spans: DefaultSpansTopic, metrics: DefaultMetricsTopic, encoding: "otlp_proto", maxBackoff: 30 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case len(brokers) == 0:
		return nil, errors.New("kafka: no brokers")
	case group == "":
		return nil, errors.New("kafka: no consumer group: each reader of the topics needs its own")
	case cfg.spans == "" && cfg.metrics == "":
		return nil, errors.New("kafka: no topic to read")
	case cfg.encoding != "otlp_proto" && cfg.encoding != "otlp_json":
		return nil, fmt.Errorf("kafka: encoding %q: the gateway writes otlp_proto or otlp_json", cfg.encoding)
	}
	var topics []string
	for _, t := range []string{cfg.spans, cfg.metrics} {
		if t != "" {
			topics = append(topics, t)
		}
	}
	reset := kgo.NewOffset().AtEnd()
	if cfg.fromStart {
		reset = kgo.NewOffset().AtStart()
	}
	kopts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(reset),
		// Offsets are committed by Run, after the handler, never automatically.
		kgo.DisableAutoCommit(),
		// On a rebalance, what was handled is committed before the partitions move.
		kgo.BlockRebalanceOnPoll(),
		// Backpressure: what is fetched ahead of the handler is bounded.
		kgo.FetchMaxBytes(16 << 20), kgo.MaxConcurrentFetches(2),
	}, cfg.kgoOpts...)
	client, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	mp := cfg.meter
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/gowatchtower/watchtower/kafka")
	c := &Consumer{cfg: cfg, client: client}
	c.records, _ = m.Int64Counter("watchtower.kafka.consumer.records", metric.WithDescription("Records read, by topic and outcome (handled, undecodable)."))
	c.retries, _ = m.Int64Counter("watchtower.kafka.consumer.retries", metric.WithDescription("Handler calls that failed and were retried."))
	return c, nil
}

// Run reads and handles records until ctx is cancelled (then it commits what was handled and
// returns nil) or reading fails for good (an unknown topic, refused credentials).
func (c *Consumer) Run(ctx context.Context, h Handler) error {
	defer c.client.Close()
	for {
		fetches := c.client.PollRecords(ctx, 1000)
		if ctx.Err() != nil {
			c.client.AllowRebalance()
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("kafka: the client was closed")
		}
		for _, fe := range fetches.Errors() {
			// The client retries what can be retried; the rest is the caller's to fix.
			if !errors.Is(fe.Err, context.Canceled) && !kgo.IsRetryableBrokerErr(fe.Err) {
				c.client.AllowRebalance()
				return fmt.Errorf("kafka: reading %s[%d]: %w", fe.Topic, fe.Partition, fe.Err)
			}
		}
		var handled []*kgo.Record
		stopped := false
		fetches.EachRecord(func(r *kgo.Record) {
			// Stopped: the rest of the fetch is left for the group's next consumer.
			if stopped || ctx.Err() != nil {
				stopped = true
				return
			}
			b, err := c.decode(r)
			if err != nil {
				c.records.Add(ctx, 1, metric.WithAttributes(attribute.String("topic", r.Topic), attribute.String("outcome", "undecodable")))
				if c.cfg.onDecodeError != nil {
					c.cfg.onDecodeError(r, err)
				}
				handled = append(handled, r) // skipped for good: retrying cannot decode it
				return
			}
			if !c.handle(ctx, h, b) {
				stopped = true
				return
			}
			c.records.Add(ctx, 1, metric.WithAttributes(attribute.String("topic", r.Topic), attribute.String("outcome", "handled")))
			handled = append(handled, r)
		})
		if len(handled) > 0 {
			// A failed commit loses nothing: the records are handled again after a restart or
			// a rebalance (at least once).
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = c.client.CommitRecords(cctx, handled...)
			cancel()
		}
		c.client.AllowRebalance()
		if stopped {
			return nil
		}
	}
}

// handle calls h until it returns nil; false when ctx ended first.
func (c *Consumer) handle(ctx context.Context, h Handler, b Batch) bool {
	backoff := 100 * time.Millisecond
	for {
		err := h(ctx, b)
		if err == nil {
			return true
		}
		c.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("topic", b.Topic)))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, c.cfg.maxBackoff)
	}
}

func (c *Consumer) decode(r *kgo.Record) (Batch, error) {
	b := Batch{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Time: r.Timestamp}
	switch r.Topic {
	case c.cfg.spans:
		var td ptrace.Traces
		var err error
		if c.cfg.encoding == "otlp_json" {
			td, err = (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(r.Value)
		} else {
			td, err = (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(r.Value)
		}
		if err != nil {
			return b, fmt.Errorf("%s[%d]@%d: not %s spans: %w", r.Topic, r.Partition, r.Offset, c.cfg.encoding, err)
		}
		b.Traces = &td
	default:
		var md pmetric.Metrics
		var err error
		if c.cfg.encoding == "otlp_json" {
			md, err = (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(r.Value)
		} else {
			md, err = (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(r.Value)
		}
		if err != nil {
			return b, fmt.Errorf("%s[%d]@%d: not %s metrics: %w", r.Topic, r.Partition, r.Offset, c.cfg.encoding, err)
		}
		b.Metrics = &md
	}
	return b, nil
}
