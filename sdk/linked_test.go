package sdk

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestSampleLinkedKeepsAChainWhole(t *testing.T) {
	// The base samples nothing, as a low ratio would for most traces.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(SampleLinked(sdktrace.ParentBased(sdktrace.NeverSample()))))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tracer := tp.Tracer("linked")
	link := func(flags trace.TraceFlags) trace.Link {
		return trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: flags, Remote: true})}
	}
	for _, tc := range []struct {
		name  string
		opts  []trace.SpanStartOption
		wants bool
	}{
		{"no link: the base decides", nil, false},
		{"a sampled link", []trace.SpanStartOption{trace.WithLinks(link(0), link(trace.FlagsSampled))}, true},
		{"only unsampled links", []trace.SpanStartOption{trace.WithLinks(link(0))}, false},
	} {
		_, span := tracer.Start(context.Background(), "reconcile", tc.opts...)
		if got := span.SpanContext().IsSampled(); got != tc.wants {
			t.Errorf("%s: sampled = %v, want %v", tc.name, got, tc.wants)
		}
		span.End()
	}
}

func TestStartWrapsTheSamplerUnlessTold(t *testing.T) {
	env := envMap(envTracesSampler, "traceidratio", envTracesSamplerArg, "0.1")
	if got := mustSettings(t, env).sampler.Description(); got != "SampleLinked{TraceIDRatioBased{0.1}}" {
		t.Errorf("default sampler %s, want the ratio wrapped in SampleLinked", got)
	}
	if got := mustSettings(t, env, WithoutLinkedSampling()).sampler.Description(); got != "TraceIDRatioBased{0.1}" {
		t.Errorf("with WithoutLinkedSampling: %s, want the ratio alone", got)
	}
}
