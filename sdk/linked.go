package sdk

import (
	"fmt"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// SampleLinked returns a sampler that samples a span one of whose links at start is sampled,
// and otherwise decides as base does. A reconcile that otelctrl starts links, at its start, to
// the span that wrote the object it was triggered by (the tracing.k8s.io/traceparent
// annotation) or to the reconcile it retries, whenever that span was sampled: with head
// sampling (a ratio), a chain of writes and reconciles across controllers is then kept whole
// rather than cut wherever a coin flip came up the other way, as KEP-5915 proposes.
//
// Start applies it to the sampler of OTEL_TRACES_SAMPLER unless WithoutLinkedSampling is given.
func SampleLinked(base sdktrace.Sampler) sdktrace.Sampler { return linkedSampler{base: base} }

type linkedSampler struct{ base sdktrace.Sampler }

func (s linkedSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	for _, l := range p.Links {
		if l.SpanContext.IsSampled() {
			return sdktrace.SamplingResult{
				Decision:   sdktrace.RecordAndSample,
				Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState(),
			}
		}
	}
	return s.base.ShouldSample(p)
}

func (s linkedSampler) Description() string {
	return fmt.Sprintf("SampleLinked{%s}", s.base.Description())
}

// WithoutLinkedSampling keeps Start from wrapping the sampler in SampleLinked: a span with a
// sampled link is then sampled or not by OTEL_TRACES_SAMPLER alone.
func WithoutLinkedSampling() Option {
	return optionFunc(func(c *config) { c.noLinkedSampling = true })
}
