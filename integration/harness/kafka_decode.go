package harness

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// ReadAllRecords returns every record topic holds right now: it lists each partition's end
// offset, then consumes every partition from its start to that offset. Records produced after
// the listing are not read, so the result is exact for a topic nobody writes to any more (e.g.
// after the producing collector stopped).
func (k *Kafka) ReadAllRecords(ctx context.Context, topic string) ([]*kgo.Record, error) {
	admin, err := kgo.NewClient(kgo.SeedBrokers(k.Bootstrap))
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %q: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %q: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("end offsets of %q: %w", topic, err)
	}
	if len(ends[topic]) == 0 {
		return nil, fmt.Errorf("topic %q has no partitions (does it exist?)", topic)
	}
	// next[p] is the offset still to be read in partition p, until it reaches end[p].
	next, end := map[int32]int64{}, map[int32]int64{}
	consume := map[int32]kgo.Offset{}
	for p, o := range ends[topic] {
		start := starts[topic][p].Offset
		if o.Offset > start {
			next[p], end[p] = start, o.Offset
			consume[p] = kgo.NewOffset().At(start)
		}
	}
	if len(consume) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(k.Bootstrap),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: consume}),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var recs []*kgo.Record
	for pending := len(next); pending > 0; {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return recs, fmt.Errorf("read %q: %d partitions not read to their end offsets: %w", topic, pending, ctx.Err())
		}
		for _, fe := range fetches.Errors() {
			return recs, fmt.Errorf("read %q partition %d: %w", fe.Topic, fe.Partition, fe.Err)
		}
		for _, r := range fetches.Records() {
			if r.Offset >= end[r.Partition] {
				continue
			}
			recs = append(recs, r)
			if next[r.Partition] < end[r.Partition] && r.Offset+1 >= end[r.Partition] {
				pending--
			}
			next[r.Partition] = r.Offset + 1
		}
	}
	return recs, nil
}

// ReadRecordsUntil consumes topic from the beginning, across all its partitions, until done
// returns true for the records read so far or ctx ends; it returns what it read either way,
// with ctx's error if it ended first.
func (k *Kafka) ReadRecordsUntil(ctx context.Context, topic string, done func([]*kgo.Record) bool) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(k.Bootstrap),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(250*time.Millisecond),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var recs []*kgo.Record
	for !done(recs) {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return recs, fmt.Errorf("read %q: condition not met after %d records: %w", topic, len(recs), ctx.Err())
		}
		for _, fe := range fetches.Errors() {
			if !isRetriable(fe.Err) {
				return recs, fmt.Errorf("read %q partition %d: %w", fe.Topic, fe.Partition, fe.Err)
			}
		}
		recs = append(recs, fetches.Records()...)
	}
	return recs, nil
}

// ConsoleRecord is what Kafka's console consumer printed for one record.
type ConsoleRecord struct {
	Partition int32
	Offset    int64
	Key       string
}

var consoleTotal = regexp.MustCompile(`Processed a total of (\d+) messages`)

// ConsoleConsumeRecords reads up to n records of topic from the beginning with Kafka's own
// console consumer, like ConsoleConsume, but for binary values (OTLP protobuf): it prints each
// record's partition and offset, and its key when withKeys is set (only for text keys such as
// the hex trace IDs of the spans topic: a binary key may hold a newline), instead of its value,
// and returns them together with the total the consumer reports on exit ("Processed a total of
// N messages").
func (k *Kafka) ConsoleConsumeRecords(ctx context.Context, topic string, n int, timeout time.Duration, withKeys bool) (recs []ConsoleRecord, total int, err error) {
	args := k.jvmArgs("org.apache.kafka.tools.consumer.ConsoleConsumer",
		"--bootstrap-server", k.Bootstrap,
		"--topic", topic,
		"--from-beginning",
		"--max-messages", strconv.Itoa(n),
		"--timeout-ms", strconv.FormatInt(timeout.Milliseconds(), 10),
		"--formatter-property", "print.partition=true",
		"--formatter-property", "print.offset=true",
		"--formatter-property", "print.key="+strconv.FormatBool(withKeys),
		"--formatter-property", "print.value=false",
	)
	cmd := exec.CommandContext(ctx, k.java, args...)
	cmd.Env, cmd.SysProcAttr = componentEnv(nil), sysProcAttr()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	for _, line := range strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		var r ConsoleRecord
		var sawPartition, sawOffset bool
		fields := strings.SplitN(line, "\t", 3)
		for i, f := range fields {
			switch {
			case strings.HasPrefix(f, "Partition:"):
				p, perr := strconv.ParseInt(strings.TrimPrefix(f, "Partition:"), 10, 32)
				if perr != nil {
					return recs, total, fmt.Errorf("kafka-console-consumer printed %q: %w", line, perr)
				}
				r.Partition, sawPartition = int32(p), true
			case strings.HasPrefix(f, "Offset:"):
				o, oerr := strconv.ParseInt(strings.TrimPrefix(f, "Offset:"), 10, 64)
				if oerr != nil {
					return recs, total, fmt.Errorf("kafka-console-consumer printed %q: %w", line, oerr)
				}
				r.Offset, sawOffset = o, true
			case i == 2 && withKeys:
				r.Key = f
			case i == 2 && f == "":
				// a trailing separator
			default:
				return recs, total, fmt.Errorf("kafka-console-consumer printed %q, want Partition:N<TAB>Offset:N[<TAB>key]", line)
			}
		}
		if !sawPartition || !sawOffset {
			return recs, total, fmt.Errorf("kafka-console-consumer printed %q, want Partition:N<TAB>Offset:N<TAB>key", line)
		}
		recs = append(recs, r)
	}
	if m := consoleTotal.FindStringSubmatch(stderr.String()); m != nil {
		total, _ = strconv.Atoi(m[1])
	} else if runErr == nil {
		return recs, total, fmt.Errorf("kafka-console-consumer did not report its total:\n%s", stderr.String())
	}
	if runErr != nil {
		return recs, total, fmt.Errorf("kafka-console-consumer: %w\n%s", runErr, stderr.String())
	}
	return recs, total, nil
}

// ReadAllTraces reads every record of topic up to its current end and decodes each as OTLP
// protobuf traces (one ptrace.Traces per record, in order).
func (k *Kafka) ReadAllTraces(ctx context.Context, topic string) ([]ptrace.Traces, error) {
	recs, err := k.ReadAllRecords(ctx, topic)
	if err != nil {
		return nil, err
	}
	return DecodeTraces(recs)
}

// DecodeTraces decodes records written with the Kafka exporter's otlp_proto encoding (one
// OTLP ExportTraceServiceRequest per record), in order.
func DecodeTraces(recs []*kgo.Record) ([]ptrace.Traces, error) {
	var u ptrace.ProtoUnmarshaler
	out := make([]ptrace.Traces, 0, len(recs))
	for _, r := range recs {
		td, err := u.UnmarshalTraces(r.Value)
		if err != nil {
			return nil, fmt.Errorf("record %s/%d@%d is not OTLP protobuf traces: %w", r.Topic, r.Partition, r.Offset, err)
		}
		out = append(out, td)
	}
	return out, nil
}

// DecodeMetrics decodes records written with the Kafka exporter's otlp_proto encoding (one
// OTLP ExportMetricsServiceRequest per record), in order.
func DecodeMetrics(recs []*kgo.Record) ([]pmetric.Metrics, error) {
	var u pmetric.ProtoUnmarshaler
	out := make([]pmetric.Metrics, 0, len(recs))
	for _, r := range recs {
		md, err := u.UnmarshalMetrics(r.Value)
		if err != nil {
			return nil, fmt.Errorf("record %s/%d@%d is not OTLP protobuf metrics: %w", r.Topic, r.Partition, r.Offset, err)
		}
		out = append(out, md)
	}
	return out, nil
}

// SpanCount is the number of spans in decoded traces.
func SpanCount(tds []ptrace.Traces) int {
	n := 0
	for _, td := range tds {
		n += td.SpanCount()
	}
	return n
}

// MetricPoints counts the data points in decoded metrics by metric name (a histogram point is
// one point, whatever its bucket count).
func MetricPoints(mds []pmetric.Metrics) map[string]int {
	out := map[string]int{}
	for _, md := range mds {
		for _, rm := range md.ResourceMetrics().All() {
			for _, sm := range rm.ScopeMetrics().All() {
				for _, m := range sm.Metrics().All() {
					out[m.Name()] += metricPointCount(m)
				}
			}
		}
	}
	return out
}

func metricPointCount(m pmetric.Metric) int {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return m.Gauge().DataPoints().Len()
	case pmetric.MetricTypeSum:
		return m.Sum().DataPoints().Len()
	case pmetric.MetricTypeHistogram:
		return m.Histogram().DataPoints().Len()
	case pmetric.MetricTypeExponentialHistogram:
		return m.ExponentialHistogram().DataPoints().Len()
	case pmetric.MetricTypeSummary:
		return m.Summary().DataPoints().Len()
	}
	return 0
}
