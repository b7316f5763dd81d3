package kafka

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestNewConsumerRefusesWhatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		brokers []string
		group   string
		opts    []Option
		want    string
	}{
		{nil, "g", nil, "no brokers"},
		{[]string{"k:9092"}, "", nil, "no consumer group"},
		{[]string{"k:9092"}, "g", []Option{WithTopics("", "")}, "no topic"},
		{[]string{"k:9092"}, "g", []Option{WithEncoding("avro")}, `encoding "avro"`},
	} {
		_, err := NewConsumer(tc.brokers, tc.group, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewConsumer(%v, %q): %v, want an error naming %q", tc.brokers, tc.group, err, tc.want)
		}
	}
}

func TestDecodeNamesTheRecordItCannotRead(t *testing.T) {
	c, err := NewConsumer([]string{"k:9092"}, "g")
	if err != nil {
		t.Fatal(err)
	}
	defer c.client.Close()
	td := ptrace.NewTraces()
	td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty().SetName("reconcile workload")
	b, _ := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	got, err := c.decode(&kgo.Record{Topic: DefaultSpansTopic, Partition: 2, Offset: 7, Value: b})
	if err != nil || got.Traces == nil || got.Traces.SpanCount() != 1 || got.Metrics != nil {
		t.Fatalf("decode of a spans record: %+v, %v", got, err)
	}
	_, err = c.decode(&kgo.Record{Topic: DefaultSpansTopic, Partition: 2, Offset: 8, Value: []byte("not protobuf \xff\xff")})
	if err == nil || !strings.Contains(err.Error(), "otlp_spans[2]@8") {
		t.Errorf("decode of garbage: %v, want an error naming otlp_spans[2]@8", err)
	}
}
