package controller

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
)

func workload(name string, t demov1alpha1.WorkloadType, mutate ...func(*demov1alpha1.WorkloadSpec)) *demov1alpha1.Workload {
	w := &demov1alpha1.Workload{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       demov1alpha1.WorkloadSpec{Type: t, Replicas: ptr.To[int32](1)},
	}
	for _, m := range mutate {
		m(&w.Spec)
	}
	return w
}

func deploymentFor(r *WorkloadReconciler, w *demov1alpha1.Workload) (*appsv1.Deployment, corev1.Container) {
	dep := &appsv1.Deployment{}
	r.mutateDeployment(w, dep)
	return dep, dep.Spec.Template.Spec.Containers[0]
}

func q(s string) resource.Quantity { return resource.MustParse(s) }

func TestImages(t *testing.T) {
	for _, tc := range []struct {
		r    WorkloadReconciler
		typ  demov1alpha1.WorkloadType
		want string
	}{
		{WorkloadReconciler{}, demov1alpha1.Nginx, "gowatchtower/nginx:0.1.0"},
		{WorkloadReconciler{}, demov1alpha1.StressCPU, "gowatchtower/stress-cpu:0.1.0"},
		{WorkloadReconciler{}, demov1alpha1.MemoryLoad, "gowatchtower/memory-load:0.1.0"},
		{WorkloadReconciler{ImagePrefix: "registry.example.com/demo/", ImageTag: "dev"}, demov1alpha1.MemoryLoad, "registry.example.com/demo/memory-load:dev"},
	} {
		if _, c := deploymentFor(&tc.r, workload("w", tc.typ)); c.Image != tc.want {
			t.Errorf("%+v, %s: image %q, want %q", tc.r, tc.typ, c.Image, tc.want)
		}
	}
}

// TestContainerIsRestricted: every workload container meets the "restricted" Pod Security
// Standard, runs as the images' non-root user on a read-only root file system, and has limits.
func TestContainerIsRestricted(t *testing.T) {
	r := &WorkloadReconciler{}
	for _, typ := range []demov1alpha1.WorkloadType{demov1alpha1.StressCPU, demov1alpha1.MemoryLoad, demov1alpha1.Nginx} {
		dep, c := deploymentFor(r, workload("w", typ))
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Fatalf("%s: no securityContext", typ)
		case !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.RunAsUser, 0) != 65532:
			t.Errorf("%s: runAsNonRoot %v runAsUser %v, want true and 65532", typ, sc.RunAsNonRoot, sc.RunAsUser)
		case !ptr.Deref(sc.ReadOnlyRootFilesystem, false):
			t.Errorf("%s: the root file system is writable", typ)
		case ptr.Deref(sc.AllowPrivilegeEscalation, true):
			t.Errorf("%s: allowPrivilegeEscalation is not false", typ)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s: capabilities %+v, want drop ALL", typ, sc.Capabilities)
		case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", typ, sc.SeccompProfile)
		}
		if c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: imagePullPolicy %s", typ, c.ImagePullPolicy)
		}
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Limits[name]; !ok {
				t.Errorf("%s: no %s limit", typ, name)
			}
			if _, ok := c.Resources.Requests[name]; !ok {
				t.Errorf("%s: no %s request", typ, name)
			}
		}
		if ptr.Deref(dep.Spec.Template.Spec.AutomountServiceAccountToken, true) {
			t.Errorf("%s: the pods get a service account token they never use", typ)
		}
	}
}

func TestNginxListensOn8080WithAWritableTmp(t *testing.T) {
	dep, c := deploymentFor(&WorkloadReconciler{}, workload("web", demov1alpha1.Nginx))
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("ports %+v, want 8080", c.Ports)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("readinessProbe %+v, want GET /healthz", c.ReadinessProbe)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/tmp" {
		t.Fatalf("volumeMounts %+v, want /tmp", c.VolumeMounts)
	}
	vols := dep.Spec.Template.Spec.Volumes
	if len(vols) != 1 || vols[0].Name != c.VolumeMounts[0].Name || vols[0].EmptyDir == nil {
		t.Errorf("volumes %+v, want an emptyDir for /tmp", vols)
	}
	if c.Args != nil {
		t.Errorf("nginx takes no arguments, got %q", c.Args)
	}
	// The other types write nothing.
	if dep, c := deploymentFor(&WorkloadReconciler{}, workload("w", demov1alpha1.StressCPU)); len(c.VolumeMounts)+len(dep.Spec.Template.Spec.Volumes) > 0 {
		t.Errorf("stress-cpu mounts %+v", c.VolumeMounts)
	}
}

func TestArgsAndDefaultResources(t *testing.T) {
	load := func(s string) func(*demov1alpha1.WorkloadSpec) {
		return func(sp *demov1alpha1.WorkloadSpec) { sp.Load = ptr.To(q(s)) }
	}
	for _, tc := range []struct {
		w                   *demov1alpha1.Workload
		args                []string
		cpuLimit, memLimit  string
		cpuRequest, memReqs string
	}{
		{workload("a", demov1alpha1.StressCPU), []string{"-cpus=0.1"}, "200m", "32Mi", "10m", "32Mi"},
		{workload("b", demov1alpha1.StressCPU, load("1500m")), []string{"-cpus=1.5"}, "200m", "32Mi", "10m", "32Mi"},
		{workload("c", demov1alpha1.StressCPU, load("2")), []string{"-cpus=2"}, "200m", "32Mi", "10m", "32Mi"},
		{workload("d", demov1alpha1.MemoryLoad), []string{"-bytes=32Mi"}, "100m", "64Mi", "10m", "64Mi"},
		{workload("e", demov1alpha1.MemoryLoad, load("96Mi")), []string{"-bytes=96Mi"}, "100m", "128Mi", "10m", "128Mi"},
		{workload("f", demov1alpha1.MemoryLoad, load("100M")), []string{"-bytes=100000000"}, "100m", "133554432", "10m", "133554432"},
		{workload("g", demov1alpha1.Nginx), nil, "100m", "64Mi", "10m", "32Mi"},
	} {
		_, c := deploymentFor(&WorkloadReconciler{}, tc.w)
		if !slices.Equal(c.Args, tc.args) {
			t.Errorf("%s %s: args %q, want %q", tc.w.Spec.Type, tc.w.Name, c.Args, tc.args)
		}
		for _, x := range []struct {
			list corev1.ResourceList
			name corev1.ResourceName
			want string
		}{
			{c.Resources.Limits, corev1.ResourceCPU, tc.cpuLimit}, {c.Resources.Limits, corev1.ResourceMemory, tc.memLimit},
			{c.Resources.Requests, corev1.ResourceCPU, tc.cpuRequest}, {c.Resources.Requests, corev1.ResourceMemory, tc.memReqs},
		} {
			if got := x.list[x.name]; got.Cmp(q(x.want)) != 0 {
				t.Errorf("%s %s: %s %s, want %s", tc.w.Spec.Type, tc.w.Name, x.name, got.String(), x.want)
			}
		}
	}
}

// TestResourcesTheSpecSetsAreKept: a resource that spec.resources mentions at all is left as
// written (a default limit under the user's request would make the Deployment invalid); the
// other resource still gets its default.
func TestResourcesTheSpecSetsAreKept(t *testing.T) {
	w := workload("w", demov1alpha1.StressCPU, func(s *demov1alpha1.WorkloadSpec) {
		s.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: q("300Mi")}
	})
	_, c := deploymentFor(&WorkloadReconciler{}, w)
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		t.Errorf("a memory limit was added under the user's request: %+v", c.Resources)
	}
	if got := c.Resources.Requests[corev1.ResourceMemory]; got.Cmp(q("300Mi")) != 0 {
		t.Errorf("memory request %s, want the spec's 300Mi", got.String())
	}
	if got := c.Resources.Limits[corev1.ResourceCPU]; got.Cmp(q("200m")) != 0 {
		t.Errorf("cpu limit %s, want the default 200m", got.String())
	}
	if len(w.Spec.Resources.Limits) != 0 {
		t.Errorf("the Workload's own spec was modified: %+v", w.Spec.Resources)
	}
}

// TestMutateIsStable: computing the Deployment again over the stored one changes nothing, so an
// unchanged Workload does not update its Deployment on every reconcile.
func TestMutateIsStable(t *testing.T) {
	r := &WorkloadReconciler{}
	for _, typ := range []demov1alpha1.WorkloadType{demov1alpha1.StressCPU, demov1alpha1.MemoryLoad, demov1alpha1.Nginx} {
		w := workload("w", typ)
		dep, _ := deploymentFor(r, w)
		again := dep.DeepCopy()
		r.mutateDeployment(w, again)
		if !equality.Semantic.DeepEqual(dep, again) {
			t.Errorf("%s: the second mutation changed the Deployment", typ)
		}
	}
}

// TestSamples: every sample is one strictly valid Workload (the demo applies them one per file),
// memory-over-limit really exceeds its container's memory limit, and no other sample does.
func TestSamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var w demov1alpha1.Workload
		if err := yaml.UnmarshalStrict(b, &w); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if w.Kind != "Workload" || w.APIVersion != demov1alpha1.GroupVersion.String() || w.Name+".yaml" != filepath.Base(f) {
			t.Errorf("%s: %s %s named %q; want a Workload named after its file", f, w.APIVersion, w.Kind, w.Name)
		}
		seen[w.Name] = true
		if w.Spec.Load != nil && w.Spec.Type == demov1alpha1.Nginx {
			t.Errorf("%s: nginx takes no load", f)
		}
		_, c := deploymentFor(&WorkloadReconciler{}, &w)
		if w.Spec.Type != demov1alpha1.MemoryLoad {
			continue
		}
		bytes := q(strings.TrimPrefix(c.Args[0], "-bytes="))
		limit := c.Resources.Limits[corev1.ResourceMemory]
		over := bytes.Cmp(limit) > 0
		if want := w.Name == "memory-over-limit"; over != want {
			t.Errorf("%s: holds %s under a %s memory limit: over the limit is %v, want %v", f, bytes.String(), limit.String(), over, want)
		}
	}
	for _, name := range []string{"broken", "cpu-burner", "fast-nginx", "flaky", "slow-memory", "memory-over-limit"} {
		if !seen[name] {
			t.Errorf("sample %s is missing", name)
		}
	}
}

// TestReconcileCreatesDeploymentAndService runs Reconcile against controller-runtime's fake
// client: the Deployment and the nginx Service are created with the Workload as owner, and a
// second reconcile of the unchanged Workload updates neither.
func TestReconcileCreatesDeploymentAndService(t *testing.T) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := demov1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	w := workload("web", demov1alpha1.Nginx)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(w).WithStatusSubresource(w).Build()
	rec := events.NewFakeRecorder(16)
	r := &WorkloadReconciler{Client: c, Scheme: s, Recorder: rec, ImagePrefix: "example.com/", ImageTag: "t"}
	ctx := context.Background()
	req := ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "default", Name: "web"}}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	var dep appsv1.Deployment
	if err := c.Get(ctx, req.NamespacedName, &dep); err != nil {
		t.Fatal(err)
	}
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != "example.com/nginx:t" {
		t.Errorf("image %q", img)
	}
	if len(dep.OwnerReferences) != 1 || dep.OwnerReferences[0].Name != "web" {
		t.Errorf("owner references %+v", dep.OwnerReferences)
	}
	var svc corev1.Service
	if err := c.Get(ctx, req.NamespacedName, &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || svc.Spec.Ports[0].TargetPort.IntValue() != 8080 {
		t.Errorf("service ports %+v, want 80 -> 8080", svc.Spec.Ports)
	}
	version := dep.ResourceVersion
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, req.NamespacedName, &dep); err != nil {
		t.Fatal(err)
	}
	if dep.ResourceVersion != version {
		t.Errorf("the second reconcile of an unchanged Workload updated its Deployment")
	}
	close(rec.Events)
	var reasons []string
	for e := range rec.Events {
		reasons = append(reasons, strings.Fields(e)[1])
	}
	if !slices.Equal(reasons, []string{"DeploymentCreated", "ServiceCreated"}) {
		t.Errorf("events %q, want DeploymentCreated and ServiceCreated", reasons)
	}
}
