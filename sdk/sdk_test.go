package sdk

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/gowatchtower/watchtower/semconv"
)

func TestStartReportsInvalidEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv(envTracesSampler, "traceidratio")
	t.Setenv(envTracesSamplerArg, "1.5")
	tel, err := Start(context.Background(), WithoutGlobal(), WithPrometheusRegisterer(prometheus.NewRegistry()))
	if tel != nil || err == nil {
		t.Fatalf("Start = %v, %v; want an error", tel, err)
	}
	if want := `OTEL_TRACES_SAMPLER_ARG="1.5": must be a number between 0 and 1`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

func TestResource(t *testing.T) {
	clearEnv(t)
	t.Setenv(envPodName, "memcached-operator-7d9f")
	t.Setenv(envPodNamespace, "operators")
	t.Setenv(envPodUID, "0b8c7a52-1f51-4a0e-a1d6-3b1f2b0c9d11")
	t.Setenv(envNodeName, "node-1")
	// OTEL_RESOURCE_ATTRIBUTES wins over the Downward API; OTEL_SERVICE_NAME over both.
	t.Setenv(envResourceAttributes, "k8s.node.name=node-override,team=storage,deployment.environment.name=prod,"+
		"service.name=from-attributes,service.version=v1.2.3")
	t.Setenv(envServiceName, "memcached-operator")
	exp := tracetest.NewInMemoryExporter()
	tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
	endSpans(tel, "reconcile", 1)
	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans; want 1", len(spans))
	}
	got := map[string]string{}
	for _, kv := range spans[0].Resource.Attributes() {
		got[string(kv.Key)] = kv.Value.String()
	}
	for k, want := range map[string]string{
		"service.name":                "memcached-operator",
		"service.version":             "v1.2.3",
		"service.instance.id":         instanceID(),
		"k8s.pod.name":                "memcached-operator-7d9f",
		"k8s.namespace.name":          "operators",
		"k8s.pod.uid":                 "0b8c7a52-1f51-4a0e-a1d6-3b1f2b0c9d11",
		"k8s.node.name":               "node-override",
		"team":                        "storage",
		"deployment.environment.name": "prod",
		"telemetry.sdk.language":      "go",
	} {
		if got[k] != want {
			t.Errorf("resource %s = %q; want %q", k, got[k], want)
		}
	}
	if len(instanceID()) != 36 {
		t.Errorf("service.instance.id %q is not a UUID", instanceID())
	}
}

func TestResourceDefaults(t *testing.T) {
	clearEnv(t)
	exp := tracetest.NewInMemoryExporter()
	tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
	endSpans(tel, "reconcile", 1)
	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	res := exp.GetSpans()[0].Resource
	for _, kv := range res.Attributes() {
		switch kv.Key {
		case "service.name":
			// The specification's default: unknown_service:<executable>; the test binary is sdk.test.
			if got := kv.Value.AsString(); got != "unknown_service:sdk.test" {
				t.Errorf("service.name = %q; want %q", got, "unknown_service:sdk.test")
			}
		case "k8s.pod.name", "k8s.namespace.name", "k8s.node.name", "k8s.pod.uid", "service.version":
			t.Errorf("%s set without its source: %q", kv.Key, kv.Value.String())
		}
	}
	// The instance ID can be given explicitly.
	t.Setenv(envResourceAttributes, "service.instance.id=pod-a")
	exp2 := tracetest.NewInMemoryExporter()
	tel2 := startTest(t, WithSpanExporter(exp2), WithMetricExporter(&memMetricExporter{}))
	endSpans(tel2, "reconcile", 1)
	if err := tel2.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if v, _ := exp2.GetSpans()[0].Resource.Set().Value("service.instance.id"); v.AsString() != "pod-a" {
		t.Errorf("service.instance.id = %q; want pod-a", v.AsString())
	}
}

func TestGlobals(t *testing.T) {
	clearEnv(t)
	restoreGlobals(t)
	reg := prometheus.NewRegistry()
	tel, err := Start(context.Background(), WithPrometheusRegisterer(reg),
		WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(ctxT(t)) }()
	if otel.GetTracerProvider() != tel.TracerProvider() || otel.GetMeterProvider() != tel.MeterProvider() {
		t.Error("Start did not install its providers as the globals")
	}
	fields := strings.Join(otel.GetTextMapPropagator().Fields(), ",")
	if !strings.Contains(fields, "traceparent") || !strings.Contains(fields, "baggage") {
		t.Errorf("propagator fields = %s; want tracecontext and baggage", fields)
	}
}

// TestExportedCountIsExact ends spans from several goroutines, some not sampled, and checks
// that watchtower.telemetry.exported equals the number of spans the exporter received.
func TestExportedCountIsExact(t *testing.T) {
	clearEnv(t)
	exp := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	t.Setenv(envBSPMaxQueueSize, "4096")
	tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}), withReader(reader),
		withSampler(dropNamed{"health"}))

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			endSpans(tel, "reconcile", 250) // 1000 in all, fewer than the queue holds
			endSpans(tel, "health", 10)     // not sampled: neither exported nor dropped
		})
	}
	wg.Wait()
	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rm := collect(t, reader)
	if got := len(exp.GetSpans()); got != 1000 {
		t.Errorf("exporter received %d spans; want 1000", got)
	}
	if got := exportedTraces(rm); got != 1000 {
		t.Errorf("exported{traces} = %d; want 1000", got)
	}
	if got := droppedTraces(rm, semconv.TelemetryDropReasonQueueFull) + droppedTraces(rm, semconv.TelemetryDropReasonExportFailed); got != 0 {
		t.Errorf("dropped{traces} = %d; want 0", got)
	}
}

// dropNamed samples every span except those with its name.
type dropNamed struct{ name string }

func (d dropNamed) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.Name == d.name {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
}
func (d dropNamed) Description() string { return "dropNamed" }

// TestQueueFullDropsAreCountedExactly blocks the exporter and fills the queue: the spans that
// do not fit are dropped without blocking the caller, and counted one by one.
func TestQueueFullDropsAreCountedExactly(t *testing.T) {
	clearEnv(t)
	exp := newBlockingSpanExporter()
	reader := sdkmetric.NewManualReader()
	// Queue of 4, hence batches of 4; no timer-driven export can interleave.
	t.Setenv(envBSPMaxQueueSize, "4")
	noTimerExports(t)
	tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}), withReader(reader))

	endSpans(tel, "first", 4) // a full batch: the worker takes it and blocks in the exporter
	select {
	case n := <-exp.entered:
		if n != 4 {
			t.Fatalf("first batch has %d spans; want 4", n)
		}
	case <-ctxT(t).Done():
		t.Fatal("the exporter was never called (deadlock?)")
	}

	// The worker is stuck: 4 spans fit in the queue, the other 6 are dropped. If OnEnd
	// blocked, this would hang until the liveness timeout of the test binary.
	endSpans(tel, "second", 10)
	rm := collect(t, reader)
	if got := droppedTraces(rm, semconv.TelemetryDropReasonQueueFull); got != 6 {
		t.Errorf("dropped{queue_full} = %d; want 6", got)
	}
	if got := exportedTraces(rm); got != 0 {
		t.Errorf("exported = %d while the exporter is blocked; want 0", got)
	}

	close(exp.release)
	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rm = collect(t, reader)
	if got := exportedTraces(rm); got != 8 {
		t.Errorf("exported = %d; want 8", got)
	}
	if got := exp.count(); got != 8 {
		t.Errorf("exporter received %d spans; want 8", got)
	}
	if got := droppedTraces(rm, semconv.TelemetryDropReasonQueueFull); got != 6 {
		t.Errorf("dropped{queue_full} = %d; want 6", got)
	}
}

func TestExportFailedIsCounted(t *testing.T) {
	clearEnv(t)
	reader := sdkmetric.NewManualReader()
	tel := startTest(t, WithSpanExporter(failingSpanExporter{}), WithMetricExporter(&memMetricExporter{}), withReader(reader))
	endSpans(tel, "reconcile", 7)
	if err := tel.ForceFlush(ctxT(t)); err == nil || !strings.Contains(err.Error(), "exporting 7 span(s): collector unavailable") {
		t.Errorf("ForceFlush = %v; want the export error", err)
	}
	rm := collect(t, reader)
	if got := droppedTraces(rm, semconv.TelemetryDropReasonExportFailed); got != 7 {
		t.Errorf("dropped{export_failed} = %d; want 7", got)
	}
	if got := exportedTraces(rm); got != 0 {
		t.Errorf("exported = %d; want 0", got)
	}
}

// TestMetricExportsAreCounted checks the push exporter wrapper: the points of a successful
// export show up as exported{metrics} in the next one; those of a failed one as dropped.
func TestMetricExportsAreCounted(t *testing.T) {
	clearEnv(t)
	mexp := &memMetricExporter{}
	reader := sdkmetric.NewManualReader()
	tel := startTest(t, WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(mexp), withReader(reader))
	c, err := tel.MeterProvider().Meter("test").Int64Counter("widgets")
	if err != nil {
		t.Fatal(err)
	}
	for _, color := range []string{"red", "green", "blue"} {
		c.Add(context.Background(), 1, metric.WithAttributes(attribute.String("color", color)))
	}

	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	first := mexp.last(t)
	if first.points != 3 {
		t.Fatalf("first export has %d points; want the 3 widgets", first.points)
	}
	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	second := mexp.last(t)
	if got := second.sums[semconv.TelemetryExportedName][encoded(semconv.TelemetrySignalMetrics)]; got != 3 {
		t.Errorf("second export: exported{metrics} = %v; want 3", got)
	}

	mexp.setFail(true)
	if err := tel.ForceFlush(ctxT(t)); err == nil {
		t.Error("ForceFlush did not report the failed export")
	}
	failed := mexp.last(t)
	rm := collect(t, reader)
	if got := sumValue(rm, semconv.TelemetryDroppedName, semconv.TelemetrySignalMetrics, semconv.TelemetryDropReasonExportFailed); got != int64(failed.points) {
		t.Errorf("dropped{metrics,export_failed} = %d; want the %d points of the failed export", got, failed.points)
	}
	if got := sumValue(rm, semconv.TelemetryExportedName, semconv.TelemetrySignalMetrics); got != int64(first.points+second.points) {
		t.Errorf("exported{metrics} = %d; want %d", got, first.points+second.points)
	}
}

func TestShutdownIsIdempotent(t *testing.T) {
	clearEnv(t)
	exp := newBlockingSpanExporter()
	close(exp.release)
	reg := prometheus.NewRegistry()
	tel, err := Start(context.Background(), WithoutGlobal(), WithPrometheusRegisterer(reg),
		WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
	if err != nil {
		t.Fatal(err)
	}
	endSpans(tel, "reconcile", 3)

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = tel.Shutdown(ctxT(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Shutdown #%d: %v", i, err)
		}
	}
	if err := tel.Shutdown(ctxT(t)); err != nil {
		t.Errorf("Shutdown after Shutdown: %v", err)
	}
	if got := exp.count(); got != 3 {
		t.Errorf("Shutdown flushed %d spans; want 3", got)
	}
	endSpans(tel, "late", 1) // after Shutdown: ignored, no panic
	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Errorf("ForceFlush after Shutdown: %v", err)
	}
}

// TestShutdownIsBounded uses an exporter that ignores its context entirely, the worst case:
// Shutdown must still return once its own ctx is done, and say why.
func TestShutdownIsBounded(t *testing.T) {
	clearEnv(t)
	exp := &ignoringSpanExporter{entered: make(chan struct{}, 10), release: make(chan struct{})}
	defer close(exp.release)
	tel, err := Start(context.Background(), WithoutGlobal(), WithPrometheusRegisterer(prometheus.NewRegistry()),
		WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}))
	if err != nil {
		t.Fatal(err)
	}
	endSpans(tel, "reconcile", 1)
	go func() { _ = tel.ForceFlush(context.Background()) }() // gets the worker stuck in Export
	<-exp.entered

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // an expired deadline, without depending on the clock
	done := make(chan error, 1)
	go func() { done <- tel.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown = %v; want it to report context.Canceled", err)
		}
	case <-ctxT(t).Done():
		t.Fatal("Shutdown did not return although its ctx was done")
	}
}

type ignoringSpanExporter struct {
	entered chan struct{}
	release chan struct{}
}

func (e *ignoringSpanExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	e.entered <- struct{}{}
	<-e.release
	return nil
}
func (*ignoringSpanExporter) Shutdown(context.Context) error { return nil }

func scrape(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s: %s", resp.Status, body)
	}
	return string(body)
}

// TestPrometheusServesOTelMetrics: the OpenTelemetry metrics appear on the registry the manager
// serves, under the Prometheus names the semconv registry promises.
func TestPrometheusServesOTelMetrics(t *testing.T) {
	clearEnv(t)
	reg := prometheus.NewRegistry()
	tel := startTest(t, WithPrometheusRegisterer(reg),
		WithSpanExporter(failingSpanExporter{}), WithMetricExporter(&memMetricExporter{}))
	c, err := tel.MeterProvider().Meter("test").Int64Counter(semconv.ReconcilesName, metric.WithUnit(semconv.ReconcilesUnit))
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 2, metric.WithAttributes(semconv.ControllerName("memcached")))
	endSpans(tel, "reconcile", 1)
	_ = tel.ForceFlush(ctxT(t)) // fails by design: records dropped{export_failed}

	body := scrape(t, reg)
	for _, want := range []string{
		semconv.ReconcilesPrometheusName + `{watchtower_controller_name="memcached"} 2`,
		semconv.TelemetryDroppedPrometheusName + `{watchtower_telemetry_drop_reason="export_failed",watchtower_telemetry_signal="traces"} 1`,
		"target_info{",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s\n%s", want, body)
		}
	}
	if strings.Contains(body, "watchtower_sdk_registration") {
		t.Error("the registration guard leaked into /metrics")
	}
}

func TestStartTwiceOnOneRegisterer(t *testing.T) {
	clearEnv(t)
	reg := prometheus.NewRegistry()
	opts := []Option{WithoutGlobal(), WithPrometheusRegisterer(reg),
		WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{})}
	first, err := Start(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Start(context.Background(), opts...)
	if err == nil {
		_ = second.Shutdown(ctxT(t))
		t.Fatal("a second live Start on the same registerer succeeded")
	}
	if !strings.Contains(err.Error(), "already serves the metrics of another live Telemetry") {
		t.Errorf("error = %v", err)
	}
	scrape(t, reg) // the failed Start left nothing behind that breaks a scrape

	if err := first.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	third, err := Start(context.Background(), opts...)
	if err != nil {
		t.Fatalf("Start after Shutdown: %v", err)
	}
	defer func() { _ = third.Shutdown(ctxT(t)) }()
	c, _ := third.MeterProvider().Meter("test").Int64Counter("widgets")
	c.Add(context.Background(), 1)
	body := scrape(t, reg) // fails on duplicate series if the first exporter still collected
	if n := strings.Count(body, "\nwidgets_total "); n != 1 {
		t.Errorf("widgets_total appears %d times; want 1\n%s", n, body)
	}
}

// TestBridgeCarriesControllerRuntimeMetrics: a metric registered the way controller-runtime
// registers its own reaches the OTLP export through the bridge, once, and none of the
// OpenTelemetry metrics that the Prometheus exporter put on the same registry comes back,
// whether or not its series carry the otel_scope_* labels. /metrics serves every family once,
// with the otel_scope_* labels only when asked for.
func TestBridgeCarriesControllerRuntimeMetrics(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       []Option
		wantLabels bool
	}{
		{"scope labels dropped by default", nil, false},
		{"WithPrometheusScopeLabels", []Option{WithPrometheusScopeLabels()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			reg := prometheus.NewRegistry()
			reconcileTotal := prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "controller_runtime_reconcile_total",
				Help: "Total number of reconciliations per controller",
			}, []string{"controller", "result"})
			reg.MustRegister(reconcileTotal)
			reconcileTotal.WithLabelValues("memcached", "success").Add(5)

			mexp := &memMetricExporter{}
			tel := startTest(t, append(tc.opts, WithPrometheusRegisterer(reg),
				WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(mexp))...)
			mp := tel.MeterProvider()
			own, _ := mp.Meter("test").Int64Counter(semconv.ReconcilesName)
			own.Add(context.Background(), 1, metric.WithAttributes(semconv.ControllerName("memcached")))
			other, _ := mp.Meter("someone-else").Int64Counter("example.widgets") // not watchtower_*
			other.Add(context.Background(), 1)
			endSpans(tel, "reconcile", 1)

			for range 2 { // the second export also carries the self-metrics of the first
				if err := tel.ForceFlush(ctxT(t)); err != nil {
					t.Fatal(err)
				}
			}
			snap := mexp.last(t)
			seen := map[string]int{}
			for _, n := range snap.names {
				seen[n]++
			}
			for _, want := range []string{"controller_runtime_reconcile_total", semconv.ReconcilesName, "example.widgets",
				semconv.TelemetryExportedName} {
				if seen[want] != 1 {
					t.Errorf("%s exported %d times; want 1 (all: %v)", want, seen[want], snap.names)
				}
			}
			for n, count := range seen {
				if count > 1 {
					t.Errorf("%s exported %d times", n, count)
				}
				if strings.HasPrefix(n, "watchtower_") || n == "target_info" || n == "otel_scope_info" || n == "example_widgets_total" {
					t.Errorf("%s came back through the bridge", n)
				}
			}
			if v := snap.sums["controller_runtime_reconcile_total"][encoded(attribute.String("controller", "memcached"), attribute.String("result", "success"))]; v != 5 {
				t.Errorf("bridged controller_runtime_reconcile_total = %v; want 5", v)
			}

			body := scrape(t, reg) // fails on a duplicate series
			families := map[string]int{}
			for line := range strings.Lines(body) {
				if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
					families[strings.Fields(name)[0]]++
				}
			}
			for _, want := range []string{"controller_runtime_reconcile_total", semconv.ReconcilesPrometheusName,
				"example_widgets_total", semconv.TelemetryExportedPrometheusName, "target_info"} {
				if families[want] != 1 {
					t.Errorf("/metrics has %d %s families; want 1\n%s", families[want], want, body)
				}
			}
			const scoped = semconv.ReconcilesPrometheusName + `{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="",watchtower_controller_name="memcached"} 1`
			if got := strings.Contains(body, "otel_scope_"); got != tc.wantLabels {
				t.Errorf("/metrics has otel_scope_* labels: %t; want %t\n%s", got, tc.wantLabels, body)
			}
			if tc.wantLabels && !strings.Contains(body, scoped) {
				t.Errorf("/metrics lacks %s\n%s", scoped, body)
			}
			if !tc.wantLabels && !strings.Contains(body, semconv.ReconcilesPrometheusName+`{watchtower_controller_name="memcached"} 1`) {
				t.Errorf("/metrics lacks the unlabelled reconcile series\n%s", body)
			}
		})
	}
}

// TestDefaultRegistryIsControllerRuntimes runs Start without Prometheus options: the metrics
// must land on controller-runtime's metrics.Registry, which its manager serves.
func TestDefaultRegistryIsControllerRuntimes(t *testing.T) {
	clearEnv(t)
	tel, err := Start(context.Background(), WithoutGlobal(),
		WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(ctxT(t)) }()
	c, _ := tel.MeterProvider().Meter("test").Int64Counter("default.registry.probe")
	c.Add(context.Background(), 1)
	if body := scrape(t, metrics.Registry); !strings.Contains(body, "\ndefault_registry_probe_total ") {
		t.Errorf("controller-runtime's registry does not serve the OpenTelemetry metrics\n%s", body)
	}
}

// TestFlushDeadlineLosesNothing: a ForceFlush whose ctx is done gives up without turning the
// spans it did not get to into drops; the next flush exports them.
func TestFlushDeadlineLosesNothing(t *testing.T) {
	clearEnv(t)
	exp := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	noTimerExports(t)
	tel := startTest(t, WithSpanExporter(exp), WithMetricExporter(&memMetricExporter{}), withReader(reader))
	endSpans(tel, "reconcile", 3)

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tel.ForceFlush(expired); !errors.Is(err, context.Canceled) {
		t.Errorf("ForceFlush(done ctx) = %v; want context.Canceled", err)
	}
	if err := tel.ForceFlush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rm := collect(t, reader)
	if got := exportedTraces(rm); got != 3 || len(exp.GetSpans()) != 3 {
		t.Errorf("exported = %d, exporter has %d; want 3, 3", got, len(exp.GetSpans()))
	}
	if got := droppedTraces(rm, semconv.TelemetryDropReasonExportFailed); got != 0 {
		t.Errorf("dropped{export_failed} = %d; want 0", got)
	}
}

// restoreGlobals puts OpenTelemetry's globals back after a test that lets Start install its own.
func restoreGlobals(t *testing.T) {
	prevTP, prevMP, prevProp, prevEH := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator(), otel.GetErrorHandler()
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetMeterProvider(prevMP)
		otel.SetTextMapPropagator(prevProp)
		otel.SetErrorHandler(prevEH)
	})
}
