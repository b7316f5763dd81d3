package otelctrl

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gowatchtower/watchtower/semconv"
)

// newClient returns a client.NewClientFunc for manager.Options.NewClient: the client built by
// build (controller-runtime's default when nil: reads from the informer cache, writes to the
// API server) with a span and a measurement per logical call, and its cache reader marked so
// that every read is attributed to the cache or to the API server.
func newClient(build client.NewClientFunc, opts []Option) client.NewClientFunc {
	if build == nil {
		build = func(cfg *rest.Config, o client.Options) (client.Client, error) { return client.NewWithWatch(cfg, o) }
	}
	return func(cfg *rest.Config, o client.Options) (client.Client, error) {
		marked := o.Cache != nil && o.Cache.Reader != nil
		if marked {
			cacheOpts := *o.Cache
			cacheOpts.Reader = &cacheMarker{Reader: o.Cache.Reader}
			o.Cache = &cacheOpts
		}
		c, err := build(cfg, o)
		if err != nil {
			return nil, err
		}
		return traceClient(c, newCallTracer(c.Scheme(), marked, opts)), nil
	}
}

// traceClient returns c with its calls traced by t, keeping its Watch if it has one.
func traceClient(c client.Client, t *callTracer) client.Client {
	if ww, ok := c.(client.WithWatch); ok {
		return &tracedClientWithWatch{tracedClient{Client: c, t: t}, ww}
	}
	return &tracedClient{Client: c, t: t}
}

// cacheMarker wraps the informer cache reader: a read that reaches it was served from memory.
type cacheMarker struct{ client.Reader }

func (m *cacheMarker) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	markCacheRead(ctx)
	return m.Reader.Get(ctx, key, obj, opts...)
}

func (m *cacheMarker) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	markCacheRead(ctx)
	return m.Reader.List(ctx, list, opts...)
}

// cacheMarkKey is answered by the nearest holder of a call's cache mark: the call's own
// callState, or else its reconcile's state (see callTracer.startInfo).
type cacheMarkKey struct{}

func markCacheRead(ctx context.Context) {
	switch m := ctx.Value(cacheMarkKey{}).(type) {
	case *callState:
		m.fromCache = true
	case *reconcileState:
		m.cacheReads.Add(1)
	}
}

// callState travels in the context of one logical call, for the cache marker to fill in. It
// is itself the call's context (one allocation, not two). A call that is the only one in flight
// in its reconcile needs none: the reconcile's own count of cache reads tells.
type callState struct {
	context.Context
	fromCache bool
}

func (cs *callState) Value(key any) any {
	if key == (cacheMarkKey{}) {
		return cs
	}
	return cs.Context.Value(key)
}

// tracedClient gives every logical call (get, list, create, update, patch, apply, delete,
// delete_all_of and their subresource forms) an INTERNAL span — a child of the reconcile, of the
// caller's own span (a webhook, a runnable), or a root with WithAPISpansOutsideReconcile — and
// a watchtower.api.duration measurement. The span is INTERNAL because a call may never leave the
// process (a cache read); a request that does goes through the transport of WrapConfig, which
// adds the CLIENT span under it. Watches pass through untraced: a watch lasts as long as its
// connection.
type tracedClient struct {
	client.Client
	t *callTracer
}

// tracedClientWithWatch keeps the Watch of a client that has one.
type tracedClientWithWatch struct {
	tracedClient
	ww client.WithWatch
}

func (c *tracedClientWithWatch) Watch(ctx context.Context, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
	return c.ww.Watch(ctx, list, opts...)
}

func (c *tracedClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	ctx, call := c.t.start(ctx, verbGet, "", obj, key.Namespace, key.Name)
	err := c.Client.Get(ctx, key, obj, opts...)
	return c.t.end(ctx, call, err)
}

func (c *tracedClient) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	ctx, call := c.t.start(ctx, verbList, "", list, listNamespace(opts), "")
	err := c.Client.List(ctx, list, opts...)
	return c.t.end(ctx, call, err)
}

func (c *tracedClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.t.annotate(ctx, obj)
	ctx, call := c.t.start(ctx, verbCreate, "", obj, obj.GetNamespace(), obj.GetName())
	err := c.Client.Create(ctx, obj, opts...)
	return c.t.end(ctx, call, err)
}

func (c *tracedClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.t.annotate(ctx, obj)
	ctx, call := c.t.start(ctx, verbUpdate, "", obj, obj.GetNamespace(), obj.GetName())
	err := c.Client.Update(ctx, obj, opts...)
	return c.t.end(ctx, call, err)
}

func (c *tracedClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	c.t.annotate(ctx, obj)
	ctx, call := c.t.start(ctx, verbPatch, "", obj, obj.GetNamespace(), obj.GetName())
	err := c.Client.Patch(ctx, obj, patch, opts...)
	return c.t.end(ctx, call, err)
}

func (c *tracedClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	ctx, call := c.t.startApply(ctx, "", obj)
	err := c.Client.Apply(ctx, obj, opts...)
	return c.t.end(ctx, call, err)
}

func (c *tracedClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	ctx, call := c.t.start(ctx, verbDelete, "", obj, obj.GetNamespace(), obj.GetName())
	err := c.Client.Delete(ctx, obj, opts...)
	return c.t.end(ctx, call, err)
}

func (c *tracedClient) DeleteAllOf(ctx context.Context, obj client.Object, opts ...client.DeleteAllOfOption) error {
	ctx, call := c.t.start(ctx, verbDeleteAllOf, "", obj, obj.GetNamespace(), "")
	err := c.Client.DeleteAllOf(ctx, obj, opts...)
	return c.t.end(ctx, call, err)
}

func (c *tracedClient) Status() client.SubResourceWriter { return c.SubResource("status") }

func (c *tracedClient) SubResource(sub string) client.SubResourceClient {
	return &tracedSubResource{inner: c.Client.SubResource(sub), sub: sub, t: c.t}
}

type tracedSubResource struct {
	inner client.SubResourceClient
	sub   string
	t     *callTracer
}

func (s *tracedSubResource) Get(ctx context.Context, obj, subObj client.Object, opts ...client.SubResourceGetOption) error {
	ctx, call := s.t.start(ctx, verbGet, s.sub, obj, obj.GetNamespace(), obj.GetName())
	err := s.inner.Get(ctx, obj, subObj, opts...)
	return s.t.end(ctx, call, err)
}

func (s *tracedSubResource) Create(ctx context.Context, obj, subObj client.Object, opts ...client.SubResourceCreateOption) error {
	ctx, call := s.t.start(ctx, verbCreate, s.sub, obj, obj.GetNamespace(), obj.GetName())
	err := s.inner.Create(ctx, obj, subObj, opts...)
	return s.t.end(ctx, call, err)
}

func (s *tracedSubResource) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	ctx, call := s.t.start(ctx, verbUpdate, s.sub, obj, obj.GetNamespace(), obj.GetName())
	err := s.inner.Update(ctx, obj, opts...)
	return s.t.end(ctx, call, err)
}

func (s *tracedSubResource) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	ctx, call := s.t.start(ctx, verbPatch, s.sub, obj, obj.GetNamespace(), obj.GetName())
	err := s.inner.Patch(ctx, obj, patch, opts...)
	return s.t.end(ctx, call, err)
}

func (s *tracedSubResource) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
	ctx, call := s.t.startApply(ctx, s.sub, obj)
	err := s.inner.Apply(ctx, obj, opts...)
	return s.t.end(ctx, call, err)
}

// tracedReader is a reader that bypasses the cache — manager.GetAPIReader — with the same spans
// and measurements as the client's reads.
type tracedReader struct {
	client.Reader
	t *callTracer
}

func (r *tracedReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	ctx, call := r.t.start(ctx, verbGet, "", obj, key.Namespace, key.Name)
	err := r.Reader.Get(ctx, key, obj, opts...)
	return r.t.end(ctx, call, err)
}

func (r *tracedReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	ctx, call := r.t.start(ctx, verbList, "", list, listNamespace(opts), "")
	err := r.Reader.List(ctx, list, opts...)
	return r.t.end(ctx, call, err)
}

// verb indexes the per-type call table.
type verb uint8

const (
	verbGet verb = iota
	verbList
	verbCreate
	verbUpdate
	verbPatch
	verbApply
	verbDelete
	verbDeleteAllOf
	numVerbs
)

var verbNames = [numVerbs]string{
	verbGet: semconv.APIVerbGetValue, verbList: semconv.APIVerbListValue, verbCreate: semconv.APIVerbCreateValue,
	verbUpdate: semconv.APIVerbUpdateValue, verbPatch: semconv.APIVerbPatchValue, verbApply: semconv.APIVerbApplyValue,
	verbDelete: semconv.APIVerbDeleteValue, verbDeleteAllOf: semconv.APIVerbDeleteAllOfValue,
}

// callTracer holds what every traced call shares, and caches what can be computed once per
// kind of call.
type callTracer struct {
	cfg config
	// marked is set when the client's cache reader is a cacheMarker, which tells cache reads
	// from API-server reads; without it every read counts as an API-server read.
	marked bool
	tracer trace.Tracer
	in     *instruments
	scheme *runtime.Scheme

	// byType maps a typed object's Go type to its calls: the hot path (typed reads from the
	// cache) is then one map read keyed by a pointer, with no GVK resolution.
	byType cowMap[reflect.Type, *[numVerbs]*callInfo]
	// other holds the calls whose kind comes from the object itself (unstructured, metadata-only,
	// apply configurations) and subresource calls.
	other cowMap[callKey, *callInfo]
	// build serializes the computation of new entries.
	build sync.Mutex
}

func newCallTracer(scheme *runtime.Scheme, marked bool, opts []Option) *callTracer {
	cfg := newConfig(opts)
	return &callTracer{
		cfg:    cfg,
		marked: marked,
		tracer: cfg.tracerProvider.Tracer(ScopeName),
		in:     instrumentsFor(cfg.meterProvider),
		scheme: scheme,
	}
}

type callKey struct {
	verb verb
	sub  string
	typ  reflect.Type
	gvk  schema.GroupVersionKind
}

// callInfo is what a kind of call (verb, group, kind, subresource) always carries.
type callInfo struct {
	verb        string
	sub         string
	spanName    string
	cacheName   string // the span's name when the cache served the call
	group, kind string
	startOpts   []trace.SpanStartOption
	attrs       []attribute.KeyValue // verb, group, kind and subresource, set when the call ends
	// opts caches the metric attribute sets of API-server calls per (controller, code):
	// building a set is the most expensive part of recording a measurement, and the
	// combinations are few.
	opts cowMap[resultKey, []metric.RecordOption]
	// cacheReads holds the counters of the cache reads per (controller, code), and lastRead
	// the one used last: a controller's reads of a kind mostly find what they look for.
	cacheReads cowMap[resultKey, *cacheHit]
	lastRead   atomic.Pointer[cacheHit]
}

type cacheHit struct {
	resultKey
	series *cacheSeries
}

type resultKey struct {
	controller *controllerID // nil outside a reconcile
	code       int
}

// controllerID identifies a reconciler's controller by pointer, so that per-controller caches
// are keyed by a word rather than a string.
type controllerID struct{ name string }

func newCallInfo(v verb, sub string, gvk schema.GroupVersionKind) *callInfo {
	ci := &callInfo{verb: verbNames[v], sub: sub, kind: "Unknown"}
	if gvk.Kind != "" {
		ci.group, ci.kind = gvk.Group, strings.TrimSuffix(gvk.Kind, "List")
	}
	ci.spanName = semconv.APICallSpanName(ci.verb, ci.kind)
	ci.cacheName = semconv.APICacheReadSpanName(ci.verb, ci.kind)
	attrs := []attribute.KeyValue{semconv.APIVerbKey.String(ci.verb), semconv.APIGroup(ci.group), semconv.APIKind(ci.kind)}
	if sub != "" {
		ci.spanName += "/" + sub
		attrs = append(attrs, semconv.APISubresource(sub))
	}
	ci.attrs = attrs
	// No attributes at start: they are set once when the call ends, with the outcome, in one
	// SetAttributes call (one copy in the SDK instead of two, nothing for unsampled spans).
	ci.startOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
	return ci
}

// dynamicKind reports whether obj's kind comes from its own TypeMeta rather than its Go type.
func dynamicKind(obj runtime.Object) bool {
	switch obj.(type) {
	case runtime.Unstructured, *metav1.PartialObjectMetadata, *metav1.PartialObjectMetadataList:
		return true
	}
	return false
}

func (t *callTracer) info(v verb, sub string, obj runtime.Object) *callInfo {
	if obj == nil {
		return t.otherInfo(callKey{verb: v, sub: sub})
	}
	typ := reflect.TypeOf(obj)
	if sub == "" {
		// Only typed objects are ever stored by type: a hit needs no dynamicKind check.
		if calls, ok := t.byType.get(typ); ok && calls[v] != nil {
			return calls[v]
		}
	}
	if sub == "" && !dynamicKind(obj) {
		t.build.Lock()
		defer t.build.Unlock()
		calls, _ := t.byType.get(typ)
		next := new([numVerbs]*callInfo)
		if calls != nil {
			*next = *calls
		}
		next[v] = newCallInfo(v, "", t.schemeKind(obj))
		t.byType.put(typ, next) // bounded: one entry per Go type the operator uses
		return next[v]
	}
	k := callKey{verb: v, sub: sub, typ: typ}
	if dynamicKind(obj) {
		k.gvk = obj.GetObjectKind().GroupVersionKind()
	}
	return t.otherInfo(k)
}

func (t *callTracer) otherInfo(k callKey) *callInfo {
	if ci, ok := t.other.get(k); ok {
		return ci
	}
	t.build.Lock()
	defer t.build.Unlock()
	if ci, ok := t.other.get(k); ok {
		return ci
	}
	gvk := k.gvk
	if gvk.Kind == "" && k.typ != nil {
		gvk = t.schemeKind(reflect.New(k.typ.Elem()).Interface().(runtime.Object))
	}
	ci := newCallInfo(k.verb, k.sub, gvk)
	t.other.put(k, ci) // bounded: one entry per verb, kind and subresource the operator uses
	return ci
}

func (t *callTracer) schemeKind(obj runtime.Object) schema.GroupVersionKind {
	if kinds, _, err := t.scheme.ObjectKinds(obj); err == nil && len(kinds) > 0 {
		return kinds[0]
	}
	return obj.GetObjectKind().GroupVersionKind()
}

// applyConfiguration is what typed apply configurations (k8s.io/client-go/applyconfigurations)
// have in common.
type applyConfiguration interface {
	GetName() *string
	GetNamespace() *string
	GetKind() *string
	GetAPIVersion() *string
}

// unstructuredApply is client.ApplyConfigurationFromUnstructured's result, which embeds the
// *unstructured.Unstructured.
type unstructuredApply interface {
	GetName() string
	GetNamespace() string
	GroupVersionKind() schema.GroupVersionKind
}

// startApply is start for server-side apply: the kind and name come from the apply
// configuration, not from a Go type.
func (t *callTracer) startApply(ctx context.Context, sub string, obj runtime.ApplyConfiguration) (context.Context, call) {
	var gvk schema.GroupVersionKind
	var namespace, name string
	switch ac := obj.(type) {
	case applyConfiguration:
		gv, _ := schema.ParseGroupVersion(ptr.Deref(ac.GetAPIVersion(), ""))
		gvk = gv.WithKind(ptr.Deref(ac.GetKind(), ""))
		namespace, name = ptr.Deref(ac.GetNamespace(), ""), ptr.Deref(ac.GetName(), "")
	case unstructuredApply:
		gvk = ac.GroupVersionKind()
		namespace, name = ac.GetNamespace(), ac.GetName()
	}
	return t.startInfo(ctx, t.otherInfo(callKey{verb: verbApply, sub: sub, gvk: gvk}), namespace, name)
}

// attrBufs holds the buffers the attributes of a call are gathered in: passed to the span's
// SetAttributes, an interface method, a fresh slice would escape to the heap on every call.
var attrBufs = sync.Pool{New: func() any { b := make([]attribute.KeyValue, 0, 8); return &b }}

// call is one logical call in flight.
type call struct {
	ci              *callInfo
	span            trace.Span      // nil when the call is not traced
	cs              *callState      // the call's cache mark, when it has its own
	st              *reconcileState // nil outside a reconcile
	byCount         bool            // the reconcile's count of cache reads tells (cs is nil)
	cacheReads      uint64          // st.cacheReads when the call started, when byCount
	namespace, name string
	start           time.Time
}

func (t *callTracer) start(ctx context.Context, v verb, sub string, obj runtime.Object, namespace, name string) (context.Context, call) {
	return t.startInfo(ctx, t.info(v, sub, obj), namespace, name)
}

func (t *callTracer) startInfo(ctx context.Context, ci *callInfo, namespace, name string) (context.Context, call) {
	c := call{ci: ci, namespace: namespace, name: name}
	st := stateFromContext(ctx)
	inFlight := int32(0)
	if st != nil {
		c.st = st
		inFlight = st.calls.Add(1)
	}
	// Traced inside a reconcile, under a caller's own span (a webhook, a runnable that started
	// one), or everywhere when asked for.
	if st != nil || t.cfg.apiSpansOutsideReconcile || trace.SpanContextFromContext(ctx).IsValid() {
		ctx, c.span = t.tracer.Start(ctx, ci.spanName, ci.startOpts...)
	}
	if t.marked {
		// The only call in flight in its reconcile (the common case: a reconciler calls one
		// at a time) is told a cache read by the reconcile's count of them, with no
		// allocation; concurrent calls and calls outside a reconcile carry their own mark.
		if inFlight == 1 {
			c.byCount, c.cacheReads = true, st.cacheReads.Load()
		} else {
			c.cs = &callState{Context: ctx}
			ctx = c.cs
		}
	}
	c.start = time.Now()
	return ctx, c
}

// controller is the call's reconciling controller, nil outside a reconcile.
func (c *call) controller() *controllerID {
	if c.st == nil {
		return nil
	}
	return c.st.ctrl
}

func (c *call) fromCache() bool {
	if c.cs != nil {
		return c.cs.fromCache
	}
	return c.byCount && c.st.cacheReads.Load() != c.cacheReads
}

func (t *callTracer) end(ctx context.Context, c call, err error) error {
	fromCache := c.fromCache()
	if c.st != nil {
		c.st.calls.Add(-1)
	}
	code := statusCode(err)
	if fromCache {
		// Counted, not timed: see semconv.APICacheReadsName.
		c.ci.cacheSeries(t.in, c.controller(), code).n.Add(1)
	} else {
		elapsed := time.Since(c.start)
		mctx := context.Background() // the span's context only when it can be an exemplar
		if c.span != nil && c.span.SpanContext().IsSampled() {
			mctx = ctx
		}
		t.in.apiDuration.Record(mctx, elapsed.Seconds(), c.ci.recordOpts(t.in, c.controller(), code)...)
	}
	if c.span == nil {
		return err
	}
	if !c.span.IsRecording() {
		c.span.End()
		return err
	}
	source := semconv.APISourceAPIServer
	if fromCache {
		// Only now is it known that the call never left the process: see
		// semconv.APICacheReadSpanName. A successful cache read carries no attributes.
		c.span.SetName(c.ci.cacheName)
		if err == nil {
			c.span.End()
			return nil
		}
		source = semconv.APISourceCache
	}
	buf := attrBufs.Get().(*[]attribute.KeyValue)
	a := append(append((*buf)[:0], c.ci.attrs...), source, semconv.APICode(code), semconv.ObjectNamespace(c.namespace), semconv.ObjectName(c.name))
	c.span.SetAttributes(a...) // the SDK copies them
	*buf = a
	attrBufs.Put(buf)
	if err != nil {
		c.span.RecordError(err)
		// A 4xx is an answer, not a failure, for a controller: NotFound drives
		// CreateOrUpdate and IgnoreNotFound, Conflict a retry. Marking it an error would
		// make every such reconcile look failed to error-based tail sampling; the
		// reconcile span carries the status of the reconcile as a whole.
		if code == 0 || code >= 500 {
			c.span.SetStatus(codes.Error, err.Error())
		}
	}
	c.span.End()
	return err
}

func (ci *callInfo) recordOpts(in *instruments, ctrl *controllerID, code int) []metric.RecordOption {
	k := resultKey{ctrl, code}
	if v, ok := ci.opts.get(k); ok {
		return v
	}
	return ci.opts.getOrPut(k, in.apiRecordOpts(ci.setKey(ctrl, code)))
}

func (ci *callInfo) cacheSeries(in *instruments, ctrl *controllerID, code int) *cacheSeries {
	k := resultKey{ctrl, code}
	if h := ci.lastRead.Load(); h != nil && h.resultKey == k {
		return h.series
	}
	h, ok := ci.cacheReads.get(k)
	if !ok {
		h = ci.cacheReads.getOrPut(k, &cacheHit{k, in.cacheSeriesFor(ci.setKey(ctrl, code))})
	}
	ci.lastRead.Store(h)
	return h.series
}

func (ci *callInfo) setKey(ctrl *controllerID, code int) apiSetKey {
	controller := ""
	if ctrl != nil {
		controller = ctrl.name
	}
	return apiSetKey{controller: controller, verb: ci.verb, group: ci.group, kind: ci.kind, subresource: ci.sub, code: code}
}

// statusCode is the HTTP-equivalent status of a call's outcome: 200 for success, the API
// status code of an API error, 0 for anything else (a transport failure).
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
	ns := ""
	for _, o := range opts {
		if n, ok := o.(client.InNamespace); ok {
			ns = string(n)
		}
	}
	return ns
}

// cowMap is a copy-on-write map for small sets that are read on every call and written a few
// times in a process's life: a read is a plain map lookup, with no lock and no boxing of the key
// (sync.Map boxes it, which allocates for a struct key).
type cowMap[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

func (c *cowMap[K, V]) get(k K) (V, bool) {
	if m := c.m.Load(); m != nil {
		v, ok := (*m)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

func (c *cowMap[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, v)
}

// getOrPut returns the value of k, storing v first if there is none.
func (c *cowMap[K, V]) getOrPut(k K, v V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.m.Load(); m != nil {
		if cur, ok := (*m)[k]; ok {
			return cur
		}
	}
	c.putLocked(k, v)
	return v
}

func (c *cowMap[K, V]) putLocked(k K, v V) {
	old := c.m.Load()
	next := make(map[K]V, 1)
	if old != nil {
		next = make(map[K]V, len(*old)+1)
		for ok, ov := range *old {
			next[ok] = ov
		}
	}
	next[k] = v
	c.m.Store(&next)
}
