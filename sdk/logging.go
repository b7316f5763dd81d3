package sdk

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
)

// warnEndpointPorts logs one line per distinct OTLP endpoint whose port is the collector's
// port for the other protocol: http/protobuf sent to 4317 or gRPC sent to 4318. Start accepts
// such a configuration (a collector may listen anywhere), but with a collector on the
// well-known ports every export fails, and the only symptom would otherwise be missing data
// and a rising dropped counter. Traces and metrics configured alike share one line.
func warnEndpointPorts(s *settings) {
	type mismatch struct {
		o       otlpSettings
		signals []string
	}
	var found []*mismatch
	check := func(signal string, o otlpSettings) {
		if portFix(o) == "" {
			return
		}
		for _, m := range found {
			if m.o.effectiveEndpoint == o.effectiveEndpoint && m.o.endpointFrom == o.endpointFrom &&
				m.o.protocol == o.protocol && m.o.protocolFrom == o.protocolFrom {
				m.signals = append(m.signals, signal)
				return
			}
		}
		found = append(found, &mismatch{o: o, signals: []string{signal}})
	}
	if s.spanExporter == nil && s.tracesExporter == exporterOTLP {
		check("traces", s.traces)
	}
	if s.metricExporter == nil && s.metricsExporter == exporterOTLP {
		check("metrics", s.metrics)
	}
	for _, m := range found {
		s.log().Info("OTLP endpoint port does not match the protocol: every export will fail and be counted as dropped",
			"signals", strings.Join(m.signals, ","),
			"endpoint", redactURL(m.o.effectiveEndpoint), "endpointFrom", m.o.endpointFrom,
			"protocol", m.o.protocol, "protocolFrom", m.o.protocolFrom,
			"fix", portFix(m.o))
	}
}

// portFix says how to fix an endpoint whose port belongs to the other protocol, or returns ""
// when the port is not one of the collector's two OTLP ports or matches the protocol.
func portFix(o otlpSettings) string {
	u, err := url.Parse(o.effectiveEndpoint)
	if err != nil {
		return ""
	}
	protocol := o.protocolFrom
	if protocol == "default" {
		protocol = envOTLPPrefix + "PROTOCOL"
	}
	switch {
	case u.Port() == portGRPC && o.protocol == protocolHTTPProtobuf:
		return fmt.Sprintf("%s is the OTLP/gRPC port: use port %s in %s for http/protobuf, or set %s=grpc",
			portGRPC, portHTTP, o.endpointFrom, protocol)
	case u.Port() == portHTTP && o.protocol == protocolGRPC:
		return fmt.Sprintf("%s is the OTLP/HTTP port: use port %s in %s for grpc, or set %s=http/protobuf",
			portHTTP, portGRPC, o.endpointFrom, protocol)
	}
	return ""
}

// redactURL hides a password in an endpoint's user info before it is logged.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}

// Limits of errorLog: a failing collector produces the same few errors on every export, every
// second or so; one line per error per window is enough to see it, and the count of what was
// left out tells how often it happens.
const (
	errorLogWindow      = 30 * time.Second
	errorLogMaxMessages = 64 // distinct messages tracked at once; beyond, errors are only counted
)

// errorLog is the OpenTelemetry error handler Start installs (otel.ErrorHandler) and the one
// the span processor reports to. It writes to the operator's logger instead of stderr, and
// at most one line per distinct error message per window: the first occurrence is logged, the
// repeats within the window are counted, and the count is logged with the next line for that
// message (or on its own once the window is over and another error comes).
type errorLog struct {
	log    func() logr.Logger // called only when a line is written
	window time.Duration
	now    func() time.Time // time.Now; a fake clock in tests

	mu       sync.Mutex
	windows  map[string]*errorWindow // by error message
	overflow int                     // errors not tracked because windows was full
}

type errorWindow struct {
	start      time.Time // when the message was last logged
	suppressed int       // repeats since then
}

func newErrorLog(log func() logr.Logger) *errorLog {
	return &errorLog{log: log, window: errorLogWindow, now: time.Now, windows: map[string]*errorWindow{}}
}

// Handle implements otel.ErrorHandler.
func (h *errorLog) Handle(err error) {
	if err == nil {
		return
	}
	type line struct {
		err error
		msg string
		kvs []any
	}
	var lines []line
	msg := err.Error()
	now := h.now()
	window := h.window.String()

	h.mu.Lock()
	// Close the windows that are over, reporting their repeats, so that the map only holds
	// messages seen within the last window and no count is kept forever.
	for m, w := range h.windows {
		if m == msg || now.Sub(w.start) < h.window {
			continue
		}
		if w.suppressed > 0 {
			lines = append(lines, line{errors.New(m), "OpenTelemetry error repeated",
				[]any{"suppressed", w.suppressed, "window", window}})
		}
		delete(h.windows, m)
	}
	switch w := h.windows[msg]; {
	case w != nil && now.Sub(w.start) < h.window:
		w.suppressed++
	case w != nil:
		var kvs []any
		if w.suppressed > 0 {
			kvs = []any{"suppressed", w.suppressed, "window", window}
		}
		lines = append(lines, line{err, "OpenTelemetry error", kvs})
		*w = errorWindow{start: now}
	case len(h.windows) >= errorLogMaxMessages:
		h.overflow++
	default:
		h.windows[msg] = &errorWindow{start: now}
		var kvs []any
		if h.overflow > 0 {
			// Errors of other messages that were left out while too many were being tracked.
			kvs = []any{"suppressedOther", h.overflow}
			h.overflow = 0
		}
		lines = append(lines, line{err, "OpenTelemetry error", kvs})
	}
	h.mu.Unlock()

	// Logged outside the lock: a logger that reports its own failures to OpenTelemetry must
	// not deadlock.
	for _, l := range lines {
		h.log().Error(l.err, l.msg, l.kvs...)
	}
}

var _ otel.ErrorHandler = (*errorLog)(nil)
