package otelctrl_test

import (
	"time"

	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
)

// The whole operator: what a kubebuilder main.go and SetupWithManager change. See
// docs/instrumenting-an-operator.md for the before/after diff.
func ExampleNewManager() {
	mgr, err := otelctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{ /* unchanged */ })
	if err != nil {
		panic(err)
	}
	// In SetupWithManager: ctrl.NewControllerManagedBy(mgr) becomes otelctrl.NewControllerManagedBy(mgr).
	err = otelctrl.NewControllerManagedBy(mgr).
		For(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
			return reconcile.Result{}, nil
		}))
	if err != nil {
		panic(err)
	}
	_ = mgr.Start(ctrl.SetupSignalHandler())
}

// ingressRequest is a request other than reconcile.Request, as in controller-runtime's
// examples/typed: the reconciler is told which Ingress and which of its rules changed.
type ingressRequest struct{ namespace, name, host string }

// String names the request on the reconcile span (watchtower.object.name).
func (r ingressRequest) String() string { return r.namespace + "/" + r.name + " host " + r.host }

// A typed controller: builder.TypedControllerManagedBy[T](mgr) becomes
// otelctrl.NewTypedControllerManagedBy[T](mgr); nothing else changes.
func ExampleNewTypedControllerManagedBy() {
	mgr, err := otelctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{})
	if err != nil {
		panic(err)
	}
	err = otelctrl.NewTypedControllerManagedBy[ingressRequest](mgr).
		Named("ingress-hosts").
		Watches(&networkingv1.Ingress{}, handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []ingressRequest {
			var out []ingressRequest
			for _, rule := range o.(*networkingv1.Ingress).Spec.Rules {
				out = append(out, ingressRequest{o.GetNamespace(), o.GetName(), rule.Host})
			}
			return out
		})).
		Complete(reconcile.TypedFunc[ingressRequest](func(context.Context, ingressRequest) (reconcile.Result, error) {
			return reconcile.Result{}, nil
		}))
	if err != nil {
		panic(err)
	}
	_ = mgr.Start(ctrl.SetupSignalHandler())
}

// Any client-go client outside the manager — here a clientset — gets a CLIENT span per request
// and carries the trace context to the API server.
func ExampleWrapConfig() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	apiServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("traceparent sent:", r.Header.Get("traceparent") != "")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"app","namespace":"default"}}`)
	}))
	defer apiServer.Close()

	cfg := otelctrl.WrapConfig(&rest.Config{Host: apiServer.URL},
		otelctrl.WithTracerProvider(tp), otelctrl.WithPropagator(propagation.TraceContext{}))
	cs := kubernetes.NewForConfigOrDie(cfg)

	ctx, span := tp.Tracer("my-runnable").Start(context.Background(), "rotate keys")
	_, _ = cs.CoreV1().ConfigMaps("default").Get(ctx, "app", metav1.GetOptions{})
	span.End()

	for _, s := range spans.Ended() {
		fmt.Println(s.Name(), s.SpanKind())
	}
	// Output:
	// traceparent sent: true
	// GET client
	// rotate keys internal
}

// Events emitted through a recorder bound to the reconcile's context land on that reconcile's
// span, whatever object they are about. Outside a reconcile they land on the caller's own span.
func ExampleEventRecorderFor() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	recorder := events.NewFakeRecorder(1) // mgr.GetEventRecorder("rotator") in an operator

	ctx, span := tp.Tracer("my-runnable").Start(context.Background(), "rotate keys")
	otelctrl.EventRecorderFor(ctx, recorder).Eventf(&corev1.Secret{}, nil, corev1.EventTypeNormal, "Rotated", "Rotate", "key %d", 2)
	span.End()

	fmt.Println(<-recorder.Events)
	e := spans.Ended()[0].Events()[0]
	fmt.Println(e.Name, e.Attributes[1].Value.AsString())
	// Output:
	// Normal Rotated key 2
	// k8s.event Rotated
}

// Requests made outside any reconcile and outside any span of the caller's (an informer's
// list, a cache warm-up) carry no trace by default; WithAPISpansOutsideReconcile makes each a
// root span of its own, under the instrumentation scope ScopeName.
func ExampleWithAPISpansOutsideReconcile() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	apiServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"app","namespace":"default"}}`)
	}))
	defer apiServer.Close()

	for _, opts := range [][]otelctrl.Option{
		{otelctrl.WithTracerProvider(tp)},
		{otelctrl.WithTracerProvider(tp), otelctrl.WithAPISpansOutsideReconcile()},
	} {
		cs := kubernetes.NewForConfigOrDie(otelctrl.WrapConfig(&rest.Config{Host: apiServer.URL}, opts...))
		_, _ = cs.CoreV1().ConfigMaps("default").Get(context.Background(), "app", metav1.GetOptions{})
		fmt.Println("spans:", len(spans.Ended()))
	}
	s := spans.Ended()[0]
	fmt.Println(s.Name(), s.SpanKind(), "root:", !s.Parent().IsValid(), "scope:", s.InstrumentationScope().Name == otelctrl.ScopeName)
	// Output:
	// spans: 0
	// spans: 1
	// GET client root: true scope: true
}

// Providers other than the global ones, and no trace IDs added to the reconcile's logger (for
// an operator whose log pipeline adds them itself).
func ExampleNewManager_providers() {
	tp := sdktrace.NewTracerProvider()
	mp := sdkmetric.NewMeterProvider()
	mgr, err := otelctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{},
		otelctrl.WithTracerProvider(tp), otelctrl.WithMeterProvider(mp), otelctrl.WithoutLogCorrelation())
	if err != nil {
		panic(err)
	}
	_ = mgr.Start(ctrl.SetupSignalHandler())
}

// A controller whose objects legitimately reconcile often (a poller every 2 s) raises the
// hot-loop threshold, and one whose objects may fail for a while during rollouts waits longer
// before calling them stuck.
func ExampleWithHotLoopThreshold() {
	mgr, err := otelctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{})
	if err != nil {
		panic(err)
	}
	err = otelctrl.NewControllerManagedBy(mgr,
		otelctrl.WithHotLoopThreshold(60, time.Minute),
		otelctrl.WithStuckAfter(30*time.Minute)).
		For(&networkingv1.Ingress{}).
		Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
			return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
		}))
	if err != nil {
		panic(err)
	}
	_ = mgr.Start(ctrl.SetupSignalHandler())
}
