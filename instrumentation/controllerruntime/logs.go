package otelctrl

import (
	"context"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel/trace"
)

// traceSink is a logr.LogSink that adds trace_id and span_id to every line its parent writes.
// It adds them when a line is written, not when the logger is built: building costs nothing per
// reconcile (the sink lives inside the reconcile's state), and reconciles that log nothing at
// the enabled level never format an ID.
type traceSink struct {
	base logr.LogSink
	sc   trace.SpanContext
}

// Init does nothing: the base sink was initialised by whoever built it.
func (s *traceSink) Init(logr.RuntimeInfo) {}

func (s *traceSink) Enabled(level int) bool { return s.base.Enabled(level) }

func (s *traceSink) Info(level int, msg string, kv ...any) {
	s.callerSink().Info(level, msg, s.withIDs(kv)...)
}

func (s *traceSink) Error(err error, msg string, kv ...any) {
	s.callerSink().Error(err, msg, s.withIDs(kv)...)
}

func (s *traceSink) WithValues(kv ...any) logr.LogSink {
	return &traceSink{base: s.base.WithValues(kv...), sc: s.sc}
}

func (s *traceSink) WithName(name string) logr.LogSink {
	return &traceSink{base: s.base.WithName(name), sc: s.sc}
}

// WithCallDepth keeps caller reporting right through the extra frame of this wrapper.
func (s *traceSink) WithCallDepth(depth int) logr.LogSink {
	if cd, ok := s.base.(logr.CallDepthLogSink); ok {
		return &traceSink{base: cd.WithCallDepth(depth), sc: s.sc}
	}
	return s
}

func (s *traceSink) callerSink() logr.LogSink {
	if cd, ok := s.base.(logr.CallDepthLogSink); ok {
		return cd.WithCallDepth(1)
	}
	return s.base
}

func (s *traceSink) withIDs(kv []any) []any {
	out := make([]any, 0, len(kv)+4)
	out = append(out, kv...)
	return append(out, "trace_id", s.sc.TraceID().String(), "span_id", s.sc.SpanID().String())
}

// contextWithTraceLogger replaces the logger controller-runtime put into the reconcile context
// (already carrying controller, object and reconcileID) by one whose lines also carry trace_id
// and span_id, so every line the reconciler logs through log.FromContext(ctx) can be joined with
// its trace. Only sampled reconciles get them: an unsampled trace is never exported.
func contextWithTraceLogger(ctx context.Context, st *reconcileState) context.Context {
	sc := st.span.SpanContext()
	if !sc.IsSampled() {
		return ctx
	}
	logger, err := logr.FromContext(ctx)
	if err != nil || logger.GetSink() == nil {
		return ctx // no logger to correlate (controller-runtime always provides one)
	}
	st.logSink = traceSink{base: logger.GetSink(), sc: sc}
	return logr.NewContext(ctx, logger.WithSink(&st.logSink))
}
