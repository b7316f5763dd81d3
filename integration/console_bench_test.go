package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/gowatchtower/watchtower/integration/harness"
	"github.com/gowatchtower/watchtower/semconv"
)

// benchTraces is how many reconcile traces Jaeger holds while the console's pages are timed.
const benchTraces = 10_000

// BenchmarkConsolePages times each console page's server time (its Server-Timing header) with
// 10,000 reconcile traces in a real Jaeger and an operator's metrics (20 controllers) in a real
// Prometheus; the baselines are the one backend request each page cannot do without, timed in
// the same run, so the ratio says what the console adds.
//
//	cd integration && go test -run '^$' -bench BenchmarkConsolePages -benchtime 20x .
func BenchmarkConsolePages(b *testing.B) {
	jaeger := harness.StartJaeger(b)
	ids := loadReconcileTraces(b, jaeger, benchTraces)
	metrics := serveOperatorMetrics(b, 20)
	prom := harness.StartPrometheus(b, harness.WithScrapeInterval(time.Second), harness.WithScrapeTarget("bench-operator", metrics, "/metrics"))
	waitForSeries(b, prom, `sum(rate(watchtower_reconciles_total[5m])) > 0`)
	con := harness.StartConsole(b, harness.ConsoleConfig{JaegerURL: jaeger.QueryURL, PrometheusURL: prom.URL})

	hc := &http.Client{Timeout: time.Minute}
	get := func(b *testing.B, url string) (server time.Duration) {
		resp, err := hc.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var buf [32 << 10]byte
		for {
			if _, err := resp.Body.Read(buf[:]); err != nil {
				break
			}
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %s", url, resp.Status)
		}
		st := resp.Header.Get("Server-Timing") // app;dur=12.3
		if _, ms, ok := strings.Cut(st, "dur="); ok {
			f, _ := strconv.ParseFloat(ms, 64)
			return time.Duration(f * float64(time.Millisecond))
		}
		return 0
	}
	end := time.Now().Add(time.Minute)
	search := fmt.Sprintf("%s/api/traces?service=bench-operator&operation=reconcile%%20c00&minDuration=1s&limit=50&start=%d&end=%d",
		jaeger.QueryURL, end.Add(-time.Hour).UnixMicro(), end.UnixMicro())
	for _, c := range []struct{ name, url string }{
		{"baseline=jaeger-search", search},
		{"baseline=jaeger-trace", jaeger.QueryURL + "/api/traces/" + ids[len(ids)/2]},
		{"baseline=prometheus-query", prom.URL + "/api/v1/query?query=" + "sum%20by%20(watchtower_controller_name)%20(rate(watchtower_reconciles_total%5B5m%5D))"},
		{"page=controllers", con.URL + "/controllers"},
		{"page=reconciles", con.URL + "/reconciles"},
		{"page=reconciles-one-controller", con.URL + "/reconciles?controller=c00"},
		{"page=reconciles-one-object", con.URL + "/reconciles?object=obj-7&result=any"},
		{"page=trace", con.URL + "/trace/" + ids[len(ids)/2]},
		{"page=pipeline", con.URL + "/pipeline"},
		{"page=configure", con.URL + "/configure"},
	} {
		b.Run(c.name, func(b *testing.B) {
			get(b, c.url) // warm: connections, the console's service list
			var server time.Duration
			b.ResetTimer()
			for range b.N {
				server += get(b, c.url)
			}
			if strings.HasPrefix(c.name, "page=") {
				b.ReportMetric(float64(server.Microseconds())/1000/float64(b.N), "server-ms/page")
			}
		})
	}
}

// loadReconcileTraces sends n reconcile-shaped traces to Jaeger — a root "reconcile cNN" with
// the instrumentation's attributes and 3 to 10 API-call children, 5 % slow (1–3 s), 5 % failed,
// spread over the last 50 minutes — waits until Jaeger holds them, and returns their IDs.
func loadReconcileTraces(b *testing.B, j *harness.Jaeger, n int) []string {
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(j.OTLPGRPC), otlptracegrpc.WithInsecure())
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBlocking(), sdktrace.WithMaxExportBatchSize(2048), sdktrace.WithMaxQueueSize(8192)),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "bench-operator"))))
	tr := tp.Tracer("bench")
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	ids := make([]string, 0, n)
	for i := range n {
		start := now.Add(-time.Duration(rng.Int64N(int64(50 * time.Minute))))
		dur := time.Duration(200+rng.IntN(5000)) * time.Microsecond
		if i%20 == 0 {
			dur = time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))
		}
		ctrl := fmt.Sprintf("c%02d", i%20)
		result := "success"
		if i%20 == 7 {
			result = "error"
		}
		_, root := tr.Start(ctx, "reconcile "+ctrl, trace.WithTimestamp(start), trace.WithAttributes(
			semconv.ControllerName(ctrl), semconv.ControllerGroup("bench.gowatchtower.io"), semconv.ControllerKind("Widget"),
			semconv.ObjectNamespace("default"), semconv.ObjectName(fmt.Sprintf("obj-%d", i%500)), semconv.ReconcileID(strconv.Itoa(i)),
			semconv.ReconcileResultKey.String(result), semconv.QueueWait(0.0002), semconv.QueueRetries(0), semconv.TriggerCount(1),
			semconv.TriggerEventKey.String("update")))
		rctx := trace.ContextWithSpan(ctx, root)
		children := 3 + rng.IntN(8)
		for c := range children {
			cs := start.Add(dur * time.Duration(c) / time.Duration(children+1))
			name, src := "get Widget (cache)", "cache"
			if c%3 == 2 {
				name, src = "update Widget", "api_server"
			}
			_, s := tr.Start(rctx, name, trace.WithTimestamp(cs), trace.WithAttributes(semconv.APISourceKey.String(src)))
			s.End(trace.WithTimestamp(cs.Add(dur / time.Duration(children+2))))
		}
		if result == "error" {
			root.SetStatus(codes.Error, "widget asks to fail")
		}
		root.End(trace.WithTimestamp(start.Add(dur)))
		ids = append(ids, root.SpanContext().TraceID().String())
	}
	if err := tp.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	// Jaeger stores asynchronously: wait until the last trace sent is there.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var traces []harness.JaegerTrace
		err := j.Get(ctx, "/api/traces/"+ids[len(ids)-1], &traces)
		if err == nil && len(traces) == 1 {
			return ids
		}
		if time.Now().After(deadline) {
			b.Fatalf("Jaeger does not hold the last of the %d traces sent: %v", n, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// serveOperatorMetrics serves the instrumentation's reconcile metrics for a number of
// controllers, as an operator's /metrics does, moving every 100 ms; it returns host:port.
func serveOperatorMetrics(b *testing.B, controllers int) string {
	reg := prometheus.NewRegistry()
	labels := []string{"watchtower_controller_name", "watchtower_reconcile_result"}
	total := prometheus.NewCounterVec(prometheus.CounterOpts{Name: semconv.ReconcilesPrometheusName}, labels)
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: semconv.ReconcileDurationPrometheusName, Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 16)}, labels)
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: semconv.QueueWaitPrometheusName, Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 16)}, labels[:1])
	api := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: semconv.APIDurationPrometheusName, Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 16)}, labels[:1])
	reads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: semconv.APICacheReadsPrometheusName}, labels[:1])
	hot := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: semconv.ControllerHotLoopingObjectsPrometheusName}, labels[:1])
	stuck := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: semconv.ControllerStuckObjectsPrometheusName}, labels[:1])
	reg.MustRegister(total, dur, wait, api, reads, hot, stuck)
	stop := make(chan struct{})
	b.Cleanup(func() { close(stop) })
	go func() {
		rng := rand.New(rand.NewPCG(3, 4))
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			for c := range controllers {
				name := fmt.Sprintf("c%02d", c)
				res := "success"
				if rng.IntN(10) == 0 {
					res = "error"
				}
				total.WithLabelValues(name, res).Inc()
				dur.WithLabelValues(name, res).Observe(rng.ExpFloat64() * 0.01)
				wait.WithLabelValues(name).Observe(rng.ExpFloat64() * 0.001)
				api.WithLabelValues(name).Observe(rng.ExpFloat64() * 0.003)
				reads.WithLabelValues(name).Add(2)
				hot.WithLabelValues(name).Set(float64(c % 7 / 6))
				stuck.WithLabelValues(name).Set(0)
			}
		}
	}()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func waitForSeries(b *testing.B, p *harness.Prometheus, promql string) {
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := p.Query(ctx, promql)
		if err == nil && len(s) > 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("Prometheus has no %s: %v", promql, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
