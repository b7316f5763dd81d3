package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// rawCodec sends a gRPC request's bytes as they are: what a broken or hostile client sends.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

// badTraces builds an OTLP traces request of one span, for service, shaped by edit.
func badTraces(service string, edit func(ptrace.Span)) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s.SetName("reconcile workload")
	s.SetTraceID(pcommon.TraceID([16]byte{1, byte(rand.IntN(256)), byte(rand.IntN(256)), byte(rand.IntN(256)), 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}))
	s.SetSpanID(pcommon.SpanID([8]byte{1, 2, 3, 4, 5, 6, 7, byte(rand.IntN(256))}))
	now := time.Now()
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Millisecond)))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
	if edit != nil {
		edit(s)
	}
	return td
}

// startGatewayStack starts Kafka with the gateway's default topics, Jaeger, and the gateway
// (startGateway) exporting to both, with extra NAME=value environment.
func startGatewayStack(t *testing.T, env ...string) (*harness.Kafka, *harness.Collector) {
	t.Helper()
	kafka := harness.StartKafka(t)
	kafka.CreateTopic(t, "otlp_spans", 3)
	kafka.CreateTopic(t, "otlp_metrics", 1)
	jaeger := harness.StartJaeger(t)
	return kafka, startGateway(t, kafka, jaeger.OTLPGRPC, env...)
}

// postOTLPTraces posts body to an OTLP/HTTP receiver's /v1/traces and returns the status code
// and the start of the answer (code 0 and the error when there was no answer).
func postOTLPTraces(ctx context.Context, endpoint string, body []byte, contentType, encoding string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+endpoint+"/v1/traces", bytes.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	return resp.StatusCode, strings.TrimSpace(string(msg))
}

func marshalTraces(t *testing.T, td ptrace.Traces) []byte {
	t.Helper()
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGatewayRejectsBadInput sends a corpus of malformed OTLP to the gateway's HTTP and gRPC
// receivers (deploy/collector/gateway.yaml, the built binary). Each is answered with a client
// error (HTTP 4xx, a gRPC status other than Unavailable or Internal), or accepted when it is
// valid OTLP however odd (an end before the start, 100k attributes); the collector never
// crashes, its RSS stays under its memory limit, and a valid request sent right after each is
// accepted — and, at the end, delivered to Kafka.
func TestGatewayRejectsBadInput(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	const memLimitMiB = 400
	kafka, gw := startGatewayStack(t, "WATCHTOWER_MEMORY_LIMIT_MIB="+strconv.Itoa(memLimitMiB))
	ctx := ctxTimeout(t, 3*time.Minute)
	pid := gw.Process().Pid()

	valid := func() []byte { return marshalTraces(t, badTraces("bad-input-probe", nil)) }
	// Both senders retry, as an OTLP client does, while the memory limiter refuses everything
	// (a retryable 503 / Unavailable after the big requests): then they get the real answer.
	post := func(body []byte, contentType, encoding string) (int, string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			code, msg := postOTLPTraces(ctx, gw.OTLPHTTP, body, contentType, encoding)
			if (code != http.StatusServiceUnavailable && code != http.StatusTooManyRequests) || time.Now().After(deadline) {
				return code, msg
			}
		}
	}
	conn, err := grpc.NewClient(gw.OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(128<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	export := func(body []byte) error {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			var out []byte
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := conn.Invoke(cctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", &body, &out)
			cancel()
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "high memory usage") || time.Now().After(deadline) {
				return err
			}
		}
	}
	rss := func() int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatalf("the collector (pid %d) is gone: %v\n%s", pid, err, gw.Process().LogTail(4096))
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(f), " kB"))
				return kb / 1024
			}
		}
		return 0
	}

	good := valid()
	truncated := good[:len(good)/2]
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rand.IntN(256))
	}
	huge := make([]byte, 64<<20) // zeros: a field 0 tag, invalid protobuf, 64 MiB of it
	deep := badTraces("bad-input", func(s ptrace.Span) {
		m := s.Attributes().PutEmptyMap("deep")
		for range 5000 {
			m = m.PutEmptyMap("d")
		}
	})
	wide := badTraces("bad-input", func(s ptrace.Span) {
		for i := range 100_000 {
			s.Attributes().PutStr("a"+strconv.Itoa(i), "v")
		}
	})
	backwards := badTraces("bad-input", func(s ptrace.Span) {
		s.SetStartTimestamp(s.EndTimestamp() + pcommon.Timestamp(time.Second))
	})
	// Same length, so that the protobuf framing stays valid and only the string is not UTF-8.
	badUTF8 := bytes.Replace(marshalTraces(t, badTraces("bad-input-\x01\x02\x03", nil)), []byte("\x01\x02\x03"), []byte("\xff\xfe\xfd"), 1)

	type verdict int
	const (
		rejected verdict = iota // a client error the OTLP client does not retry
		either                  // valid OTLP however odd: accepted, or such a client error
		// upstreamDefect is a wrong answer from the upstream OTLP receiver, asserted exactly as
		// it is so that this test notices when an upgrade fixes it (docs/reliability.md).
		upstreamDefect
	)
	var report []string
	check := func(name string, v verdict, code int, msg string) {
		t.Helper()
		switch {
		case v == upstreamDefect:
			// otlpreceiver quotes the bad bytes in its error, and protojson cannot encode the
			// invalid UTF-8 of that message: a 500, which OTLP clients do not retry either.
			if code != http.StatusInternalServerError || !strings.Contains(msg, "failed to marshal error message") {
				t.Errorf("HTTP %s: got %d %q; the known upstream answer was 500 \"failed to marshal error message\": update docs/reliability.md", name, code, msg)
			}
		case code >= 400 && code < 500 && code != http.StatusTooManyRequests:
		case code >= 200 && code < 300 && v == either:
		default:
			t.Errorf("HTTP %s: got %d %q, want a 4xx other than 429%s", name, code, msg, map[bool]string{true: " or acceptance", false: ""}[v == either])
		}
		if c, m := post(good, "application/x-protobuf", ""); c != http.StatusOK {
			t.Fatalf("HTTP %s: the valid request right after it got %d %q", name, c, m)
		}
		report = append(report, fmt.Sprintf("HTTP  %-40s %d %.80s (RSS %d MiB)", name, code, msg, rss()))
	}
	checkGRPC := func(name string, v verdict, err error) {
		t.Helper()
		st := status.Convert(err)
		// OTLP/gRPC clients retry Canceled, DeadlineExceeded, Aborted, OutOfRange,
		// Unavailable and DataLoss, and ResourceExhausted only with RetryInfo: anything else
		// is a final refusal of the request.
		retryable := false
		switch st.Code() {
		case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable, codes.DataLoss:
			retryable = true
		case codes.ResourceExhausted:
			for _, d := range st.Details() {
				if _, ok := d.(*errdetails.RetryInfo); ok {
					retryable = true
				}
			}
		}
		switch {
		case err == nil && v == either:
		case err != nil && !retryable:
		default:
			t.Errorf("gRPC %s: got %v, want a status OTLP clients do not retry%s", name, err, map[bool]string{true: " or acceptance", false: ""}[v == either])
		}
		if err := export(good); err != nil {
			t.Fatalf("gRPC %s: the valid request right after it: %v", name, err)
		}
		report = append(report, fmt.Sprintf("gRPC  %-40s %s %.80s (RSS %d MiB)", name, st.Code(), st.Message(), rss()))
	}

	for _, c := range []struct {
		name             string
		body             []byte
		contentType, enc string
		v                verdict
	}{
		{"truncated protobuf", truncated, "application/x-protobuf", "", rejected},
		{"random bytes", random, "application/x-protobuf", "", rejected},
		{"random bytes as JSON", random, "application/json", "", upstreamDefect},
		{"wrong content type", good, "text/plain", "", rejected},
		{"gzip encoding, body not gzip", good, "application/x-protobuf", "gzip", rejected},
		{"unknown encoding", good, "application/x-protobuf", "br-nonsense", rejected},
		{"64 MiB body", huge, "application/x-protobuf", "", rejected},
		{"attributes nested 5,000 deep", marshalTraces(t, deep), "application/x-protobuf", "", either},
		{"100k attributes on one span", marshalTraces(t, wide), "application/x-protobuf", "", either},
		{"invalid UTF-8 in a string", badUTF8, "application/x-protobuf", "", either},
		{"end before start", marshalTraces(t, backwards), "application/x-protobuf", "", either},
	} {
		code, msg := post(c.body, c.contentType, c.enc)
		check(c.name, c.v, code, msg)
	}
	for _, c := range []struct {
		name string
		body []byte
		v    verdict
	}{
		{"truncated protobuf", truncated, rejected},
		{"random bytes", random, rejected},
		{"64 MiB message", huge, rejected},
		{"attributes nested 5,000 deep", marshalTraces(t, deep), either},
		{"100k attributes on one span", marshalTraces(t, wide), either},
		{"invalid UTF-8 in a string", badUTF8, either},
	} {
		checkGRPC(c.name, c.v, export(c.body))
	}
	t.Logf("bad input, as the gateway answered it:\n  %s", strings.Join(report, "\n  "))

	if peak := rss(); peak >= memLimitMiB {
		t.Errorf("the collector's RSS is %d MiB, over its %d MiB memory limit", peak, memLimitMiB)
	}
	// Everything valid still flows: one marked span reaches Kafka.
	marker := colUniqueService("bad-input-after")
	if c, m := post(marshalTraces(t, badTraces(marker, nil)), "application/x-protobuf", ""); c != http.StatusOK {
		t.Fatalf("the final valid request got %d %q", c, m)
	}
	waitFor(t, ctx, "the span sent after the bad input in Kafka", func() (bool, error) {
		for _, s := range readSpans(t, ctx, kafka, "otlp_spans") {
			if s.service == marker {
				return true, nil
			}
		}
		return false, nil
	})
}
