package main

import (
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// reconcile is one reconcile span, as the tail prints it.
type reconcile struct {
	Time       time.Time     `json:"time"`
	Service    string        `json:"service"`
	Controller string        `json:"controller"`
	Namespace  string        `json:"namespace,omitempty"`
	Name       string        `json:"name"`
	Result     string        `json:"result"`
	Duration   time.Duration `json:"duration_ns"`
	TraceID    string        `json:"trace_id"`
	Error      string        `json:"error,omitempty"`
}

// The attributes of a reconcile span (semconv/registry.yaml).
const (
	attrController = "watchtower.controller.name"
	attrNamespace  = "watchtower.object.namespace"
	attrName       = "watchtower.object.name"
	attrResult     = "watchtower.reconcile.result"
)

// failed are the results that are failures.
func failed(result string) bool {
	return result == "error" || result == "terminal_error" || result == "panic"
}

// reconciles calls f with each reconcile span of td; the spans' other attributes are not read.
func reconciles(td ptrace.Traces, f func(reconcile)) {
	for _, rs := range td.ResourceSpans().All() {
		service := ""
		if v, ok := rs.Resource().Attributes().Get("service.name"); ok {
			service = v.Str()
		}
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				if !strings.HasPrefix(sp.Name(), "reconcile ") {
					continue
				}
				attrs := sp.Attributes()
				r := reconcile{
					Time: sp.StartTimestamp().AsTime(), Service: service,
					Controller: str(attrs, attrController), Namespace: str(attrs, attrNamespace), Name: str(attrs, attrName),
					Result: str(attrs, attrResult), Duration: sp.EndTimestamp().AsTime().Sub(sp.StartTimestamp().AsTime()),
					TraceID: sp.TraceID().String(),
				}
				if r.Controller == "" {
					r.Controller = strings.TrimPrefix(sp.Name(), "reconcile ")
				}
				if sp.Status().Code() == ptrace.StatusCodeError {
					r.Error = sp.Status().Message()
				}
				f(r)
			}
		}
	}
}

func str(m pcommon.Map, k string) string {
	if v, ok := m.Get(k); ok {
		return v.AsString()
	}
	return ""
}
