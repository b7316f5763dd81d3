// The operator's reconcile latency while the collector is down (issue 12, fault 6): the
// distribution of one reconciler's latency, instrumented with instrumentation/controllerruntime
// and exporting traces and metrics over OTLP with sdk.Start, against
//
//	collector=up    the built otelcol-watchtower, receiving OTLP and discarding it
//	collector=down  a loopback port with nothing listening (every connection refused)
//	collector=hung  a listener that accepts connections and never answers (a blackhole)
//
// as sub-benchmarks of one benchmark, so that `make bench` (hack/benchreport) compares the
// p99 of down and hung with the p99 of up measured in the same process, each case run
// collectorDownRounds times in turn with the others. The budget is that p99
// changes by at most 5 %. Timing is reported, never asserted; what is asserted is what cannot
// depend on the machine: every reconcile returned, nothing reached an exporter that cannot have
// exported, and the span queue stayed bounded (see checkTelemetry).
//
//	cd integration && go test -run '^$' -bench BenchmarkOperatorCollectorDown -benchtime 40000x .
//
// One iteration is one reconcile. The reconciles are paced at reconcileRate per second at most
// (time.Sleep overshoots: the rate kept is reported as reconciles/s, about 1,600 on a two-core
// machine) rather than run back to back: an operator reconciles at a finite rate, and back to
// back the reconciler would end some 50,000 spans a second, with the exporter and the
// collector taking their CPU from the reconciles being timed, a throughput test rather than
// the operator's latency. Paced, a run of 40000x lasts about 25 s, long enough that exports fail
// many times in down and hung: a metric push every second (OTEL_METRIC_EXPORT_INTERVAL), each
// given up after one second (OTEL_METRIC_EXPORT_TIMEOUT, set with the interval so that a hung
// push does not hold the next ones for the default 30 s), and span batches whenever 512 spans
// are queued or a second has passed, each given up after the default OTEL_BSP_EXPORT_TIMEOUT
// (10 s). Everything else is the SDK's default, what an operator gets: OTLP over http/protobuf,
// a queue of 2048 spans, batches of 512, every span sampled.
package integration

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/integration/harness"
	"github.com/gowatchtower/watchtower/sdk"
	"github.com/gowatchtower/watchtower/semconv"
)

const (
	// collectorDownRounds is how many times each case runs, in turn with the others.
	collectorDownRounds = 3
	// reconcileRate is reconciles per second; see the top of the file.
	reconcileRate = 2000
	// downObjects is how many ConfigMaps the reconciler takes turns on.
	downObjects = 64
	// The SDK's default span queue and batch (docs/sdk.md): at most this many spans are held,
	// queued or in the batch being exported, at any time.
	downQueueSize, downMaxBatch = 2048, 512
)

// sinkConfig is the collector of collector=up: the OTLP receiver of every deploy/collector
// configuration and a debug exporter that logs one line per batch at info, which the warn
// level drops. The gateway's pipeline behind the receiver (span metrics, Kafka, tail sampling)
// is not what the operator waits for, and on a two-core machine its CPU, and Kafka's, would
// compete with the operator and raise the very p99 the other cases are compared with.
const sinkConfig = `extensions:
  health_check:
    endpoint: ${env:WATCHTOWER_HEALTH_ENDPOINT}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${env:WATCHTOWER_OTLP_GRPC_ENDPOINT}
      http:
        endpoint: ${env:WATCHTOWER_OTLP_HTTP_ENDPOINT}
exporters:
  debug:
    verbosity: basic
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
    metrics:
      receivers: [otlp]
      exporters: [debug]
  telemetry:
    logs:
      level: warn
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: ${env:WATCHTOWER_SELF_METRICS_HOST}
                port: ${env:WATCHTOWER_SELF_METRICS_PORT}
`

func BenchmarkOperatorCollectorDown(b *testing.B) {
	// Started once for every run of every case (each b.Run runs its case with b.N = 1 first,
	// then with -benchtime's count).
	cfg := filepath.Join(b.TempDir(), "sink.yaml")
	if err := os.WriteFile(cfg, []byte(sinkConfig), 0o644); err != nil {
		b.Fatal(err)
	}
	col := harness.StartCollector(b, "otelcol-sink", cfg, nil)
	refused := harness.Loopback(harness.FreePort(b)) // reserved, and nothing listens on it
	hole := startBlackhole(b)

	cases := []collectorCase{
		{"collector=up", col.OTLPHTTP, true},
		{"collector=down", refused, false},
		{"collector=hung", hole.addr, false},
	}
	// Rounds rather than -count: -count repeats each case back to back, so that a load that
	// comes and goes on a shared machine would weigh on one case only. The order rotates from
	// round to round; the testing package names the repeats collector=up#01, collector=up#02.
	for round := range collectorDownRounds {
		for i := range cases {
			runCollectorCase(b, cases[(round+i)%len(cases)], col, hole)
		}
	}
}

type collectorCase struct {
	name     string
	endpoint string // host:port
	up       bool
}

func runCollectorCase(b *testing.B, c collectorCase, col *harness.Collector, hole *blackhole) {
	b.Run(c.name, func(b *testing.B) {
		var before float64
		if c.up {
			before = collectorAcceptedSpans(b, col)
		}
		op := startBenchOperator(b, "http://"+c.endpoint)
		lat := make([]time.Duration, b.N)
		ctx := context.Background()
		interval := time.Second / reconcileRate
		b.ResetTimer()
		start := time.Now()
		next := start
		for i := range b.N {
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			} else if d < -interval {
				next = time.Now() // late (a GC, a busy machine): resume the pace, do not catch up in a burst
			}
			next = next.Add(interval)
			rq := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "default", Name: "widget-" + strconv.Itoa(i%downObjects)}}
			t0 := time.Now()
			_, err := op.ctrl.Reconcile(ctx, rq)
			lat[i] = time.Since(t0)
			if err != nil {
				b.Fatalf("reconcile %d: %v", i, err)
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()

		sorted := slices.Clone(lat)
		slices.Sort(sorted)
		var total time.Duration
		for _, d := range lat {
			total += d
		}
		p50, p99 := quantile(sorted, 0.50), quantile(sorted, 0.99)
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op") // the mean reconcile, not the pace
		b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns/reconcile")
		b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns/reconcile")
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "reconciles/s")

		counts := op.finish(b, c.up)
		checkTelemetry(b, c.up, b.N, counts)
		extra := ""
		if c.up {
			// Everything the SDK counted as exported reached the real receiver.
			want := before + counts.exported
			waitCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			got, err := col.WaitSelfMetric(waitCtx, "otelcol_receiver_accepted_spans", map[string]string{"receiver": "otlp"}, func(v float64) bool { return v >= want })
			if err != nil {
				b.Fatalf("the collector did not receive the %v spans the SDK exported: %v", counts.exported, err)
			}
			extra = fmt.Sprintf("; the collector accepted %v spans", got-before)
		} else if c.endpoint == hole.addr {
			extra = fmt.Sprintf("; the blackhole has accepted %d connections so far", hole.accepted.Load())
		}
		b.Logf("%s: %d reconciles in %s (%d spans), p50 %s, p99 %s, max %s; spans exported %v, dropped %v queue_full + %v export_failed; metric points exported %v, dropped %v export_failed%s",
			c.name, b.N, elapsed.Round(time.Millisecond), 3*b.N, p50, p99, sorted[len(sorted)-1],
			counts.exported, counts.queueFull, counts.exportFailed, counts.metricsExported, counts.metricsFailed, extra)
	})
}

// quantile is the q-quantile of sorted, by nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// benchOperator is an instrumented controller as an operator's main.go and SetupWithManager
// build it (sdk.Start, otelctrl.NewManager, otelctrl.NewControllerManagedBy), with the
// manager's client replaced by an in-memory one (memClient) so that no API server is needed:
// the manager is never started, the controller's Reconcile is called directly.
type benchOperator struct {
	tel  *sdk.Telemetry
	ctrl interface {
		Reconcile(context.Context, reconcile.Request) (reconcile.Result, error)
	}
}

func startBenchOperator(b *testing.B, endpoint string) *benchOperator {
	b.Helper()
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	b.Setenv("OTEL_SERVICE_NAME", "bench-operator")
	b.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "1000")
	b.Setenv("OTEL_METRIC_EXPORT_TIMEOUT", "1000")
	// The default Prometheus registerer (controller-runtime's metrics.Registry), as in an
	// operator: its metrics are also what the OTLP push bridges, and the SDK's own counters are
	// read from it (finish).
	tel, err := sdk.Start(context.Background(), sdk.WithLogger(logr.Discard()))
	if err != nil {
		b.Fatal(err)
	}
	opts := []otelctrl.Option{otelctrl.WithTracerProvider(tel.TracerProvider()), otelctrl.WithMeterProvider(tel.MeterProvider())}

	mc := newMemClient()
	mgr, err := otelctrl.NewManager(&rest.Config{Host: "https://127.0.0.1:1"}, manager.Options{
		Scheme:     scheme.Scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}, // one controller "widget" per run
		NewClient:  func(*rest.Config, client.Options) (client.Client, error) { return mc, nil },
	}, opts...)
	if err != nil {
		b.Fatal(err)
	}
	c := mgr.GetClient()
	// Two API calls per reconcile, each a child span of the reconcile span: read the object,
	// then write it (an annotation the reconciler keeps up to date).
	var generation atomic.Int64
	body := reconcile.Func(func(ctx context.Context, rq reconcile.Request) (reconcile.Result, error) {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, rq.NamespacedName, &cm); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
		patch := client.MergeFrom(cm.DeepCopy())
		if cm.Annotations == nil {
			cm.Annotations = map[string]string{}
		}
		cm.Annotations["demo.example.com/observed"] = strconv.FormatInt(generation.Add(1), 10)
		return reconcile.Result{}, c.Patch(ctx, &cm, patch)
	})
	ctl, err := otelctrl.NewControllerManagedBy(mgr, opts...).For(&corev1.ConfigMap{}).Named("widget").Build(body)
	if err != nil {
		b.Fatal(err)
	}
	op := &benchOperator{tel: tel, ctrl: ctl}
	b.Cleanup(func() { op.shutdown() })
	return op
}

// shutdown stops the SDK within a second: with the collector hung it would wait its whole
// shutdown timeout (5 s) for each run.
func (op *benchOperator) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = op.tel.Shutdown(ctx)
}

// telemetryCounts is what the SDK counted (watchtower.telemetry.exported and .dropped).
type telemetryCounts struct {
	exported, queueFull, exportFailed float64 // spans
	metricsExported, metricsFailed    float64 // metric points
}

// finish reads the SDK's counters and shuts it down. With the collector up it flushes first,
// so that every span is counted; down or hung, a flush would only wait for the exports to give
// up, and up to a queue and a batch of spans are still uncounted.
func (op *benchOperator) finish(b *testing.B, flush bool) telemetryCounts {
	b.Helper()
	if flush {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := op.tel.ForceFlush(ctx); err != nil {
			b.Fatalf("flushing to a collector that is up: %v", err)
		}
	}
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	sum := func(name string, labels map[string]string) float64 {
		var v float64
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		series:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, l := range m.GetLabel() {
					have[l.GetName()] = l.GetValue()
				}
				for k, want := range labels {
					if have[k] != want {
						continue series
					}
				}
				v += m.GetCounter().GetValue()
			}
		}
		return v
	}
	const signal, reason = "watchtower_telemetry_signal", "watchtower_telemetry_drop_reason"
	c := telemetryCounts{
		exported:        sum(semconv.TelemetryExportedPrometheusName, map[string]string{signal: semconv.TelemetrySignalTracesValue}),
		queueFull:       sum(semconv.TelemetryDroppedPrometheusName, map[string]string{signal: semconv.TelemetrySignalTracesValue, reason: semconv.TelemetryDropReasonQueueFullValue}),
		exportFailed:    sum(semconv.TelemetryDroppedPrometheusName, map[string]string{signal: semconv.TelemetrySignalTracesValue, reason: semconv.TelemetryDropReasonExportFailedValue}),
		metricsExported: sum(semconv.TelemetryExportedPrometheusName, map[string]string{signal: semconv.TelemetrySignalMetricsValue}),
		metricsFailed:   sum(semconv.TelemetryDroppedPrometheusName, map[string]string{signal: semconv.TelemetrySignalMetricsValue, reason: semconv.TelemetryDropReasonExportFailedValue}),
	}
	op.shutdown()
	return c
}

// checkTelemetry asserts what does not depend on timing: each reconcile ends three sampled
// spans (the reconcile and its two API calls), and the SDK counts every one it accepted
// exactly once. Up and flushed, all are counted and none failed. Down or hung, none can have
// been exported, and at most a queue and a batch of them can still be waiting: the rest were
// dropped, which is what keeps the reconciler from waiting for the collector.
func checkTelemetry(b *testing.B, up bool, n int, c telemetryCounts) {
	b.Helper()
	spans := float64(3 * n)
	counted := c.exported + c.queueFull + c.exportFailed
	switch {
	case counted > spans:
		b.Fatalf("the SDK counted %v spans (%+v), more than the %v the reconciles ended", counted, c, spans)
	case up && counted != spans:
		b.Fatalf("flushed to a collector that is up, the SDK counted %v of the %v spans (%+v)", counted, spans, c)
	case up && c.exportFailed > 0:
		b.Fatalf("%v spans failed to export to a collector that is up (%+v)", c.exportFailed, c)
	case !up && c.exported > 0:
		b.Fatalf("the SDK counted %v spans as exported to a collector that cannot receive them", c.exported)
	case !up && counted < spans-(downQueueSize+downMaxBatch):
		b.Fatalf("the SDK holds %v spans, more than its queue and a batch (%d): %+v", spans-counted, downQueueSize+downMaxBatch, c)
	}
}

// memClient is the manager's client, in memory: what a reconcile's API calls cost in the
// operator's process, without the API server. Get does what the informer cache does for a read
// (a keyed lookup under a read lock, a deep copy); Patch does what the client does for a write
// before it goes on the wire (computes the merge patch) and then stores the object, as the API
// server would, with a new resourceVersion. controller-runtime's fake client would do far more
// per call (a JSON round trip per read; per write, JSON patching, a stack dump to tell status
// patches apart and, by default, a REST mapper of the whole scheme), hundreds of microseconds
// to milliseconds that are not the operator's and would drown what is measured here. Its
// other methods are the fake client's, unused.
type memClient struct {
	client.WithWatch
	mu   sync.RWMutex
	rv   int64
	objs map[client.ObjectKey]*corev1.ConfigMap
}

func newMemClient() *memClient {
	m := &memClient{WithWatch: fake.NewClientBuilder().WithScheme(scheme.Scheme).Build(), objs: map[client.ObjectKey]*corev1.ConfigMap{}}
	for i := range downObjects {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "widget-" + strconv.Itoa(i), ResourceVersion: "1", Labels: map[string]string{"app": "widget"}},
			Data:       map[string]string{"config.yaml": "replicas: 3\nimage: widget:1.2.3\n"},
		}
		m.objs[client.ObjectKeyFromObject(cm)] = cm
	}
	return m
}

func (m *memClient) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	out, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return fmt.Errorf("memClient: %T is not a ConfigMap", obj)
	}
	m.mu.RLock()
	src, found := m.objs[key]
	m.mu.RUnlock()
	if !found {
		return apierrors.NewNotFound(corev1.Resource("configmaps"), key.Name)
	}
	src.DeepCopyInto(out)
	out.GetObjectKind().SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
	return nil
}

func (m *memClient) Patch(_ context.Context, obj client.Object, patch client.Patch, _ ...client.PatchOption) error {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return fmt.Errorf("memClient: %T is not a ConfigMap", obj)
	}
	if _, err := patch.Data(obj); err != nil { // the request body a real client would send
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := client.ObjectKeyFromObject(cm)
	if _, found := m.objs[key]; !found {
		return apierrors.NewNotFound(corev1.Resource("configmaps"), key.Name)
	}
	m.rv++
	cm.ResourceVersion = strconv.FormatInt(m.rv, 10)
	m.objs[key] = cm.DeepCopy()
	return nil
}

// blackhole accepts TCP connections and never reads from them nor answers.
type blackhole struct {
	addr     string
	accepted atomic.Int64
}

func startBlackhole(b *testing.B) *blackhole {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	h := &blackhole{addr: ln.Addr().String()}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	b.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return h
}

// collectorAcceptedSpans is how many spans the collector's OTLP receiver has accepted so far.
func collectorAcceptedSpans(b *testing.B, col *harness.Collector) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, _, err := col.SelfMetric(ctx, "otelcol_receiver_accepted_spans", map[string]string{"receiver": "otlp"})
	if err != nil {
		b.Fatal(err)
	}
	return v
}
