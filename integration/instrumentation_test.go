package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/integration/harness"
	"github.com/gowatchtower/watchtower/semconv"
)

// mirrorReconciler keeps a Secret "<name>-mirror" with the data of each labelled ConfigMap: a
// small controller doing what real ones do — cached reads, writes, owner references, events —
// and failing on purpose for ConfigMaps that ask for it.
type mirrorReconciler struct {
	client.Client
	apiReader client.Reader
	recorder  recorder.EventRecorder
	// conflicted remembers the ConfigMaps whose stale update already hit a conflict once.
	conflicted sync.Map
}

func (r *mirrorReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var cm corev1.ConfigMap
	if err := r.Get(ctx, req.NamespacedName, &cm); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if cm.Data["panic"] == "true" {
		panic("mirror: a reconciler bug") // as a nil map write or a nil dereference would
	}
	if cm.Data["escape"] == "true" {
		return r.escape(ctx, &cm)
	}
	if cm.Data["fail"] == "true" {
		r.recorder.Eventf(&cm, nil, corev1.EventTypeWarning, "MirrorFailed", "Mirror", "asked to fail")
		return reconcile.Result{}, reconcile.TerminalError(errors.New("mirror refused: the ConfigMap asks to fail"))
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cm.Namespace, Name: cm.Name + "-mirror"}}
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, secret, func() error {
		secret.StringData = cm.Data
		return controllerutil.SetControllerReference(&cm, secret, r.Scheme())
	})
	if err != nil {
		return reconcile.Result{}, err
	}
	if op != controllerutil.OperationResultNone {
		r.recorder.Eventf(&cm, secret, corev1.EventTypeNormal, "Mirrored", "Mirror", "secret %s %s", secret.Name, op)
	}
	return reconcile.Result{}, nil
}

// escape makes the calls that bypass the manager's client paths: a read that skips the cache
// (GetAPIReader), a server-side apply, and, the first time, an update of a stale copy that the
// API server refuses with 409 Conflict.
func (r *mirrorReconciler) escape(ctx context.Context, cm *corev1.ConfigMap) (reconcile.Result, error) {
	var fresh corev1.ConfigMap
	if err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(cm), &fresh); err != nil {
		return reconcile.Result{}, err
	}
	applied := corev1ac.ConfigMap(cm.Name+"-applied", cm.Namespace).WithData(map[string]string{"from": cm.Name})
	if err := r.Apply(ctx, applied, client.FieldOwner("mirror"), client.ForceOwnership); err != nil {
		return reconcile.Result{}, err
	}
	if _, done := r.conflicted.LoadOrStore(cm.Name, true); !done {
		stale := cm.DeepCopy()
		stale.ResourceVersion = "1"
		stale.Data["touched"] = "yes"
		return reconcile.Result{}, r.Update(ctx, stale)
	}
	return reconcile.Result{}, nil
}

// TestInstrumentedControllerAgainstARealAPIServer runs a controller instrumented the documented
// way (otelctrl.NewManager + otelctrl.NewControllerManagedBy) against a real kube-apiserver
// started with --tracing-config-file, and checks what a user would look for in the traces and
// metrics.
func TestInstrumentedControllerAgainstARealAPIServer(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	apiserverSpans := harness.NewOTLPSink(t)
	tracingConfig := filepath.Join(t.TempDir(), "tracing.yaml")
	// samplingRatePerMillion unset: the API server samples nothing on its own and follows the
	// sampled parent our transport sends in traceparent.
	if err := os.WriteFile(tracingConfig, []byte(fmt.Sprintf("apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: %s\n", apiserverSpans.Endpoint)), 0o644); err != nil {
		t.Fatal(err)
	}
	kube := harness.StartKube(t, harness.WithAPIServerFlag("tracing-config-file", tracingConfig))

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	opts := []otelctrl.Option{otelctrl.WithTracerProvider(tp), otelctrl.WithMeterProvider(mp), otelctrl.WithPropagator(propagation.TraceContext{})}

	// The operator runs as envtest's admin user, which is in system:masters: the API server
	// continues its trace. (Other identities get a new trace linked to ours; docs/instrumenting-an-operator.md.)
	// The client's HTTP client is the user's own, built from the unwrapped config: its requests
	// must still get wire spans and carry traceparent.
	userHTTPClient, err := rest.HTTPClientFor(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := otelctrl.NewManager(kube.Config, manager.Options{
		Scheme:  scheme.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Client:  client.Options{HTTPClient: userHTTPClient},
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	const controllerName = "configmap-mirror"
	r := &mirrorReconciler{Client: mgr.GetClient(), apiReader: mgr.GetAPIReader(), recorder: mgr.GetEventRecorder(controllerName)}
	err = otelctrl.NewControllerManagedBy(mgr, opts...).
		For(&corev1.ConfigMap{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()["mirror"] == "yes" }))).
		Owns(&corev1.Secret{}).
		Named(controllerName).
		Complete(r)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		}
	}
	t.Cleanup(stop)

	wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer wcancel()
	for _, cm := range []*corev1.ConfigMap{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app-config", Labels: map[string]string{"mirror": "yes"}}, Data: map[string]string{"k": "v"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "broken-config", Labels: map[string]string{"mirror": "yes"}}, Data: map[string]string{"fail": "true"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "buggy-config", Labels: map[string]string{"mirror": "yes"}}, Data: map[string]string{"panic": "true"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "escape-config", Labels: map[string]string{"mirror": "yes"}}, Data: map[string]string{"escape": "true"}},
	} {
		if err := kube.Client.Create(wctx, cm); err != nil {
			t.Fatal(err)
		}
	}
	// The real effect of the controller: the mirror Secret exists.
	for {
		var s corev1.Secret
		err := kube.Client.Get(wctx, client.ObjectKey{Namespace: "default", Name: "app-config-mirror"}, &s)
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) || wctx.Err() != nil {
			t.Fatalf("the mirror Secret never appeared: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The reconcile that created the Secret: its trace holds the API calls, cache reads marked.
	var root sdktrace.ReadOnlySpan
	var failed sdktrace.ReadOnlySpan
	deadline := time.Now().Add(30 * time.Second)
	for (root == nil || failed == nil) && time.Now().Before(deadline) {
		for _, s := range spans.Ended() {
			if s.Name() != "reconcile "+controllerName {
				continue
			}
			name := attr(s, semconv.ObjectNameKey)
			if name == "app-config" && root == nil && hasChild(spans.Ended(), s, "create Secret") {
				root = s
			}
			if name == "broken-config" {
				failed = s
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if root == nil || failed == nil {
		t.Fatalf("no reconcile span for app-config with a create Secret child (%v) or for broken-config (%v)", root != nil, failed != nil)
	}
	if attr(root, semconv.ControllerKindKey) != "ConfigMap" || attr(root, semconv.ObjectNamespaceKey) != "default" || attr(root, semconv.ReconcileResultKey) != "success" {
		t.Errorf("root span attributes %v", root.Attributes())
	}
	children := childrenOf(spans.Ended(), root)
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, c := range children {
		byName[c.Name()] = c
	}
	if g, ok := byName["get ConfigMap (cache)"]; !ok || len(childrenOf(spans.Ended(), g)) != 0 {
		t.Errorf("get ConfigMap must be a child served from the cache, with no wire span; children %v", names(children))
	}
	if g, ok := byName["get Secret (cache)"]; !ok || attr(g, semconv.APISourceKey) != semconv.APISourceCacheValue || attr(g, semconv.APICodeKey) != "404" {
		t.Errorf("get Secret must be a cache read answering 404; children %v", names(children))
	}
	create := byName["create Secret"]
	if attr(create, semconv.APISourceKey) != semconv.APISourceAPIServerValue || attr(create, semconv.APICodeKey) != "200" {
		t.Errorf("create Secret must go to the API server, got %v", create.Attributes())
	}
	wire := childrenOf(spans.Ended(), create)
	if len(wire) != 1 || wire[0].Name() != "POST" {
		t.Fatalf("create Secret must have one POST wire span, got %v", names(wire))
	}
	if !hasEvent(root, semconv.EventSpanName, "Mirrored") {
		t.Errorf("the Mirrored Event must be a span event of the reconcile, events %v", root.Events())
	}
	if attr(failed, semconv.ReconcileResultKey) != "terminal_error" || failed.Status().Description == "" || !hasEvent(failed, semconv.EventSpanName, "MirrorFailed") {
		t.Errorf("failed reconcile: result %q status %v events %v", attr(failed, semconv.ReconcileResultKey), failed.Status(), failed.Events())
	}
	if w := attr(root, semconv.QueueWaitKey); w == "" {
		t.Errorf("the reconcile span must carry the queue wait")
	}

	// The API server's own span for the POST joins the reconcile's trace as the wire span's child.
	traceID := root.SpanContext().TraceID().String()
	got, err := apiserverSpans.WaitFor(wctx, func(ss []harness.SinkSpan) bool {
		for _, s := range ss {
			if s.TraceID() == traceID && s.ParentSpanID() == wire[0].SpanContext().SpanID().String() {
				return true
			}
		}
		return false
	})
	if err != nil {
		var seen []string
		for _, s := range got {
			seen = append(seen, s.Service+":"+s.Span.Name+":"+s.TraceID())
		}
		t.Fatalf("no kube-apiserver span in trace %s under the POST span: %v; received %v", traceID, err, seen)
	}
	for _, s := range got {
		if s.TraceID() == traceID && s.ParentSpanID() == wire[0].SpanContext().SpanID().String() {
			t.Logf("kube-apiserver span %q (service %s) joined the reconcile trace %s", s.Span.Name, s.Service, traceID)
			break
		}
	}

	// The calls that escape the cached client: each has its logical span with a wire span under
	// it; the stale update's 409 makes the reconcile a conflict, not an error.
	var escaped sdktrace.ReadOnlySpan
	waitFor(t, wctx, "a reconcile span of escape-config with result conflict", func() (bool, error) {
		for _, s := range spans.Ended() {
			if attr(s, semconv.ObjectNameKey) == "escape-config" && attr(s, semconv.ReconcileResultKey) == semconv.ReconcileResultConflictValue {
				escaped = s
				return true, nil
			}
		}
		return false, nil
	})
	if escaped.Status().Code == codes.Error {
		t.Errorf("a conflict must not set the reconcile span's error status: %v", escaped.Status())
	}
	var escapes []string
	for _, c := range childrenOf(spans.Ended(), escaped) {
		var wires []string
		for _, w := range childrenOf(spans.Ended(), c) {
			wires = append(wires, fmt.Sprintf("%s(%v)", w.Name(), w.SpanKind()))
		}
		escapes = append(escapes, fmt.Sprintf("%s[%v %s %s %s %s]%v", c.Name(), c.SpanKind(), attr(c, semconv.APISourceKey), attr(c, semconv.APICodeKey), attr(c, semconv.ObjectNameKey), attr(c, semconv.APIKindKey), wires))
	}
	want := []string{
		"get ConfigMap (cache)[internal    ][]", // a successful cache read: renamed, no attributes
		"get ConfigMap[internal api_server 200 escape-config ConfigMap][GET(client)]",
		"apply ConfigMap[internal api_server 200 escape-config-applied ConfigMap][PATCH(client)]",
		"update ConfigMap[internal api_server 409 escape-config ConfigMap][PUT(client)]",
	}
	if strings.Join(escapes, "\n") != strings.Join(want, "\n") {
		t.Errorf("children of the escaping reconcile:\n%s\nwant\n%s", strings.Join(escapes, "\n"), strings.Join(want, "\n"))
	}

	// The panicking reconcile: recorded as a panic and re-raised, so controller-runtime recovered
	// it (the manager is still running) and counted it itself.
	waitFor(t, wctx, "a reconcile span with result panic", func() (bool, error) {
		for _, s := range spans.Ended() {
			if attr(s, semconv.ObjectNameKey) == "buggy-config" && attr(s, semconv.ReconcileResultKey) == "panic" {
				return true, nil
			}
		}
		return false, nil
	})

	// Our reconcile count equals controller-runtime's own over the same run, and so do panics:
	// the decorator re-raises, controller-runtime counts each panic once.
	stop()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	ours := int64(0)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == semconv.ReconcilesName {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					if v, _ := dp.Attributes.Value(semconv.ControllerNameKey); v.AsString() == controllerName {
						ours += dp.Value
					}
				}
			}
		}
	}
	theirs := controllerRuntimeCounter(t, "controller_runtime_reconcile_total", controllerName)
	ourPanics := int64(0)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == semconv.ReconcilesName {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					if v, _ := dp.Attributes.Value(semconv.ReconcileResultKey); v.AsString() == "panic" {
						ourPanics += dp.Value
					}
				}
			}
		}
	}
	if theirPanics := controllerRuntimeCounter(t, "controller_runtime_reconcile_panics_total", controllerName); ourPanics == 0 || float64(ourPanics) != theirPanics {
		t.Errorf("panics: watchtower %d, controller_runtime_reconcile_panics_total %v: want equal and non-zero", ourPanics, theirPanics)
	}
	if ours == 0 || float64(ours) != theirs {
		t.Fatalf("watchtower.reconciles = %d, controller_runtime_reconcile_total = %v: they must be equal and non-zero", ours, theirs)
	}
	t.Logf("reconciles: watchtower %d = controller-runtime %v", ours, theirs)
}

func controllerRuntimeCounter(t *testing.T, name, controller string) float64 {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == controller {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

func childrenOf(all []sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range all {
		if s.Parent().SpanID() == parent.SpanContext().SpanID() && s.SpanContext().TraceID() == parent.SpanContext().TraceID() {
			out = append(out, s)
		}
	}
	return out
}

func hasChild(all []sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan, name string) bool {
	for _, c := range childrenOf(all, parent) {
		if c.Name() == name {
			return true
		}
	}
	return false
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

func hasEvent(s sdktrace.ReadOnlySpan, name, reason string) bool {
	for _, e := range s.Events() {
		if e.Name != name {
			continue
		}
		for _, kv := range e.Attributes {
			if kv.Key == semconv.EventReasonKey && strings.EqualFold(kv.Value.AsString(), reason) {
				return true
			}
		}
	}
	return false
}
