package otelctrl

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/gowatchtower/watchtower/semconv"
)

// eventTap records an emitted Kubernetes Event as a span event on the reconcile in progress for
// the object it is about, and counts it.
type eventTap struct{ in *instruments }

func (e eventTap) record(object runtime.Object, eventtype, reason, note string) {
	st := reconcileFor(object)
	controller := ""
	if st != nil {
		controller = st.controller
		if st.span.IsRecording() {
			st.span.AddEvent(semconv.EventSpanName, trace.WithAttributes(
				semconv.EventType(eventtype), semconv.EventReason(reason), semconv.EventNote(note)))
		}
	}
	// Type and reason are bounded (reasons are CamelCase words in the operator's code); the note
	// and the object stay on the span.
	e.in.events.Add(context.Background(), 1, metric.WithAttributeSet(attribute.NewSet(
		semconv.ControllerName(controller), semconv.EventType(eventtype), semconv.EventReason(reason))))
}

// reconcileFor finds the reconcile in progress for object, or for its controlling owner (an
// event about an owned Deployment belongs to the reconcile of the Workload that owns it).
func reconcileFor(object runtime.Object) *reconcileState {
	m, err := meta.Accessor(object)
	if err != nil {
		return nil
	}
	if st := activeReconciles.lookup(types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()}); st != nil {
		return st
	}
	for _, ref := range m.GetOwnerReferences() {
		if ref.Controller != nil && *ref.Controller {
			return activeReconciles.lookup(types.NamespacedName{Namespace: m.GetNamespace(), Name: ref.Name})
		}
	}
	return nil
}

// WrapEventRecorder wraps an events.k8s.io recorder (manager.GetEventRecorder) so that every
// Event it emits is added to the emitting reconcile's span as a "k8s.event" span event and
// counted in watchtower.events by type and reason. The Event itself is emitted unchanged.
func WrapEventRecorder(r recorder.EventRecorder, opts ...Option) recorder.EventRecorder {
	return &eventRecorder{EventRecorder: r, tap: eventTap{instrumentsFor(newConfig(opts).meterProvider)}}
}

type eventRecorder struct {
	recorder.EventRecorder
	tap eventTap
}

func (r *eventRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.tap.record(regarding, eventtype, reason, sprintf(note, args))
	r.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

func (r *eventRecorder) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	r.tap.record(regarding, eventtype, reason, sprintf(note, args))
	r.EventRecorder.AnnotatedEventf(regarding, related, annotations, eventtype, reason, action, note, args...)
}

// WrapLegacyEventRecorder is WrapEventRecorder for the core/v1 recorder
// (manager.GetEventRecorderFor), which most operators still use.
func WrapLegacyEventRecorder(r record.EventRecorder, opts ...Option) record.EventRecorder {
	return &legacyEventRecorder{EventRecorder: r, tap: eventTap{instrumentsFor(newConfig(opts).meterProvider)}}
}

type legacyEventRecorder struct {
	record.EventRecorder
	tap eventTap
}

func (r *legacyEventRecorder) Event(object runtime.Object, eventtype, reason, message string) {
	r.tap.record(object, eventtype, reason, message)
	r.EventRecorder.Event(object, eventtype, reason, message)
}

func (r *legacyEventRecorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.tap.record(object, eventtype, reason, sprintf(messageFmt, args))
	r.EventRecorder.Eventf(object, eventtype, reason, messageFmt, args...)
}

func (r *legacyEventRecorder) AnnotatedEventf(object runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any) {
	r.tap.record(object, eventtype, reason, sprintf(messageFmt, args))
	r.EventRecorder.AnnotatedEventf(object, annotations, eventtype, reason, messageFmt, args...)
}

func sprintf(format string, args []any) string {
	if len(args) == 0 {
		return format
	}
	return fmt.Sprintf(format, args...)
}
