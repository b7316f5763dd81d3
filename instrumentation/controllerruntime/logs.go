package otelctrl

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/log"
)

// traceIDValue and spanIDValue render the reconcile's IDs only when a line is actually written:
// logr sinks (zap, klog, slog) call String on a fmt.Stringer value lazily, so the hex encoding
// costs nothing for reconciles that log nothing at the enabled level.
type traceIDValue struct{ st *reconcileState }

func (v traceIDValue) String() string { return v.st.span.SpanContext().TraceID().String() }

// MarshalLog makes logr sinks that support logr.Marshaler log the hex string too.
func (v traceIDValue) MarshalLog() any { return v.String() }

type spanIDValue struct{ st *reconcileState }

func (v spanIDValue) String() string { return v.st.span.SpanContext().SpanID().String() }

// MarshalLog makes logr sinks that support logr.Marshaler log the hex string too.
func (v spanIDValue) MarshalLog() any { return v.String() }

// contextWithTraceLogger replaces the logger controller-runtime put into the reconcile context
// (already carrying controller, object and reconcileID) by one that also carries trace_id and
// span_id, so every line the reconciler logs through log.FromContext(ctx) can be joined with
// its trace.
func contextWithTraceLogger(ctx context.Context, st *reconcileState) context.Context {
	if !st.span.SpanContext().IsValid() {
		return ctx
	}
	logger := log.FromContext(ctx).WithValues("trace_id", traceIDValue{st}, "span_id", spanIDValue{st})
	return log.IntoContext(ctx, logger)
}
