package otelctrl

import (
	"errors"
	"strings"

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
}

// NewControllerManagedBy replaces ctrl.NewControllerManagedBy(mgr) — the one line to change in
// a controller's SetupWithManager.
func NewControllerManagedBy(mgr manager.Manager, opts ...Option) *Builder {
	return NewTypedControllerManagedBy[reconcile.Request](mgr, opts...)
}

// NewTypedControllerManagedBy replaces builder.TypedControllerManagedBy[req](mgr).
func NewTypedControllerManagedBy[req comparable](mgr manager.Manager, opts ...Option) *TypedBuilder[req] {
	return &TypedBuilder[req]{b: builder.TypedControllerManagedBy[req](mgr), mgr: mgr, opts: opts}
}

// For is builder.TypedBuilder.For.
func (b *TypedBuilder[req]) For(object client.Object, opts ...builder.ForOption) *TypedBuilder[req] {
	if b.forObj == nil {
		b.forObj = object
	}
	b.b.For(object, opts...)
	return b
}

// Owns is builder.TypedBuilder.Owns.
func (b *TypedBuilder[req]) Owns(object client.Object, opts ...builder.OwnsOption) *TypedBuilder[req] {
	b.b.Owns(object, opts...)
	return b
}

// Watches is builder.TypedBuilder.Watches.
func (b *TypedBuilder[req]) Watches(object client.Object, eventHandler handler.TypedEventHandler[client.Object, req], opts ...builder.WatchesOption) *TypedBuilder[req] {
	b.b.Watches(object, eventHandler, opts...)
	return b
}

// WatchesMetadata is builder.TypedBuilder.WatchesMetadata.
func (b *TypedBuilder[req]) WatchesMetadata(object client.Object, eventHandler handler.TypedEventHandler[client.Object, req], opts ...builder.WatchesOption) *TypedBuilder[req] {
	b.b.WatchesMetadata(object, eventHandler, opts...)
	return b
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
		if name == "" {
			name = strings.ToLower(gvk.Kind) // the name controller-runtime's builder derives
		}
	}
	cfg := newConfig(b.opts)
	// The queue's tap reaches the reconciler through this link, not through a process-global
	// registry: two managers (or tests) with controllers of the same name stay apart.
	link := &tapLink[req]{}
	o.NewQueue = newTappedQueue(defaultQueue(o, b.mgr), cfg, link)
	b.b.WithOptions(o)
	var active *activeSet
	if im, ok := b.mgr.(*instrumentedManager); ok {
		active = im.active
	}
	return b.b.Build(newReconciler(name, r, cfg, gk, link, active))
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
