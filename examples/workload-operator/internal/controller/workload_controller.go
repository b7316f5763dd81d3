// Package controller holds the Workload controller of the example operator.
package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
)

// Finalizer makes deletion go through the controller, which removes what it created.
const Finalizer = "demo.gowatchtower.io/cleanup"

// ConditionReconciled reports whether the last reconcile of a Workload succeeded.
const ConditionReconciled = "Reconciled"

// maxDelay bounds spec.reconcileDelay: a demo knob must not wedge a worker.
const maxDelay = 10 * time.Second

// WorkloadReconciler runs each Workload as a Deployment (and a Service for nginx).
type WorkloadReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder recorder.EventRecorder
}

// +kubebuilder:rbac:groups=demo.gowatchtower.io,resources=workloads,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=demo.gowatchtower.io,resources=workloads/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=demo.gowatchtower.io,resources=workloads/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves the cluster towards the Workload's spec.
func (r *WorkloadReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	var w demov1alpha1.Workload
	if err := r.Get(ctx, req.NamespacedName, &w); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !w.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.cleanUp(ctx, &w)
	}
	if controllerutil.AddFinalizer(&w, Finalizer) {
		if err := r.Update(ctx, &w); err != nil {
			return ctrl.Result{}, err
		}
	}

	if w.Spec.ReconcileDelay != "" {
		d, err := time.ParseDuration(w.Spec.ReconcileDelay)
		if err != nil {
			return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("spec.reconcileDelay %q: %w", w.Spec.ReconcileDelay, err))
		}
		logger.Info("slowing down on purpose", "delay", d.String())
		select {
		case <-time.After(min(d, maxDelay)):
		case <-ctx.Done():
			return ctrl.Result{}, ctx.Err()
		}
	}

	if w.Spec.FailWith != "" {
		err := fmt.Errorf("workload %s asks to fail (spec.failWith=%s)", w.Name, w.Spec.FailWith)
		r.Recorder.Eventf(&w, nil, corev1.EventTypeWarning, "ReconcileFailed", "Reconcile", "%v", err)
		if statusErr := r.setReconciled(ctx, &w, metav1.ConditionFalse, "Failed", err.Error(), 0); statusErr != nil {
			return ctrl.Result{}, errors.Join(err, statusErr)
		}
		if w.Spec.FailWith == demov1alpha1.FailTerminal {
			return ctrl.Result{}, reconcile.TerminalError(err)
		}
		return ctrl.Result{}, err
	}

	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name}}
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, dep, func() error {
		mutateDeployment(&w, dep)
		return controllerutil.SetControllerReference(&w, dep, r.Scheme)
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	if op != controllerutil.OperationResultNone {
		reason := map[controllerutil.OperationResult]string{controllerutil.OperationResultCreated: "DeploymentCreated"}[op]
		if reason == "" {
			reason = "DeploymentUpdated"
		}
		r.Recorder.Eventf(&w, dep, corev1.EventTypeNormal, reason, "Reconcile", "Deployment %s %s", dep.Name, op)
	}

	if w.Spec.Type == demov1alpha1.Nginx {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name}}
		op, err := controllerutil.CreateOrUpdate(ctx, r.Client, svc, func() error {
			svc.Spec.Selector = map[string]string{"app.kubernetes.io/instance": w.Name}
			svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80)}}
			return controllerutil.SetControllerReference(&w, svc, r.Scheme)
		})
		if err != nil {
			return ctrl.Result{}, err
		}
		if op == controllerutil.OperationResultCreated {
			r.Recorder.Eventf(&w, svc, corev1.EventTypeNormal, "ServiceCreated", "Reconcile", "Service %s created", svc.Name)
		}
	}

	return ctrl.Result{}, r.setReconciled(ctx, &w, metav1.ConditionTrue, "Reconciled", "Deployment is up to date", dep.Status.ReadyReplicas)
}

// cleanUp deletes what the Workload created and releases the finalizer. Owner references would
// let the garbage collector do it in a cluster; the finalizer makes the deletion explicit,
// observable (it is traced like any reconcile) and independent of the garbage collector.
func (r *WorkloadReconciler) cleanUp(ctx context.Context, w *demov1alpha1.Workload) error {
	if !controllerutil.ContainsFinalizer(w, Finalizer) {
		return nil
	}
	for _, obj := range []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name}},
	} {
		if err := r.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	r.Recorder.Eventf(w, nil, corev1.EventTypeNormal, "CleanedUp", "Delete", "removed the Deployment and Service of %s", w.Name)
	controllerutil.RemoveFinalizer(w, Finalizer)
	return r.Update(ctx, w)
}

func (r *WorkloadReconciler) setReconciled(ctx context.Context, w *demov1alpha1.Workload, status metav1.ConditionStatus, reason, msg string, ready int32) error {
	changed := meta.SetStatusCondition(&w.Status.Conditions, metav1.Condition{
		Type: ConditionReconciled, Status: status, Reason: reason, Message: msg, ObservedGeneration: w.Generation,
	})
	if !changed && w.Status.ObservedGeneration == w.Generation && w.Status.ReadyReplicas == ready {
		return nil
	}
	w.Status.ObservedGeneration = w.Generation
	w.Status.ReadyReplicas = ready
	return r.Status().Update(ctx, w)
}

// images per workload type. No image is pulled in the local demo (there is no kubelet); in a
// cluster these run as written.
var images = map[demov1alpha1.WorkloadType]struct {
	image string
	args  []string
}{
	demov1alpha1.StressCPU:  {"docker.io/polinux/stress:1.0.4", []string{"stress", "--cpu", "1"}},
	demov1alpha1.MemoryLoad: {"docker.io/polinux/stress:1.0.4", []string{"stress", "--vm", "1", "--vm-bytes", "128M"}},
	demov1alpha1.Nginx:      {"docker.io/library/nginx:1.27", nil},
}

func mutateDeployment(w *demov1alpha1.Workload, dep *appsv1.Deployment) {
	labels := map[string]string{"app.kubernetes.io/instance": w.Name, "app.kubernetes.io/name": string(w.Spec.Type), "app.kubernetes.io/managed-by": "workload-operator"}
	img := images[w.Spec.Type]
	dep.Labels = labels
	dep.Spec.Replicas = w.Spec.Replicas
	dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/instance": w.Name}}
	dep.Spec.Template.Labels = labels
	c := corev1.Container{Name: "workload", Image: img.image, Args: img.args, Resources: w.Spec.Resources}
	if w.Spec.Type == demov1alpha1.Nginx {
		c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}
	}
	dep.Spec.Template.Spec.Containers = []corev1.Container{c}
}

// SetupWithManager sets up the controller with the Manager.
func (r *WorkloadReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return otelctrl.NewControllerManagedBy(mgr).
		For(&demov1alpha1.Workload{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Named("workload").
		Complete(r)
}
