// Package controller holds the Workload controller of the example operator.
package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
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

// Defaults of the workload images: a Workload of type T runs DefaultImagePrefix + T + ":" +
// DefaultImageTag, e.g. gowatchtower/nginx:0.1.0. The names are a contract with `make images`,
// which builds them; the tag follows the appVersion of the otelcol-watchtower chart.
const (
	DefaultImagePrefix = "gowatchtower/"
	DefaultImageTag    = "0.1.0"
)

// nginxPort is where the nginx image listens: it runs as a non-root user, which cannot bind 80.
const nginxPort = 8080

// workloadUID is the non-root user every workload container runs as (distroless' "nonroot").
const workloadUID = 65532

// WorkloadReconciler runs each Workload as a Deployment (and a Service for nginx).
type WorkloadReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder recorder.EventRecorder

	// ImagePrefix and ImageTag name the workload images (see DefaultImagePrefix); empty means
	// the default.
	ImagePrefix, ImageTag string

	// Instrumentation holds the otelctrl options of the controller (thresholds of its hot-loop
	// and stuck detection).
	Instrumentation []otelctrl.Option
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
		r.mutateDeployment(&w, dep)
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
			svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(nginxPort)}}
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
	if w.Spec.HotLoop {
		// The demo's hot loop: a new timestamp on every reconcile is a write on every reconcile.
		w.Status.LastReconcileTime = ptr.To(metav1.NewMicroTime(time.Now()))
		changed = true
	}
	if !changed && w.Status.ObservedGeneration == w.Generation && w.Status.ReadyReplicas == ready {
		return nil
	}
	w.Status.ObservedGeneration = w.Generation
	w.Status.ReadyReplicas = ready
	return r.Status().Update(ctx, w)
}

// Default loads, for a Workload without spec.load.
var (
	defaultCPULoad    = resource.MustParse("100m")
	defaultMemoryLoad = resource.MustParse("32Mi")
)

// memoryHeadroom is what a memory-load container needs beside its load (the Go runtime, the
// binary): the default memory limit is the load plus this.
var memoryHeadroom = resource.MustParse("32Mi")

// image is the workload image of a type, e.g. gowatchtower/stress-cpu:0.1.0.
func (r *WorkloadReconciler) image(t demov1alpha1.WorkloadType) string {
	prefix, tag := r.ImagePrefix, r.ImageTag
	if prefix == "" {
		prefix = DefaultImagePrefix
	}
	if tag == "" {
		tag = DefaultImageTag
	}
	return prefix + string(t) + ":" + tag
}

// load is the Workload's spec.load, or its type's default.
func load(w *demov1alpha1.Workload) resource.Quantity {
	if w.Spec.Load != nil {
		return *w.Spec.Load
	}
	if w.Spec.Type == demov1alpha1.MemoryLoad {
		return defaultMemoryLoad
	}
	return defaultCPULoad
}

// args are the workload program's arguments. The images' entrypoint is the program itself.
func args(w *demov1alpha1.Workload) []string {
	l := load(w)
	switch w.Spec.Type {
	case demov1alpha1.StressCPU:
		return []string{"-cpus=" + strconv.FormatFloat(float64(l.MilliValue())/1000, 'f', -1, 64)}
	case demov1alpha1.MemoryLoad:
		// Whole bytes, written as a binary quantity when exact ("96Mi"): what memory-load parses.
		return []string{"-bytes=" + resource.NewQuantity(l.Value(), resource.BinarySI).String()}
	}
	return nil
}

// resources are spec.resources, with the type's default request and limit for each of cpu and
// memory that spec.resources leaves out entirely (see WorkloadSpec.Resources). A resource the
// spec mentions at all is left as the spec says: adding a default limit below a request the
// user set would make the Deployment invalid.
func resources(w *demov1alpha1.Workload) corev1.ResourceRequirements {
	type pair struct{ request, limit resource.Quantity }
	defaults := map[corev1.ResourceName]pair{}
	switch w.Spec.Type {
	case demov1alpha1.StressCPU:
		defaults[corev1.ResourceCPU] = pair{resource.MustParse("10m"), resource.MustParse("200m")}
		defaults[corev1.ResourceMemory] = pair{resource.MustParse("32Mi"), resource.MustParse("32Mi")}
	case demov1alpha1.MemoryLoad:
		mem := load(w)
		mem.Add(memoryHeadroom)
		mem = *resource.NewQuantity(mem.Value(), resource.BinarySI)
		defaults[corev1.ResourceCPU] = pair{resource.MustParse("10m"), resource.MustParse("100m")}
		defaults[corev1.ResourceMemory] = pair{mem, mem}
	case demov1alpha1.Nginx:
		defaults[corev1.ResourceCPU] = pair{resource.MustParse("10m"), resource.MustParse("100m")}
		defaults[corev1.ResourceMemory] = pair{resource.MustParse("32Mi"), resource.MustParse("64Mi")}
	}
	res := *w.Spec.Resources.DeepCopy()
	for name, d := range defaults {
		_, requested := res.Requests[name]
		_, limited := res.Limits[name]
		if requested || limited {
			continue
		}
		if res.Requests == nil {
			res.Requests = corev1.ResourceList{}
		}
		if res.Limits == nil {
			res.Limits = corev1.ResourceList{}
		}
		res.Requests[name], res.Limits[name] = d.request, d.limit
	}
	return res
}

// restricted is the container security context of every workload: what the "restricted" Pod
// Security Standard asks for, with the user the images are built for and a read-only root
// file system (nginx gets a writable /tmp, see mutateDeployment).
func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                ptr.To[int64](workloadUID),
		RunAsGroup:               ptr.To[int64](workloadUID),
		ReadOnlyRootFilesystem:   ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// nginxTmp is nginx's only writable directory (its pid file and temporary files, see the
// image's nginx.conf), an emptyDir since the root file system is read-only.
const nginxTmp = "tmp"

func (r *WorkloadReconciler) mutateDeployment(w *demov1alpha1.Workload, dep *appsv1.Deployment) {
	labels := map[string]string{"app.kubernetes.io/instance": w.Name, "app.kubernetes.io/name": string(w.Spec.Type), "app.kubernetes.io/managed-by": "workload-operator"}
	dep.Labels = labels
	dep.Spec.Replicas = w.Spec.Replicas
	dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/instance": w.Name}}
	dep.Spec.Template.Labels = labels
	// Fields the API server would default are set to those defaults, so that the Deployment we
	// compute equals the stored one and an unchanged Workload does not update it every reconcile.
	c := corev1.Container{
		Name:                     "workload",
		Image:                    r.image(w.Spec.Type),
		Args:                     args(w),
		Resources:                resources(w),
		ImagePullPolicy:          corev1.PullIfNotPresent, // the images are imported into the node, never pulled
		SecurityContext:          restricted(),
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
	var volumes []corev1.Volume
	if w.Spec.Type == demov1alpha1.Nginx {
		c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: nginxPort, Protocol: corev1.ProtocolTCP}}
		c.ReadinessProbe = &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds: 5, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
		}
		c.VolumeMounts = []corev1.VolumeMount{{Name: nginxTmp, MountPath: "/tmp"}}
		volumes = []corev1.Volume{{Name: nginxTmp, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("16Mi"))},
		}}}
	}
	dep.Spec.Template.Spec.Containers = []corev1.Container{c}
	dep.Spec.Template.Spec.Volumes = volumes
	// The workloads never call the API server: no token in their pods.
	dep.Spec.Template.Spec.AutomountServiceAccountToken = ptr.To(false)
}

// SetupWithManager sets up the controller with the Manager.
func (r *WorkloadReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return otelctrl.NewControllerManagedBy(mgr, r.Instrumentation...).
		For(&demov1alpha1.Workload{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Named("workload").
		Complete(r)
}
