// Package otelctrl instruments operators built with controller-runtime with OpenTelemetry:
// a trace per reconcile with child spans for the API calls it made, reconcile, queue, API-call
// and event metrics, and trace IDs in the reconcile's logs — without touching the business
// logic and without forking or patching controller-runtime.
//
// The package is named otelctrl so that it sits beside controller-runtime's own
// `ctrl "sigs.k8s.io/controller-runtime"` import without a collision.
//
// # The common path
//
// A kubebuilder operator changes four lines in main.go and one per controller:
//
//	tel, err := sdk.Start(ctx)                       // OpenTelemetry for the process (package sdk)
//	mgr, err := otelctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{ /* unchanged */ })
//	runErr := mgr.Start(ctrl.SetupSignalHandler())
//	_ = tel.Shutdown(context.Background())           // bounded; not deferred, os.Exit skips defers
//
// and in each controller's SetupWithManager:
//
//	return otelctrl.NewControllerManagedBy(mgr). /* For, Owns, Named… unchanged */ Complete(r)
//
// NewManager wraps the rest.Config transport (W3C traceparent on every request to the API
// server, short spans for API requests, none for watches), the manager's client (a span per
// logical call, marked as served from the informer cache or from the API server) and its event
// recorders (each Kubernetes Event becomes a span event on the reconcile that emitted it, and a
// counter). NewControllerManagedBy is controller-runtime's builder with the reconciler wrapped
// in a root span per reconcile and the workqueue instrumented for queue wait and requeue counts.
//
// # Beyond the manager
//
// NewTypedControllerManagedBy does the same for a reconcile.TypedReconciler whose requests are not
// reconcile.Request. WrapConfig instruments a rest.Config used outside the manager.
// EventRecorderFor binds a recorder to a context, so an Event lands on exactly the span of that
// context. The manager's webhook server gets a SERVER span per admission request that continues
// the API server's trace (see docs/instrumenting-an-operator.md).
//
// All of them use the global OpenTelemetry providers unless given WithTracerProvider /
// WithMeterProvider, so they work with package sdk, with any other OpenTelemetry setup, and do
// nothing measurable when OpenTelemetry is not configured. The names of everything emitted are
// in package semconv and docs/semconv.md.
package otelctrl
