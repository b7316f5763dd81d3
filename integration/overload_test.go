package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gowatchtower/watchtower/integration/harness"
	"github.com/gowatchtower/watchtower/sdk"
	"github.com/gowatchtower/watchtower/semconv"
)

// The overload test: the gateway, limited to half a CPU as a pod with a CPU limit is, first
// runs at the rate it sustains, then gets five times that for a minute from many OTLP clients
// at once, and from an operator's SDK (this test binary run again as a child process, so that
// the SDK reads its OTLP endpoint from the environment as in an operator).

const (
	overloadCPUs     = 0.5
	overloadLimitMiB = 256 // the memory limiter's limit_mib, and GOMEMLIMIT as the chart sets it
	// The container memory limit the chart pairs with that limit_mib (limitMiB is 75 % of it).
	overloadContainerMiB = overloadLimitMiB * 4 / 3
	overloadSpikeMiB     = 64
	overloadFactor       = 5
	overloadFor          = 60 * time.Second
	overloadBatch        = 100 // spans per request: 10 traces of a root and 9 children
	overloadClients      = 512 // requests in flight at most, as that many SDKs each send one
	overloadSDKRate      = 1000
	sdkLoadEnv           = "WATCHTOWER_TEST_SDK_LOAD" // set: TestMain runs sdkLoad instead of the tests
	overloadSDKResult    = "sdk-load-result: "
)

// overloadLoad sends OTLP/gRPC trace requests of overloadBatch spans, counting every answer.
type overloadLoad struct {
	client  ptraceotlp.GRPCClient
	service string

	attempted, accepted, refused, unanswered atomic.Int64 // spans
	mu                                       sync.Mutex
	refusedWith                              map[codes.Code]int // requests
	wrong                                    []string           // answers that are neither OK nor retryable
	latencies                                []time.Duration    // of every answer
}

func (l *overloadLoad) request() ptraceotlp.ExportRequest {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", l.service)
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	now := time.Now()
	for range overloadBatch / 10 {
		var tid pcommon.TraceID
		_, _ = rand.Read(tid[:])
		var root pcommon.SpanID
		for i := range 10 {
			s := spans.AppendEmpty()
			var id pcommon.SpanID
			_, _ = rand.Read(id[:])
			s.SetTraceID(tid)
			s.SetSpanID(id)
			if i == 0 {
				root = id
				s.SetName("Reconcile")
				s.Attributes().PutStr("watchtower.controller.name", "workload")
				s.Attributes().PutStr("watchtower.reconcile.result", "success")
			} else {
				s.SetParentSpanID(root)
				s.SetName("get Deployment")
				s.Attributes().PutStr("k8s.resource.name", "deployments")
			}
			s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-20 * time.Millisecond)))
			s.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
		}
	}
	return ptraceotlp.NewExportRequestFromTraces(td)
}

// send sends one request and counts its answer. A client-side timeout is "unanswered": the
// gateway may still have accepted or refused it.
func (l *overloadLoad) send(ctx context.Context) {
	l.attempted.Add(overloadBatch)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := l.request()
	t0 := time.Now()
	_, err := l.client.Export(rctx, req)
	if took := time.Since(t0); err == nil || status.Code(err) != codes.DeadlineExceeded {
		l.mu.Lock()
		l.latencies = append(l.latencies, took)
		l.mu.Unlock()
	}
	switch code := status.Code(err); {
	case err == nil:
		l.accepted.Add(overloadBatch)
	case code == codes.Unavailable || code == codes.ResourceExhausted:
		l.refused.Add(overloadBatch)
		l.mu.Lock()
		l.refusedWith[code]++
		l.mu.Unlock()
	case code == codes.DeadlineExceeded || ctx.Err() != nil:
		l.unanswered.Add(overloadBatch)
	default:
		l.mu.Lock()
		if len(l.wrong) < 5 {
			l.wrong = append(l.wrong, err.Error())
		}
		l.mu.Unlock()
	}
}

// TestOverloadRefusesRetryablyWithinMemory: the gateway (deploy/collector/gateway.yaml, real
// Kafka, half a CPU, a 256 MiB memory limit) is offered five times the rate it sustains for a
// minute. It must refuse what it cannot take with a retryable status, count every refusal,
// keep its resident memory under the memory limiter's limit, and neither crash nor stop
// answering; the operator's SDK sending to it at the same time drops and counts what it cannot
// send, never blocking the code that ends a span. docs/reliability.md holds the figures.
func TestOverloadRefusesRetryablyWithinMemory(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	// Its memory figures need the half CPU the gateway is given: not beside a cluster.
	harness.HeavyTurn(t, "the overload test")
	_, gw := startGatewayStack(t,
		"WATCHTOWER_MEMORY_LIMIT_MIB="+strconv.Itoa(overloadLimitMiB),
		"WATCHTOWER_MEMORY_SPIKE_LIMIT_MIB="+strconv.Itoa(overloadSpikeMiB),
		"GOMEMLIMIT="+strconv.Itoa(overloadLimitMiB)+"MiB",
		"WATCHTOWER_LOG_LEVEL=warn")
	harness.LimitCPU(t, gw.Process(), overloadCPUs)
	pid := gw.Process().Pid()
	ctx := ctxTimeout(t, 5*time.Minute)

	conn, err := grpc.NewClient(gw.OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	newLoad := func(name string) *overloadLoad {
		return &overloadLoad{client: ptraceotlp.NewGRPCClient(conn), service: colUniqueService(name), refusedWith: map[codes.Code]int{}}
	}
	sentToKafka := func() float64 {
		v, _, err := gw.SelfMetric(ctx, "otelcol_exporter_sent_spans", map[string]string{"exporter": "kafka"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// 1. The sustainable rate: four clients each sending as soon as the last answer came, for
	// 15 s; the rate is what the gateway wrote to Kafka over the last 10 s of it.
	calib := newLoad("overload-calibration")
	calibCtx, stopCalib := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for calibCtx.Err() == nil {
				calib.send(calibCtx)
			}
		})
	}
	time.Sleep(5 * time.Second)
	k0, t0 := sentToKafka(), time.Now()
	time.Sleep(10 * time.Second)
	sustainable := (sentToKafka() - k0) / time.Since(t0).Seconds()
	stopCalib()
	wg.Wait()
	if sustainable < 1000 {
		t.Fatalf("the gateway wrote %.0f spans/s to Kafka at saturation: it is not working", sustainable)
	}
	waitSettled(t, ctx, gw)
	refused0, _, _ := gw.SelfMetric(ctx, "otelcol_receiver_refused_spans", map[string]string{"receiver": "otlp", "transport": "grpc"})

	// 2. Five times that for a minute: requests leave at the offered rate whatever the answers
	// (an open loop, as a fleet of independent operators sends), at most overloadClients in
	// flight; a request that finds them all busy is counted as not offered.
	rssBase, _ := colRSSBytes(pid)
	anonBase, _ := procStatusBytes(pid, "RssAnon")
	var rssPeak, anonPeak atomic.Int64
	samplerDone := make(chan struct{})
	overCtx, stopOver := context.WithCancel(ctx)
	go func() {
		defer close(samplerDone)
		for overCtx.Err() == nil {
			if v, err := colRSSBytes(pid); err == nil && v > rssPeak.Load() {
				rssPeak.Store(v)
			}
			if v, err := procStatusBytes(pid, "RssAnon"); err == nil && v > anonPeak.Load() {
				anonPeak.Store(v)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	sdkOut := make(chan sdkLoadResult, 1)
	go func() { sdkOut <- runSDKLoad(t, overCtx, gw.OTLPHTTP, overloadSDKRate, overloadFor) }()

	load := newLoad("overload")
	tokens := make(chan struct{}, overloadClients)
	for range overloadClients {
		wg.Go(func() {
			for range tokens {
				load.send(overCtx)
			}
		})
	}
	offeredRate := overloadFactor * sustainable
	perTick := offeredRate / overloadBatch / 100 // requests per 10 ms
	var notOffered int64
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	for due := 0.0; time.Since(start) < overloadFor; {
		<-tick.C
		due += perTick
		for ; due >= 1; due-- {
			select {
			case tokens <- struct{}{}:
			default:
				notOffered += overloadBatch
			}
		}
	}
	tick.Stop()
	close(tokens)
	wg.Wait()
	elapsed := time.Since(start)
	res := <-sdkOut
	stopOver()
	<-samplerDone

	// 3. Afterwards: still there, answering, and the books balance.
	select {
	case <-gw.Process().Done():
		t.Fatalf("the gateway exited under overload:\n%s", gw.Process().LogTail(8<<10))
	default:
	}
	after := newLoad("overload-after")
	waitFor(t, ctx, "the gateway to accept a request again after the overload", func() (bool, error) {
		after.send(ctx)
		return after.accepted.Load() > 0, fmt.Errorf("%d refused", after.refused.Load())
	})
	waitSettled(t, ctx, gw)
	refused1, _, _ := gw.SelfMetric(ctx, "otelcol_receiver_refused_spans", map[string]string{"receiver": "otlp", "transport": "grpc"})
	gwRefused := refused1 - refused0 - float64(after.refused.Load())

	attempted, accepted, refused, unanswered := load.attempted.Load(), load.accepted.Load(), load.refused.Load(), load.unanswered.Load()
	load.mu.Lock()
	refusedWith, wrong, latencies := maps.Clone(load.refusedWith), slices.Clone(load.wrong), slices.Clone(load.latencies)
	load.mu.Unlock()
	slices.Sort(latencies)
	p50, p99 := latencies[len(latencies)/2], latencies[len(latencies)*99/100]
	t.Logf("overload: sustainable %.0f spans/s at %.1f CPU; demand %.0f spans/s (%d×) for %s; sent %d spans (%.1f× sustainable), %d more waited for one of the %d clients (each waits for its answer: p50 %s, p99 %s); accepted %d, refused %d (requests by code %v), unanswered %d; the gateway counted %.0f refused; RSS %d MiB before, peak %d MiB, of which anonymous %d MiB before, peak %d MiB (memory limiter %d MiB, container %d MiB)",
		sustainable, overloadCPUs, offeredRate, overloadFactor, elapsed.Round(time.Second), attempted, float64(attempted)/elapsed.Seconds()/sustainable,
		notOffered, overloadClients, p50.Round(time.Millisecond), p99.Round(time.Millisecond), accepted, refused, refusedWith, unanswered, gwRefused, rssBase>>20, rssPeak.Load()>>20, anonBase>>20, anonPeak.Load()>>20, overloadLimitMiB, overloadContainerMiB)
	t.Logf("overload: the SDK (%d spans/s over OTLP/HTTP) ended %d spans: exported %d, dropped %d queue_full + %d export_failed; span.End() p99 %s, max %s",
		overloadSDKRate, res.Ended, res.Exported, res.QueueFull, res.ExportFailed, time.Duration(res.P99EndNanos), time.Duration(res.MaxEndNanos))

	if len(wrong) > 0 {
		t.Errorf("answers neither OK nor retryable (Unavailable, ResourceExhausted): %q", wrong)
	}
	if refused == 0 {
		t.Errorf("nothing was refused at %d× the sustainable rate: the overload did not happen", overloadFactor)
	}
	// A request without an answer within 30 s is not lost: the client still owns it and sends
	// it again, as OTLP exporters do after their (10 s) timeout. On an otherwise idle machine
	// none occur (p99 1.5 s); with the whole suite on the two cores, half a CPU answered a few
	// that late. They are reported, and bound the gateway's count below.
	if gwRefused < float64(refused) || gwRefused > float64(refused+unanswered) {
		t.Errorf("the gateway counted %.0f refused spans; its clients were refused %d (and %d got no answer)", gwRefused, refused, unanswered)
	}
	// What an OOM kill counts is anonymous memory, what the collector allocated; the rest of
	// its RSS is the binary's pages, file-backed and reclaimable (about 80 MiB). The memory
	// limiter bounds the heap, measured once a second, not the goroutine stacks of the requests
	// in flight: anonymous memory can pass limit_mib by a little (the figure is reported), but
	// must stay under the container limit the chart pairs with it.
	if peak := anonPeak.Load(); peak >= overloadContainerMiB<<20 {
		t.Errorf("the gateway's anonymous resident memory peaked at %d MiB, over the %d MiB container limit the chart pairs with a %d MiB memory limiter", peak>>20, overloadContainerMiB, overloadLimitMiB)
	}
	if res.Err != "" {
		t.Fatalf("the SDK load: %s", res.Err)
	}
	if res.Ended != res.Exported+res.QueueFull+res.ExportFailed {
		t.Errorf("the SDK ended %d spans but counted %d exported + %d queue_full + %d export_failed", res.Ended, res.Exported, res.QueueFull, res.ExportFailed)
	}
	if res.Ended < int64(0.95*overloadSDKRate*overloadFor.Seconds()) {
		t.Errorf("the SDK ended %d spans in %s at %d/s: the code ending them was held up", res.Ended, overloadFor, overloadSDKRate)
	}
	// Not a latency budget: a span.End() that waits for an export waits for seconds (the
	// exporter's timeout is 10 s); one second tells that apart from a loaded machine's hiccup.
	if time.Duration(res.MaxEndNanos) >= time.Second {
		t.Errorf("a span.End() took %s: the SDK blocked the code ending a span", time.Duration(res.MaxEndNanos))
	}
}

// sdkLoadResult is what the SDK child process reports.
type sdkLoadResult struct {
	Ended, Exported, QueueFull, ExportFailed int64
	P99EndNanos, MaxEndNanos                 int64
	Err                                      string
}

// runSDKLoad runs this test binary again as an operator would run: sdk.Start configured by
// OTEL_* variables alone, sending to endpoint over OTLP/HTTP; it ends rate spans a second for
// d, then shuts down and reports its own counters.
func runSDKLoad(t *testing.T, ctx context.Context, endpoint string, rate int, d time.Duration) sdkLoadResult {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		sdkLoadEnv+"="+strconv.Itoa(rate)+","+d.String(),
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+endpoint,
		"OTEL_SERVICE_NAME="+colUniqueService("overload-sdk"),
	)
	out, err := cmd.Output()
	var res sdkLoadResult
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), overloadSDKResult); ok {
			if jerr := json.Unmarshal([]byte(v), &res); jerr != nil {
				res.Err = jerr.Error()
			}
			return res
		}
	}
	var stderr []byte
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	res.Err = fmt.Sprintf("no result (exit: %v): %s %s", err, out, stderr)
	return res
}

// sdkLoad is the child process of runSDKLoad: spec is "rate,duration".
func sdkLoad(spec string) int {
	res := sdkLoadRun(spec)
	b, _ := json.Marshal(res)
	fmt.Println(overloadSDKResult + string(b))
	return 0
}

func sdkLoadRun(spec string) (res sdkLoadResult) {
	rateS, durS, _ := strings.Cut(spec, ",")
	rate, err1 := strconv.Atoi(rateS)
	d, err2 := time.ParseDuration(durS)
	if err1 != nil || err2 != nil {
		return sdkLoadResult{Err: fmt.Sprintf("%s=%q: want rate,duration", sdkLoadEnv, spec)}
	}
	counts := &countingExporter{sums: map[string]int64{}}
	tel, err := sdk.Start(context.Background(), sdk.WithoutGlobal(), sdk.WithMetricExporter(counts))
	if err != nil {
		return sdkLoadResult{Err: err.Error()}
	}
	tracer := tel.TracerProvider().Tracer("overload")
	ends := make([]time.Duration, 0, int(float64(rate)*d.Seconds())+rate)
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	for due := 0.0; time.Since(start) < d; {
		<-tick.C
		for due += float64(rate) / 100; due >= 1; due-- {
			_, span := tracer.Start(context.Background(), "Reconcile")
			span.SetAttributes(attribute.String("watchtower.controller.name", "workload"))
			t0 := time.Now()
			span.End()
			ends = append(ends, time.Since(t0))
		}
	}
	tick.Stop()
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = tel.Shutdown(sctx) // what it could not send is counted as dropped
	slices.Sort(ends)
	res.Ended = int64(len(ends))
	if len(ends) > 0 {
		res.P99EndNanos, res.MaxEndNanos = int64(ends[len(ends)*99/100]), int64(ends[len(ends)-1])
	}
	counts.mu.Lock()
	defer counts.mu.Unlock()
	res.Exported = counts.sums[semconv.TelemetryExportedName+"/"]
	res.QueueFull = counts.sums[semconv.TelemetryDroppedName+"/"+semconv.TelemetryDropReasonQueueFullValue]
	res.ExportFailed = counts.sums[semconv.TelemetryDroppedName+"/"+semconv.TelemetryDropReasonExportFailedValue]
	return res
}

// countingExporter is the SDK child's metric exporter: it keeps the latest cumulative value
// of the SDK's span counters (signal traces) by drop reason. The data passed to Export is
// reused by the SDK afterwards, so the values are read out during the call.
type countingExporter struct {
	mu   sync.Mutex
	sums map[string]int64
}

func (e *countingExporter) Temporality(sdkmetric.InstrumentKind) metricdata.Temporality {
	return metricdata.CumulativeTemporality
}

func (e *countingExporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

func (e *countingExporter) Export(_ context.Context, rm *metricdata.ResourceMetrics) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != semconv.TelemetryExportedName && m.Name != semconv.TelemetryDroppedName {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				if sig, _ := dp.Attributes.Value(semconv.TelemetrySignalKey); sig.AsString() != semconv.TelemetrySignalTracesValue {
					continue
				}
				reason, _ := dp.Attributes.Value(semconv.TelemetryDropReasonKey)
				e.sums[m.Name+"/"+reason.AsString()] = dp.Value
			}
		}
	}
	return nil
}

func (e *countingExporter) ForceFlush(context.Context) error { return nil }
func (e *countingExporter) Shutdown(context.Context) error   { return nil }

// procStatusBytes is a memory field of /proc/<pid>/status (VmRSS, RssAnon, RssFile: kB there).
func procStatusBytes(pid int, field string) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
