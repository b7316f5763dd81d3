package otelctrl

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/gowatchtower/watchtower/semconv"
)

// NewClient returns a client.NewClientFunc for manager.Options.NewClient: the manager's usual
// client (reads from the informer cache, writes to the API server) wrapped by WrapClient, with
// its cache reader marked so that every read is attributed to the cache or to the API server.
func NewClient(opts ...Option) client.NewClientFunc {
	return func(cfg *rest.Config, o client.Options) (client.Client, error) {
		if o.Cache != nil && o.Cache.Reader != nil {
			cacheOpts := *o.Cache
			cacheOpts.Reader = &cacheMarker{Reader: o.Cache.Reader}
			o.Cache = &cacheOpts
		}
		c, err := client.NewWithWatch(cfg, o)
		if err != nil {
			return nil, err
		}
		return wrapClient(c, o.Cache != nil && o.Cache.Reader != nil, opts), nil
	}
}

// cacheMarker wraps the informer cache reader: a read that reaches it was served from memory.
type cacheMarker struct{ client.Reader }

func (m *cacheMarker) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if cs := callStateFrom(ctx); cs != nil {
		cs.fromCache = true
	}
	return m.Reader.Get(ctx, key, obj, opts...)
}

func (m *cacheMarker) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if cs := callStateFrom(ctx); cs != nil {
		cs.fromCache = true
	}
	return m.Reader.List(ctx, list, opts...)
}

// callState travels in the context of one logical call, for the cache marker to fill in. It
// is itself the call's context (one allocation, not two).
type callState struct {
	context.Context
	fromCache bool
}

type callStateKey struct{}

func (cs *callState) Value(key any) any {
	if key == (callStateKey{}) {
		return cs
	}
	return cs.Context.Value(key)
}

func callStateFrom(ctx context.Context) *callState {
	cs, _ := ctx.Value(callStateKey{}).(*callState)
	return cs
}

// WrapClient returns c with a client span per logical call (get, list, create, update, patch,
// apply, delete, delete_all_of and their subresource forms) as a child of the current
// reconcile span, and the watchtower.api.duration histogram. Calls outside a reconcile are
// measured but not traced unless WithAPISpansOutsideReconcile is given. Reads are marked as
// served from the cache only when c was built by NewClient; otherwise they count as API-server
// calls. Watches pass through untraced: a watch lasts as long as its connection.
func WrapClient(c client.WithWatch, opts ...Option) client.WithWatch {
	return wrapClient(c, false, opts)
}

func wrapClient(c client.WithWatch, markCache bool, opts []Option) client.WithWatch {
	cfg := newConfig(opts)
	w := &clientWrapper{
		markCache: markCache,
		cfg:       cfg,
		tracer:    cfg.tracerProvider.Tracer(ScopeName),
		in:        instrumentsFor(cfg.meterProvider),
		scheme:    c.Scheme(),
	}
	return interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			return w.do(ctx, semconv.APIVerbGetValue, "", obj, key.Namespace, key.Name, func(ctx context.Context) error { return c.Get(ctx, key, obj, opts...) })
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			return w.do(ctx, semconv.APIVerbListValue, "", list, listNamespace(opts), "", func(ctx context.Context) error { return c.List(ctx, list, opts...) })
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			return w.do(ctx, semconv.APIVerbCreateValue, "", obj, obj.GetNamespace(), obj.GetName(), func(ctx context.Context) error { return c.Create(ctx, obj, opts...) })
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			return w.do(ctx, semconv.APIVerbUpdateValue, "", obj, obj.GetNamespace(), obj.GetName(), func(ctx context.Context) error { return c.Update(ctx, obj, opts...) })
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			return w.do(ctx, semconv.APIVerbPatchValue, "", obj, obj.GetNamespace(), obj.GetName(), func(ctx context.Context) error { return c.Patch(ctx, obj, patch, opts...) })
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			return w.do(ctx, semconv.APIVerbApplyValue, "", nil, "", "", func(ctx context.Context) error { return c.Apply(ctx, obj, opts...) })
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			return w.do(ctx, semconv.APIVerbDeleteValue, "", obj, obj.GetNamespace(), obj.GetName(), func(ctx context.Context) error { return c.Delete(ctx, obj, opts...) })
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			return w.do(ctx, semconv.APIVerbDeleteAllOfValue, "", obj, obj.GetNamespace(), "", func(ctx context.Context) error { return c.DeleteAllOf(ctx, obj, opts...) })
		},
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			return c.Watch(ctx, list, opts...)
		},
		SubResourceGet: func(ctx context.Context, c client.Client, sub string, obj, subObj client.Object, opts ...client.SubResourceGetOption) error {
			return w.do(ctx, semconv.APIVerbGetValue, sub, obj, obj.GetNamespace(), obj.GetName(), func(ctx context.Context) error {
				return c.SubResource(sub).Get(ctx, obj, subObj, opts...)
			})
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, subObj client.Object, opts ...client.SubResourceCreateOption) error {
			return w.do(ctx, semconv.APIVerbCreateValue, sub, obj, obj.GetNamespace(), obj.GetName(), func(ctx context.Context) error {
				return c.SubResource(sub).Create(ctx, obj, subObj, opts...)
			})
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			return w.do(ctx, semconv.APIVerbUpdateValue, sub, obj, obj.GetNamespace(), obj.GetName(), func(ctx context.Context) error {
				return c.SubResource(sub).Update(ctx, obj, opts...)
			})
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			return w.do(ctx, semconv.APIVerbPatchValue, sub, obj, obj.GetNamespace(), obj.GetName(), func(ctx context.Context) error {
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			})
		},
		SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
			return w.do(ctx, semconv.APIVerbApplyValue, sub, nil, "", "", func(ctx context.Context) error {
				return c.SubResource(sub).Apply(ctx, obj, opts...)
			})
		},
	})
}

type clientWrapper struct {
	cfg config
	// markCache is set by NewClient, whose cache reader marks reads served from memory.
	markCache bool
	tracer    trace.Tracer
	in        *instruments
	scheme    *runtime.Scheme

	// calls caches span names and kinds per (verb, Go type, subresource): resolving a GVK
	// through the scheme and building a span name allocate, and the combinations are few.
	calls sync.Map // callKey -> *callInfo
}

type callKey struct {
	verb, sub string
	typ       reflect.Type
	gvk       schema.GroupVersionKind // for unstructured objects, whose Go type says nothing
}

type callInfo struct {
	verb, sub   string
	spanName    string
	group, kind string
	// opts caches the metric attribute sets of this call per (controller, source, code).
	opts      sync.Map             // resultKey -> []metric.RecordOption
	attrs     []attribute.KeyValue // verb, group, kind, subresource
	startOpts []trace.SpanStartOption
}

func (w *clientWrapper) info(verb, sub string, obj runtime.Object) *callInfo {
	k := callKey{verb: verb, sub: sub}
	if obj != nil {
		k.typ = reflect.TypeOf(obj)
		if gvk := obj.GetObjectKind().GroupVersionKind(); gvk.Kind != "" {
			if _, typed := w.scheme.AllKnownTypes()[gvk]; !typed || isUnstructured(obj) {
				k.gvk = gvk
			}
		}
	}
	if v, ok := w.calls.Load(k); ok {
		return v.(*callInfo)
	}
	ci := &callInfo{kind: "Unknown", verb: verb, sub: sub}
	if obj != nil {
		gvk := k.gvk
		if gvk.Kind == "" {
			if kinds, _, err := w.scheme.ObjectKinds(obj); err == nil && len(kinds) > 0 {
				gvk = kinds[0]
			}
		}
		if gvk.Kind != "" {
			ci.group, ci.kind = gvk.Group, strings.TrimSuffix(gvk.Kind, "List")
		}
	}
	ci.spanName = semconv.APICallSpanName(verb, ci.kind)
	if sub != "" {
		ci.spanName += "/" + sub
	}
	ci.attrs = []attribute.KeyValue{
		semconv.APIVerbKey.String(verb), semconv.APIGroup(ci.group), semconv.APIKind(ci.kind), semconv.APISubresource(sub),
	}
	ci.startOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(ci.attrs...)}
	// Bounded: one entry per verb, type and subresource the operator uses.
	v, _ := w.calls.LoadOrStore(k, ci)
	return v.(*callInfo)
}

type resultKey struct {
	controller string
	fromCache  bool
	code       int
}

func (ci *callInfo) recordOpts(in *instruments, controller string, fromCache bool, code int) []metric.RecordOption {
	k := resultKey{controller, fromCache, code}
	if v, ok := ci.opts.Load(k); ok {
		return v.([]metric.RecordOption)
	}
	source := semconv.APISourceAPIServerValue
	if fromCache {
		source = semconv.APISourceCacheValue
	}
	opts := in.apiRecordOpts(apiSetKey{controller: controller, verb: ci.verb, group: ci.group, kind: ci.kind, subresource: ci.sub, source: source, code: code})
	v, _ := ci.opts.LoadOrStore(k, opts)
	return v.([]metric.RecordOption)
}

func isUnstructured(obj runtime.Object) bool {
	_, ok := obj.(runtime.Unstructured)
	return ok
}

func (w *clientWrapper) do(ctx context.Context, verb, sub string, obj runtime.Object, namespace, name string, call func(context.Context) error) error {
	ci := w.info(verb, sub, obj)
	st := stateFromContext(ctx)
	var span trace.Span
	if st != nil || w.cfg.apiSpansOutsideReconcile {
		ctx, span = w.tracer.Start(ctx, ci.spanName, ci.startOpts...)
	}
	var cs *callState
	if w.markCache {
		cs = &callState{Context: ctx}
		ctx = cs
	}
	start := time.Now()
	err := call(ctx)
	elapsed := time.Since(start)

	fromCache := cs != nil && cs.fromCache
	source := semconv.APISourceAPIServerValue
	if fromCache {
		source = semconv.APISourceCacheValue
	}
	code := statusCode(err)
	controller := ""
	if st != nil {
		controller = st.controller
	}
	mctx := context.Background() // the span's context only when it can be an exemplar
	if span != nil && span.SpanContext().IsSampled() {
		mctx = ctx
	}
	w.in.apiDuration.Record(mctx, elapsed.Seconds(), ci.recordOpts(w.in, controller, fromCache, code)...)
	if span != nil {
		if span.IsRecording() {
			span.SetAttributes(
				semconv.APISourceKey.String(source),
				semconv.APICode(code),
				semconv.ObjectNamespace(namespace),
				semconv.ObjectName(name),
			)
			if err != nil {
				span.RecordError(err)
				// A 4xx is an answer, not a failure, for a controller: NotFound drives
				// CreateOrUpdate and IgnoreNotFound, Conflict a retry. Marking it an error would
				// make every such reconcile look failed to error-based tail sampling; the
				// reconcile span carries the status of the reconcile as a whole.
				if code == 0 || code >= 500 {
					span.SetStatus(codes.Error, err.Error())
				}
			}
		}
		span.End()
	}
	return err
}

// statusCode is the HTTP-equivalent status of a call's outcome.
func statusCode(err error) int {
	if err == nil {
		return 200
	}
	if s, ok := err.(apierrors.APIStatus); ok || apierrorsAs(err, &s) {
		return int(s.Status().Code)
	}
	return 0
}

func apierrorsAs(err error, target *apierrors.APIStatus) bool {
	for e := err; e != nil; {
		if s, ok := e.(apierrors.APIStatus); ok {
			*target = s
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

func listNamespace(opts []client.ListOption) string {
	lo := client.ListOptions{}
	for _, o := range opts {
		if ns, ok := o.(client.InNamespace); ok {
			lo.Namespace = string(ns)
		}
	}
	return lo.Namespace
}
