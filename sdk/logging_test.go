package sdk

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// logLine is one line written to a captureSink.
type logLine struct {
	err bool // written with Error
	msg string
	kvs map[string]any
}

func (l logLine) String() string { return fmt.Sprintf("%s %v", l.msg, l.kvs) }

// captureSink is a logr.LogSink that keeps every line, for assertions on what the SDK logs.
type captureSink struct {
	mu    sync.Mutex
	lines []logLine
}

func (*captureSink) Init(logr.RuntimeInfo)               {}
func (*captureSink) Enabled(int) bool                    { return true }
func (s *captureSink) WithValues(...any) logr.LogSink    { return s }
func (s *captureSink) WithName(string) logr.LogSink      { return s }
func (s *captureSink) Info(_ int, msg string, kv ...any) { s.add(logLine{msg: msg, kvs: kvMap(kv)}) }
func (s *captureSink) Error(err error, msg string, kv ...any) {
	m := kvMap(kv)
	m["error"] = err.Error()
	s.add(logLine{err: true, msg: msg, kvs: m})
}

func (s *captureSink) add(l logLine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, l)
}

func (s *captureSink) take() []logLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lines
	s.lines = nil
	return l
}

func kvMap(kv []any) map[string]any {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[fmt.Sprint(kv[i])] = kv[i+1]
	}
	return m
}

func TestPortMismatchWarning(t *testing.T) {
	const (
		general        = "OTEL_EXPORTER_OTLP_ENDPOINT"
		tracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
		protocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	)
	type want struct {
		signals, endpointFrom string
		fix                   []string // substrings of the fix
	}
	for _, tc := range []struct {
		name string
		env  func(string) string
		opts []Option
		want []want
	}{
		{"defaults", envMap(), nil, nil},
		{"http on 4318", envMap(general, "http://collector:4318"), nil, nil},
		{"grpc on 4317", envMap(general, "http://collector:4317", protocol, "grpc"), nil, nil},
		{"no port", envMap(general, "https://collector.example.com"), nil, nil},
		{"other port", envMap(general, "http://collector:14317"), nil, nil},
		{"the default http/protobuf on 4317: one line for both signals",
			envMap(general, "http://otelcol-watchtower.observability.svc:4317"), nil,
			[]want{{"traces,metrics", general, []string{"4317 is the OTLP/gRPC port", "port 4318 in " + general, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}}}},
		{"grpc on 4318", envMap(general, "http://collector:4318", protocol, "grpc"), nil,
			[]want{{"traces,metrics", general, []string{"4318 is the OTLP/HTTP port", "port 4317", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}}}},
		{"per-signal protocol", envMap(general, "http://collector:4318", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"), nil,
			[]want{{"metrics", general, []string{"port 4317 in " + general, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=http/protobuf"}}}},
		{"a console or no exporter is not checked",
			envMap(general, "http://collector:4317", envTracesExporter, "console", envMetricsExporter, "none"), nil, nil},
		{"per-signal endpoint: only traces", envMap(general, "http://collector:4318", tracesEndpoint, "http://collector:4317/v1/traces"), nil,
			[]want{{"traces", tracesEndpoint, []string{"port 4318 in " + tracesEndpoint}}}},
		{"different mismatches: one line each",
			envMap(general, "http://collector:4317", tracesEndpoint, "http://traces:4317/v1/traces"), nil,
			[]want{{"traces", tracesEndpoint, nil}, {"metrics", general, nil}}},
		{"a replaced exporter is not checked", envMap(general, "http://collector:4317"),
			[]Option{WithSpanExporter(tracetest.NewNoopExporter())},
			[]want{{"metrics", general, nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &captureSink{}
			warnEndpointPorts(mustSettings(t, tc.env, append(tc.opts, WithLogger(logr.New(sink)))...))
			lines := sink.take()
			if len(lines) != len(tc.want) {
				t.Fatalf("logged %d lines %v; want %d", len(lines), lines, len(tc.want))
			}
			for i, w := range tc.want {
				l := lines[i]
				if l.err || !strings.Contains(l.msg, "does not match the protocol") ||
					l.kvs["signals"] != w.signals || l.kvs["endpointFrom"] != w.endpointFrom {
					t.Errorf("line %d = %v; want a warning for signals %s from %s", i, l, w.signals, w.endpointFrom)
				}
				for _, f := range w.fix {
					if fix, _ := l.kvs["fix"].(string); !strings.Contains(fix, f) {
						t.Errorf("fix %q does not contain %q", fix, f)
					}
				}
			}
		})
	}
}

func TestPortMismatchWarningHidesPassword(t *testing.T) {
	sink := &captureSink{}
	warnEndpointPorts(mustSettings(t, envMap("OTEL_EXPORTER_OTLP_ENDPOINT", "http://user:s3cr3t@collector:4317"), WithLogger(logr.New(sink))))
	if lines := sink.take(); len(lines) != 1 || strings.Contains(lines[0].String(), "s3cr3t") {
		t.Errorf("lines = %v; want one, without the password", lines)
	}
}

// TestStartWarnsAboutPort: the warning is logged by Start, to WithLogger's logger.
func TestStartWarnsAboutPort(t *testing.T) {
	clearEnv(t)
	// .invalid never resolves, and nothing is recorded, so nothing is sent anywhere.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otelcol.invalid:4317")
	sink := &captureSink{}
	startTest(t, WithLogger(logr.New(sink)), WithMetricExporter(&memMetricExporter{}))
	lines := sink.take()
	if len(lines) != 1 || lines[0].kvs["signals"] != "traces" {
		t.Errorf("Start logged %v; want one port warning for traces", lines)
	}
}

func TestDefaultLoggerIsControllerRuntimes(t *testing.T) {
	s := mustSettings(t, envMap())
	if got, want := reflect.TypeOf(s.log().GetSink()), reflect.TypeOf(ctrllog.Log.GetSink()); got != want {
		t.Errorf("default logger sink = %v; want controller-runtime's %v", got, want)
	}
}

func TestErrorLogRateLimits(t *testing.T) {
	sink := &captureSink{}
	now := time.Unix(1_700_000_000, 0)
	h := newErrorLog(func() logr.Logger { return logr.New(sink) })
	h.now = func() time.Time { return now }
	errA, errB, errC := errors.New("export failed: connection refused"), errors.New("other"), errors.New("third")
	expect := func(step string, want ...string) {
		t.Helper()
		lines := sink.take()
		var got []string
		for _, l := range lines {
			if !l.err {
				t.Errorf("%s: %v not logged as an error", step, l)
			}
			s := l.kvs["error"].(string)
			if n, ok := l.kvs["suppressed"]; ok {
				s += fmt.Sprintf(" suppressed=%v", n)
			}
			if n, ok := l.kvs["suppressedOther"]; ok {
				s += fmt.Sprintf(" suppressedOther=%v", n)
			}
			got = append(got, s)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: logged %q; want %q", step, got, want)
		}
	}

	for range 5 {
		h.Handle(errA)
	}
	h.Handle(errB)
	expect("first occurrences", errA.Error(), errB.Error())

	now = now.Add(errorLogWindow - time.Second)
	h.Handle(errA)
	expect("within the window")

	now = now.Add(2 * time.Second)
	h.Handle(errA)
	expect("after the window: the count of the repeats", errA.Error()+" suppressed=5")

	for range 3 {
		h.Handle(errB)
	}
	expect("errB's first window is over", errB.Error())
	now = now.Add(errorLogWindow)
	h.Handle(errC)
	expect("a window that ended with repeats is reported", errB.Error()+" suppressed=2", errC.Error())
	if len(h.windows) != 1 {
		t.Errorf("%d messages tracked; want 1 (expired windows are forgotten)", len(h.windows))
	}

	// Too many distinct messages at once: the extra ones are only counted.
	for i := range errorLogMaxMessages + 3 {
		h.Handle(fmt.Errorf("error %d", i))
	}
	if got := len(sink.take()); got != errorLogMaxMessages-1 {
		t.Errorf("logged %d distinct messages; want %d", got, errorLogMaxMessages-1)
	}
	now = now.Add(errorLogWindow)
	h.Handle(errA)
	expect("the count of the untracked ones", errA.Error()+" suppressedOther=4")
	h.Handle(nil) // ignored
	expect("nil")
}

// TestExportErrorsGoToTheLogger: span export failures reach WithLogger's logger, rate limited,
// also with WithoutGlobal, which leaves the global error handler alone.
func TestExportErrorsGoToTheLogger(t *testing.T) {
	clearEnv(t)
	// The first otel.SetErrorHandler of the process also becomes the delegate of the default
	// handler for good, so the sentinel must be a working handler.
	sentinel := &countingHandler{}
	prev := otel.GetErrorHandler()
	otel.SetErrorHandler(sentinel)
	t.Cleanup(func() { otel.SetErrorHandler(prev) })

	sink := &captureSink{}
	tel := startTest(t, WithLogger(logr.New(sink)), WithSpanExporter(failingSpanExporter{}),
		WithMetricExporter(&memMetricExporter{}))
	for range 3 {
		endSpans(tel, "reconcile", 2)
		_ = tel.ForceFlush(ctxT(t))
	}
	lines := sink.take()
	if len(lines) != 1 || !lines[0].err || !strings.Contains(lines[0].kvs["error"].(string), "collector unavailable") {
		t.Errorf("logged %v; want one error line about the failed export", lines)
	}
	if otel.GetErrorHandler() != otel.ErrorHandler(sentinel) {
		t.Error("Start with WithoutGlobal replaced the global error handler")
	}
}

// TestGlobalErrorHandler: without WithoutGlobal, what the OpenTelemetry SDK reports through
// otel.Handle (a failed metric push, for instance) goes to WithLogger's logger.
func TestGlobalErrorHandler(t *testing.T) {
	clearEnv(t)
	restoreGlobals(t)
	sink := &captureSink{}
	reg := prometheus.NewRegistry()
	tel, err := Start(context.Background(), WithLogger(logr.New(sink)), WithPrometheusRegisterer(reg),
		WithSpanExporter(tracetest.NewNoopExporter()), WithMetricExporter(&memMetricExporter{}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(ctxT(t)) }()

	otel.Handle(errors.New("metric push failed"))
	otel.Handle(errors.New("metric push failed"))
	if lines := sink.take(); len(lines) != 1 || lines[0].kvs["error"] != "metric push failed" {
		t.Errorf("logged %v; want the error once", lines)
	}
}

// countingHandler is an otel.ErrorHandler that only counts.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Handle(error) { h.n.Add(1) }

// blackHole is an OTLP endpoint that accepts TCP connections and never answers: the
// collector that hangs, the worst case for Shutdown.
func blackHole(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return "http://" + lis.Addr().String()
}

// TestShutdownWithoutDeadlineIsBounded: Shutdown(context.Background()) with a collector that
// never answers returns at the default bound (or WithShutdownTimeout's), not after the
// exporters' own timeouts and retries, over either protocol.
func TestShutdownWithoutDeadlineIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol string
		opts     []Option
		bound    time.Duration
	}{
		{"default bound, http/protobuf", "http/protobuf", nil, defaultShutdownTimeout},
		{"WithShutdownTimeout, grpc", "grpc", []Option{WithShutdownTimeout(time.Second)}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", blackHole(t))
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			tel := startTest(t, append([]Option{WithLogger(logr.Discard())}, tc.opts...)...)
			endSpans(tel, "reconcile", 3)

			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- tel.Shutdown(context.Background()) }()
			limit := tc.bound + 2*time.Second // generous: only a missing bound can exceed it
			select {
			case err := <-done:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown = %v; want it to report the deadline", err)
				}
				t.Logf("Shutdown returned after %s", time.Since(start).Round(time.Millisecond))
			case <-time.After(limit):
				t.Fatalf("Shutdown(context.Background()) still running after %s with a collector that does not answer", limit)
			}
		})
	}
}

func TestShutdownTimeoutValidation(t *testing.T) {
	if _, err := newSettings(envMap(), []Option{WithShutdownTimeout(0)}); err == nil ||
		!strings.Contains(err.Error(), "WithShutdownTimeout(0s): must be positive") {
		t.Errorf("WithShutdownTimeout(0): error %v", err)
	}
	if s := mustSettings(t, envMap()); s.shutdownTimeout != 5*time.Second {
		t.Errorf("default shutdown timeout = %s; want 5s", s.shutdownTimeout)
	}
}
