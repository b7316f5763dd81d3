package otelctrl_test

import (
	"context"
	"errors"
	"fmt"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/semconv"
)

// The decorator on its own: every reconcile becomes a root span, and the calls made through a
// wrapped client become its children.
func ExampleNewReconciler() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))

	c := otelctrl.WrapClient(fake.NewClientBuilder().Build(), otelctrl.WithTracerProvider(tp))
	r := otelctrl.NewReconciler("configmap", reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, req.NamespacedName, &cm); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
		return reconcile.Result{}, nil
	}), otelctrl.WithTracerProvider(tp), otelctrl.WithGroupKind("", "ConfigMap"))

	_, _ = r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "default", Name: "app"}})

	for _, s := range spans.Ended() {
		for _, kv := range s.Attributes() {
			if kv.Key == semconv.APICodeKey || kv.Key == semconv.ReconcileResultKey {
				fmt.Printf("%s: %s=%s\n", s.Name(), kv.Key, kv.Value.String())
			}
		}
	}
	// Output:
	// get ConfigMap: watchtower.api.code=404
	// reconcile configmap: watchtower.reconcile.result=success
}

// Errors and terminal errors are told apart, and recorded on the span.
func ExampleNewReconciler_errors() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	r := otelctrl.NewReconciler("widget", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		return reconcile.Result{}, reconcile.TerminalError(errors.New("spec.replicas must be positive"))
	}), otelctrl.WithTracerProvider(tp))

	_, err := r.Reconcile(context.Background(), reconcile.Request{})
	s := spans.Ended()[0]
	fmt.Println(err)
	fmt.Println(s.Status().Code, s.Events()[0].Name)
	// Output:
	// terminal error: spec.replicas must be positive
	// Error exception
}

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
		Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
			return reconcile.Result{}, nil
		}))
	if err != nil {
		panic(err)
	}
	_ = mgr.Start(ctrl.SetupSignalHandler())
}
