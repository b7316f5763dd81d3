package otelctrl

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/gowatchtower/watchtower/semconv"
)

// eventTap records an emitted Kubernetes Event as a span event and counts it.
type eventTap struct {
	in *instruments
	// active and scheme find the reconcile an Event belongs to when the recorder is not given
	// a context; nil active: no span, only the count.
	active *activeSet
	scheme *runtime.Scheme
}

// record adds the Event to the span of st, or, outside a reconcile, to span (a caller's own
// span, from EventRecorderFor), and counts it.
func (e eventTap) record(st *reconcileState, span trace.Span, eventtype, reason, note string) {
	controller := ""
	if st != nil {
		controller = st.ctrl.name
		span = st.span
	}
	if span != nil && span.IsRecording() {
		span.AddEvent(semconv.EventSpanName, trace.WithAttributes(
			semconv.EventType(eventtype), semconv.EventReason(reason), semconv.EventNote(note)))
	}
	// Type and reason are bounded (reasons are CamelCase words in the operator's code); the note
	// and the object stay on the span.
	e.in.events.Add(context.Background(), 1, metric.WithAttributeSet(attribute.NewSet(
		semconv.ControllerName(controller), semconv.EventType(eventtype), semconv.EventReason(reason))))
}

// reconcileFor finds the reconcile in progress for object — same group, kind, namespace and
// name — or for its controlling owner (an Event about an owned Deployment belongs to the
// reconcile of the Workload that owns it).
func (e eventTap) reconcileFor(object runtime.Object) *reconcileState {
	if e.active == nil {
		return nil
	}
	m, err := meta.Accessor(object)
	if err != nil {
		return nil
	}
	gvk := object.GetObjectKind().GroupVersionKind()
	if e.scheme != nil {
		if g, err := apiutil.GVKForObject(object, e.scheme); err == nil {
			gvk = g
		}
	}
	if gvk.Kind != "" {
		if st := e.active.lookup(activeKey{gk: gvk.GroupKind(), NamespacedName: types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()}}); st != nil {
			return st
		}
	}
	for _, ref := range m.GetOwnerReferences() {
		if ref.Controller != nil && *ref.Controller {
			gv, err := schema.ParseGroupVersion(ref.APIVersion)
			if err != nil {
				return nil
			}
			return e.active.lookup(activeKey{gk: schema.GroupKind{Group: gv.Group, Kind: ref.Kind}, NamespacedName: types.NamespacedName{Namespace: m.GetNamespace(), Name: ref.Name}})
		}
	}
	return nil
}

// eventRecorder is an events.k8s.io recorder (manager.GetEventRecorder of NewManager) whose
// Events are added to the emitting reconcile's span as "k8s.event" span events and counted in
// watchtower.events by type and reason. The Event itself is emitted unchanged.
type eventRecorder struct {
	recorder.EventRecorder
	tap eventTap
}

func (r *eventRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.tap.record(r.tap.reconcileFor(regarding), nil, eventtype, reason, sprintf(note, args))
	r.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

func (r *eventRecorder) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	r.tap.record(r.tap.reconcileFor(regarding), nil, eventtype, reason, sprintf(note, args))
	r.EventRecorder.AnnotatedEventf(regarding, related, annotations, eventtype, reason, action, note, args...)
}

// EventRecorderFor returns r bound to ctx: every Event it emits lands on the span in ctx — the
// reconcile's (or a webhook's, or a runnable's own span) — whatever object it is about. The
// recorders of NewManager find the reconcile by the object an Event is about, which cannot tell
// two controllers reconciling the same object at once, and attributes nothing to a controller
// without For; use this where that matters:
//
//	otelctrl.EventRecorderFor(ctx, r.Recorder).Eventf(obj, nil, corev1.EventTypeNormal, "Scaled", "Scale", "to %d", n)
//
// r may be any recorder; its Events are emitted unchanged.
func EventRecorderFor(ctx context.Context, r recorder.EventRecorder) recorder.EventRecorder {
	er, ok := r.(*eventRecorder)
	if !ok {
		er = &eventRecorder{EventRecorder: r, tap: eventTap{in: instrumentsFor(otel.GetMeterProvider())}}
	}
	return &boundRecorder{er: er, st: stateFromContext(ctx), span: trace.SpanFromContext(ctx)}
}

type boundRecorder struct {
	er   *eventRecorder
	st   *reconcileState
	span trace.Span
}

func (r *boundRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.er.tap.record(r.st, r.span, eventtype, reason, sprintf(note, args))
	r.er.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

func (r *boundRecorder) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	r.er.tap.record(r.st, r.span, eventtype, reason, sprintf(note, args))
	r.er.EventRecorder.AnnotatedEventf(regarding, related, annotations, eventtype, reason, action, note, args...)
}

// legacyEventRecorder is eventRecorder for the core/v1 recorder (manager.GetEventRecorderFor),
// which most operators still use.
type legacyEventRecorder struct {
	record.EventRecorder
	tap eventTap
}

func (r *legacyEventRecorder) Event(object runtime.Object, eventtype, reason, message string) {
	r.tap.record(r.tap.reconcileFor(object), nil, eventtype, reason, message)
	r.EventRecorder.Event(object, eventtype, reason, message)
}

func (r *legacyEventRecorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.tap.record(r.tap.reconcileFor(object), nil, eventtype, reason, sprintf(messageFmt, args))
	r.EventRecorder.Eventf(object, eventtype, reason, messageFmt, args...)
}

func (r *legacyEventRecorder) AnnotatedEventf(object runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any) {
	r.tap.record(r.tap.reconcileFor(object), nil, eventtype, reason, sprintf(messageFmt, args))
	r.EventRecorder.AnnotatedEventf(object, annotations, eventtype, reason, messageFmt, args...)
}

func sprintf(format string, args []any) string {
	if len(args) == 0 {
		return format
	}
	return fmt.Sprintf(format, args...)
}
