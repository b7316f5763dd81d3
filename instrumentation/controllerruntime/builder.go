package otelctrl

import (
	"errors"
	"strings"

	"github.com/go-logr/logr"
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

// Builder is controller-runtime's builder.Builder with the reconciler wrapped by NewReconciler
// and the workqueue tapped by NewQueue. Its methods are the builder's; only Complete and Build
// add the instrumentation.
type Builder struct {
	b        *builder.Builder
	mgr      manager.Manager
	forObj   client.Object
	name     string
	ctrlOpts controller.Options
	opts     []Option
}

// NewControllerManagedBy replaces ctrl.NewControllerManagedBy(mgr) — the one line to change in
// a controller's SetupWithManager.
func NewControllerManagedBy(mgr manager.Manager, opts ...Option) *Builder {
	return &Builder{b: builder.ControllerManagedBy(mgr), mgr: mgr, opts: opts}
}

// For is builder.Builder.For.
func (b *Builder) For(object client.Object, opts ...builder.ForOption) *Builder {
	if b.forObj == nil {
		b.forObj = object
	}
	b.b.For(object, opts...)
	return b
}

// Owns is builder.Builder.Owns.
func (b *Builder) Owns(object client.Object, opts ...builder.OwnsOption) *Builder {
	b.b.Owns(object, opts...)
	return b
}

// Watches is builder.Builder.Watches.
func (b *Builder) Watches(object client.Object, eventHandler handler.EventHandler, opts ...builder.WatchesOption) *Builder {
	b.b.Watches(object, eventHandler, opts...)
	return b
}

// WatchesMetadata is builder.Builder.WatchesMetadata.
func (b *Builder) WatchesMetadata(object client.Object, eventHandler handler.EventHandler, opts ...builder.WatchesOption) *Builder {
	b.b.WatchesMetadata(object, eventHandler, opts...)
	return b
}

// WatchesRawSource is builder.Builder.WatchesRawSource.
func (b *Builder) WatchesRawSource(src source.Source) *Builder {
	b.b.WatchesRawSource(src)
	return b
}

// WithEventFilter is builder.Builder.WithEventFilter.
func (b *Builder) WithEventFilter(p predicate.Predicate) *Builder {
	b.b.WithEventFilter(p)
	return b
}

// WithOptions is builder.Builder.WithOptions. A NewQueue given here is kept, and tapped.
func (b *Builder) WithOptions(options controller.Options) *Builder {
	b.ctrlOpts = options
	return b
}

// WithLogConstructor is builder.Builder.WithLogConstructor.
func (b *Builder) WithLogConstructor(logConstructor func(*reconcile.Request) logr.Logger) *Builder {
	b.b.WithLogConstructor(logConstructor)
	return b
}

// Named is builder.Builder.Named.
func (b *Builder) Named(name string) *Builder {
	b.name = name
	b.b.Named(name)
	return b
}

// Complete builds the controller with the instrumented reconciler and queue, and adds it to the
// manager.
func (b *Builder) Complete(r reconcile.Reconciler) error {
	_, err := b.Build(r)
	return err
}

// Build is Complete that also returns the controller.
func (b *Builder) Build(r reconcile.Reconciler) (controller.Controller, error) {
	if r == nil {
		return nil, errors.New("otelctrl: Build or Complete needs a reconciler, got nil")
	}
	name, group, kind := b.name, "", ""
	if b.forObj != nil {
		gvk, err := apiutil.GVKForObject(b.forObj, b.mgr.GetScheme())
		if err != nil {
			return nil, err
		}
		group, kind = gvk.Group, gvk.Kind
		if name == "" {
			name = strings.ToLower(gvk.Kind) // the name controller-runtime's builder derives
		}
	}
	o := b.ctrlOpts
	newQueue := o.NewQueue
	if newQueue == nil {
		usePriority := o.UsePriorityQueue
		if usePriority == nil {
			usePriority = b.mgr.GetControllerOptions().UsePriorityQueue
		}
		if !ptr.Deref(usePriority, true) {
			// controller-runtime's default when the priority queue is off; nil means the
			// priority queue, its default otherwise.
			newQueue = func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
				return workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Name: name})
			}
		}
	}
	o.NewQueue = NewQueue(newQueue, b.opts...)
	b.b.WithOptions(o)
	return b.b.Build(NewReconciler(name, r, append(b.opts[:len(b.opts):len(b.opts)], WithGroupKind(group, kind))...))
}
