package controller

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
)

// RolloutReconciler is the example's second controller: it consumes what the Workload
// controller writes. It reconciles the Deployments of Workloads and logs how far each rollout
// is, reading only. Its reconciles show causality across controllers: each links to the
// Workload reconcile that wrote the Deployment (the tracing.k8s.io/traceparent annotation the
// write carried), which links in turn to what changed the Workload (docs/causality.md).
type RolloutReconciler struct {
	client.Client

	// Instrumentation holds the otelctrl options of the controller.
	Instrumentation []otelctrl.Option
}

// Reconcile reads the Deployment and its Workload, and logs the rollout.
func (r *RolloutReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var dep appsv1.Deployment
	if err := r.Get(ctx, req.NamespacedName, &dep); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	owner := metav1.GetControllerOf(&dep)
	var w demov1alpha1.Workload
	if err := r.Get(ctx, client.ObjectKey{Namespace: dep.Namespace, Name: owner.Name}, &w); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	log.FromContext(ctx).V(1).Info("rollout", "workload", w.Name, "ready", dep.Status.ReadyReplicas, "want", want,
		"complete", dep.Status.ObservedGeneration == dep.Generation && dep.Status.UpdatedReplicas == want && dep.Status.ReadyReplicas == want)
	return ctrl.Result{}, nil
}

// ownedByWorkload passes the Deployments whose controller owner is a Workload.
func ownedByWorkload(o client.Object) bool {
	ref := metav1.GetControllerOf(o)
	return ref != nil && ref.Kind == "Workload" && ref.APIVersion == demov1alpha1.GroupVersion.String()
}

// SetupWithManager sets up the controller with the Manager.
func (r *RolloutReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return otelctrl.NewControllerManagedBy(mgr, r.Instrumentation...).
		For(&appsv1.Deployment{}, builder.WithPredicates(predicate.NewPredicateFuncs(ownedByWorkload))).
		Named("workload-rollout").
		Complete(r)
}
