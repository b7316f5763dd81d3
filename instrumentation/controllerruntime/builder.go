package otelctrl

import (
	"errors"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/gowatchtower/watchtower/semconv"
)

// Builder is controller-runtime's builder.Builder with the reconciler and the workqueue
// instrumented. Its methods are the builder's; only Complete and Build add the instrumentation.
type Builder = TypedBuilder[reconcile.Request]

// TypedBuilder is controller-runtime's builder.TypedBuilder, for reconcilers of requests other
// than reconcile.Request, with the reconciler and the workqueue instrumented.
type TypedBuilder[req comparable] struct {
	b        *builder.TypedBuilder[req]
	mgr      manager.Manager
	forObj   client.Object
	name     string
	ctrlOpts controller.TypedOptions[req]
	opts     []Option
	// link brings the queue's tap, built when the controller starts, to the reconciler and
	// to the watches' trigger recorders; owner is the For kind, for the Owns watches.
	link  *tapLink[req]
	owner *ownerKind
}

// NewControllerManagedBy replaces ctrl.NewControllerManagedBy(mgr) — the one line to change in
// a controller's SetupWithManager.
func NewControllerManagedBy(mgr manager.Manager, opts ...Option) *Builder {
	return NewTypedControllerManagedBy[reconcile.Request](mgr, opts...)
}

// NewTypedControllerManagedBy replaces builder.TypedControllerManagedBy[req](mgr).
func NewTypedControllerManagedBy[req comparable](mgr manager.Manager, opts ...Option) *TypedBuilder[req] {
	owner := &ownerKind{scope: func(gk schema.GroupKind) (bool, error) {
		m, err := mgr.GetRESTMapper().RESTMapping(gk)
		if err != nil {
			return false, err
		}
		return m.Scope.Name() == meta.RESTScopeNameNamespace, nil
	}}
	return &TypedBuilder[req]{b: builder.TypedControllerManagedBy[req](mgr), mgr: mgr, opts: opts, link: &tapLink[req]{}, owner: owner}
}

// For is builder.TypedBuilder.For. Its events become the links of the reconciles they cause.
func (b *TypedBuilder[req]) For(object client.Object, opts ...builder.ForOption) *TypedBuilder[req] {
	if b.forObj == nil {
		b.forObj = object
	}
	if p := b.keyedTrigger(object, semconv.TriggerWatchFor, nil, false); p != nil {
		opts = append(opts[:len(opts):len(opts)], builder.WithPredicates(p))
	}
	b.b.For(object, opts...)
	return b
}

// Owns is builder.TypedBuilder.Owns. Its events become the links of the reconciles they cause.
func (b *TypedBuilder[req]) Owns(object client.Object, opts ...builder.OwnsOption) *TypedBuilder[req] {
	everyOwner := slices.ContainsFunc(opts, func(o builder.OwnsOption) bool { return o == builder.OwnsOption(builder.MatchEveryOwner) })
	if p := b.keyedTrigger(object, semconv.TriggerWatchOwns, b.owner, everyOwner); p != nil {
		opts = append(opts[:len(opts):len(opts)], builder.WithPredicates(p))
	}
	b.b.Owns(object, opts...)
	return b
}

// Watches is builder.TypedBuilder.Watches. The requests eventHandler adds get its events as
// their reconciles' links.
func (b *TypedBuilder[req]) Watches(object client.Object, eventHandler handler.TypedEventHandler[client.Object, req], opts ...builder.WatchesOption) *TypedBuilder[req] {
	b.b.Watches(object, b.triggerHandler(object, eventHandler), opts...)
	return b
}

// WatchesMetadata is builder.TypedBuilder.WatchesMetadata, with Watches' links.
func (b *TypedBuilder[req]) WatchesMetadata(object client.Object, eventHandler handler.TypedEventHandler[client.Object, req], opts ...builder.WatchesOption) *TypedBuilder[req] {
	b.b.WatchesMetadata(object, b.triggerHandler(object, eventHandler), opts...)
	return b
}

// keyedTrigger is the trigger-recording predicate of a For or Owns watch, or nil when the
// builder's requests are not reconcile.Request (For and Owns then fail at Build anyway) or the
// object's kind is unknown to the scheme (Build reports that).
func (b *TypedBuilder[req]) keyedTrigger(object client.Object, watch attribute.KeyValue, owner *ownerKind, everyOwner bool) *keyedTrigger {
	link, ok := any(b.link).(*tapLink[reconcile.Request])
	if !ok {
		return nil
	}
	gvk, err := apiutil.GVKForObject(object, b.mgr.GetScheme())
	if err != nil {
		return nil
	}
	return &keyedTrigger{
		watchTrigger: watchTrigger{watch: watch, gk: gvk.GroupKind()},
		owner:        owner,
		everyOwner:   everyOwner,
		record: func(r reconcile.Request, t trig) {
			if tap := link.tap.Load(); tap != nil {
				tap.trigger(r, t)
			}
		},
	}
}

func (b *TypedBuilder[req]) triggerHandler(object client.Object, h handler.TypedEventHandler[client.Object, req]) handler.TypedEventHandler[client.Object, req] {
	gvk, err := apiutil.GVKForObject(object, b.mgr.GetScheme())
	if err != nil || h == nil {
		return h // Build reports an unknown kind; a nil handler is controller-runtime's to refuse
	}
	return &triggerHandler[req]{inner: h, watchTrigger: watchTrigger{watch: semconv.TriggerWatchWatches, gk: gvk.GroupKind()}, link: b.link}
}

// WatchesRawSource is builder.TypedBuilder.WatchesRawSource.
func (b *TypedBuilder[req]) WatchesRawSource(src source.TypedSource[req]) *TypedBuilder[req] {
	b.b.WatchesRawSource(src)
	return b
}

// WithEventFilter is builder.TypedBuilder.WithEventFilter.
func (b *TypedBuilder[req]) WithEventFilter(p predicate.Predicate) *TypedBuilder[req] {
	b.b.WithEventFilter(p)
	return b
}

// WithOptions is builder.TypedBuilder.WithOptions. A NewQueue or Reconciler given here is
// kept, and instrumented.
func (b *TypedBuilder[req]) WithOptions(options controller.TypedOptions[req]) *TypedBuilder[req] {
	b.ctrlOpts = options
	return b
}

// WithLogConstructor is builder.TypedBuilder.WithLogConstructor.
func (b *TypedBuilder[req]) WithLogConstructor(logConstructor func(*req) logr.Logger) *TypedBuilder[req] {
	b.b.WithLogConstructor(logConstructor)
	return b
}

// Named is builder.TypedBuilder.Named.
func (b *TypedBuilder[req]) Named(name string) *TypedBuilder[req] {
	b.name = name
	b.b.Named(name)
	return b
}

// Complete builds the controller with the instrumented reconciler and queue, and adds it to the
// manager.
func (b *TypedBuilder[req]) Complete(r reconcile.TypedReconciler[req]) error {
	_, err := b.Build(r)
	return err
}

// Build is Complete that also returns the controller.
func (b *TypedBuilder[req]) Build(r reconcile.TypedReconciler[req]) (controller.TypedController[req], error) {
	o := b.ctrlOpts
	switch {
	case r != nil && o.Reconciler != nil:
		return nil, errors.New("otelctrl: the reconciler was given both in WithOptions and to Build or Complete")
	case r == nil && o.Reconciler == nil:
		return nil, errors.New("otelctrl: Build or Complete needs a reconciler, got nil")
	case r == nil:
		r, o.Reconciler = o.Reconciler, nil
	}
	name := b.name
	var gk schema.GroupKind
	if b.forObj != nil {
		gvk, err := apiutil.GVKForObject(b.forObj, b.mgr.GetScheme())
		if err != nil {
			return nil, err
		}
		gk = gvk.GroupKind()
		b.owner.gk.Store(&gk)
		if name == "" {
			name = strings.ToLower(gvk.Kind) // the name controller-runtime's builder derives
		}
	}
	cfg := newConfig(b.opts)
	// The queue's tap reaches the reconciler through this link, not through a process-global
	// registry: two managers (or tests) with controllers of the same name stay apart.
	link := b.link
	o.NewQueue = newTappedQueue(defaultQueue(o, b.mgr), cfg, link)
	b.b.WithOptions(o)
	var active *activeSet
	im, ok := b.mgr.(*instrumentedManager)
	if ok {
		active = im.active
	}
	rec := newReconciler(name, r, cfg, gk, link, active)
	if ok {
		im.loops.add(rec.(*reconciler[req]).loops)
	}
	return b.b.Build(rec)
}

// defaultQueue is the NewQueue the controller would use without us: the one given, else
// controller-runtime's default (nil means the priority queue, its default unless turned off).
func defaultQueue[req comparable](o controller.TypedOptions[req], mgr manager.Manager) newQueueFunc[req] {
	if o.NewQueue != nil {
		return o.NewQueue
	}
	usePriority := o.UsePriorityQueue
	if usePriority == nil {
		usePriority = mgr.GetControllerOptions().UsePriorityQueue
	}
	if ptr.Deref(usePriority, true) {
		return nil
	}
	return func(name string, rl workqueue.TypedRateLimiter[req]) workqueue.TypedRateLimitingInterface[req] {
		return workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[req]{Name: name})
	}
}
