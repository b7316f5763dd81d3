package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/integration/harness"
)

const exampleDir = "examples/workload-operator"

// TestExampleManifestsAreCurrent fails when the kubebuilder markers of the example operator
// changed without `make generate`: the CRD, the RBAC role and the deepcopy code are regenerated
// with the pinned controller-gen and compared with the committed files.
func TestExampleManifestsAreCurrent(t *testing.T) {
	checkControllerGen(t, exampleDir, "workload-operator", "demo.gowatchtower.io_workloads.yaml")
}

// TestWatchtowerOperatorManifestsAreCurrent is the same check for the Watchtower operator.
func TestWatchtowerOperatorManifestsAreCurrent(t *testing.T) {
	checkControllerGen(t, operatorDir, "watchtower-operator", "observability.gowatchtower.io_watchtowers.yaml")
}

// checkControllerGen regenerates the deepcopy code, the CRD and the RBAC role of the operator in
// rel (a kubebuilder layout, relative to the repository) and compares them with the committed files.
func checkControllerGen(t *testing.T, rel, role, crd string) {
	tools := harness.MustTools(t)
	cg := tools.Path(t, "controller-gen", "CONTROLLER_TOOLS_VERSION", "controller-gen")
	dir := filepath.Join(tools.RepoRoot, rel)
	for args, committed := range map[string]string{
		"object paths=./api/... output:object:stdout":               "api/v1alpha1/zz_generated.deepcopy.go",
		"crd paths=./... output:crd:stdout":                         "config/crd/bases/" + crd,
		"rbac:roleName=" + role + " paths=./... output:rbac:stdout": "config/rbac/role.yaml",
	} {
		cmd := exec.Command(cg, strings.Fields(args)...)
		cmd.Dir = dir
		want, err := cmd.Output()
		if err != nil {
			t.Fatalf("controller-gen %s: %v", args, err)
		}
		got, err := os.ReadFile(filepath.Join(dir, committed))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s/%s is stale against the kubebuilder markers: run `make generate` and commit the result", rel, committed)
		}
	}
}

func exampleScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := demov1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func startKubeWithWorkloadCRD(t *testing.T, opts ...harness.KubeOption) (*harness.Kube, client.Client) {
	tools := harness.MustTools(t)
	kube := harness.StartKube(t, append(opts, harness.WithCRDs(filepath.Join(tools.RepoRoot, exampleDir, "config", "crd", "bases")))...)
	c, err := client.New(kube.Config, client.Options{Scheme: exampleScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	return kube, c
}

// TestWorkloadValidationRejectsBadSpecs: the API server itself rejects bad Workloads through
// the CRD's OpenAPI schema, with a message naming the field.
func TestWorkloadValidationRejectsBadSpecs(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	_, c := startKubeWithWorkloadCRD(t)
	ctx := ctxTimeout(t, time.Minute)
	for name, tc := range map[string]struct {
		spec demov1alpha1.WorkloadSpec
		want string
	}{
		"bad-type":     {demov1alpha1.WorkloadSpec{Type: "redis"}, `spec.type: Unsupported value: "redis"`},
		"bad-replicas": {demov1alpha1.WorkloadSpec{Type: demov1alpha1.Nginx, Replicas: ptr.To[int32](-1)}, "spec.replicas: Invalid value: -1"},
		"bad-delay":    {demov1alpha1.WorkloadSpec{Type: demov1alpha1.Nginx, ReconcileDelay: "soon"}, "spec.reconcileDelay: Invalid value"},
		"bad-failwith": {demov1alpha1.WorkloadSpec{Type: demov1alpha1.Nginx, FailWith: "sometimes"}, `spec.failWith: Unsupported value: "sometimes"`},
	} {
		err := c.Create(ctx, &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: tc.spec})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an Invalid error containing %q", name, err, tc.want)
		}
	}
	ok := &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "good"}, Spec: demov1alpha1.WorkloadSpec{Type: demov1alpha1.Nginx}}
	if err := c.Create(ctx, ok); err != nil {
		t.Fatalf("a valid Workload was rejected: %v", err)
	}
	if ok.Spec.Replicas == nil || *ok.Spec.Replicas != 1 {
		t.Errorf("spec.replicas should default to 1, got %v", ok.Spec.Replicas)
	}
}

// kubeconfigFor writes a kubeconfig for the test API server's admin user.
func kubeconfigFor(t *testing.T, kube *harness.Kube) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kube.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// startOperator runs the example operator's binary against kube with extra environment.
func startOperator(t *testing.T, kube *harness.Kube, env ...string) (metricsURL string, p *harness.Process) {
	t.Helper()
	return startOperatorWithArgs(t, kube, nil, env...)
}

// startOperatorWithArgs is startOperator with further command-line flags.
func startOperatorWithArgs(t *testing.T, kube *harness.Kube, args []string, env ...string) (metricsURL string, p *harness.Process) {
	t.Helper()
	bin := harness.BuildBinary(t, "./"+exampleDir+"/cmd")
	metrics, probe := harness.Loopback(harness.FreePort(t)), harness.Loopback(harness.FreePort(t))
	p = harness.StartProcess(t, harness.ProcessSpec{
		Name: "workload-operator",
		Path: bin,
		// --metrics-secure=false: the tests scrape plain http (the default is HTTPS with authn/authz).
		Args: append([]string{"--metrics-bind-address=" + metrics, "--metrics-secure=false", "--health-probe-bind-address=" + probe}, args...),
		Env:  append([]string{"KUBECONFIG=" + kubeconfigFor(t, kube), "OTEL_SERVICE_NAME=workload-operator"}, env...),
	})
	p.MustWaitReady(t, 60*time.Second, harness.HTTPStatusOK("http://"+probe+"/readyz"))
	return "http://" + metrics + "/metrics", p
}

// TestExampleOperatorReconcilesWorkloads runs the built operator binary against a real API
// server and checks its effects a user would check with kubectl: Deployments (and a Service for
// nginx), status conditions, observedGeneration, Events, and cleanup through the finalizer.
func TestExampleOperatorReconcilesWorkloads(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kube, c := startKubeWithWorkloadCRD(t)
	// No collector in this test: the SDK must not block or crash the operator for it.
	metricsURL, op := startOperator(t, kube, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+harness.Loopback(harness.FreePort(t)), "OTEL_METRIC_EXPORT_INTERVAL=1000")
	ctx := ctxTimeout(t, 2*time.Minute)

	nginx := &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: demov1alpha1.WorkloadSpec{Type: demov1alpha1.Nginx, Replicas: ptr.To[int32](2)}}
	broken := &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "broken"}, Spec: demov1alpha1.WorkloadSpec{Type: demov1alpha1.StressCPU, FailWith: demov1alpha1.FailTerminal}}
	for _, w := range []*demov1alpha1.Workload{nginx, broken} {
		if err := c.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}

	waitFor(t, ctx, "the nginx Workload to be reconciled", func() (bool, error) {
		var w demov1alpha1.Workload
		if err := c.Get(ctx, client.ObjectKeyFromObject(nginx), &w); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(w.Status.Conditions, "Reconciled")
		return cond != nil && cond.Status == metav1.ConditionTrue && w.Status.ObservedGeneration == w.Generation, nil
	})
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, &dep); err != nil {
		t.Fatalf("Deployment: %v", err)
	}
	if *dep.Spec.Replicas != 2 || dep.Spec.Template.Spec.Containers[0].Image != "gowatchtower/nginx:0.1.0" || len(dep.OwnerReferences) != 1 {
		t.Errorf("Deployment %+v does not match the Workload", dep.Spec)
	}
	// A spec change reaches the Deployment (the README: the operator keeps it in line).
	var w demov1alpha1.Workload
	if err := c.Get(ctx, client.ObjectKeyFromObject(nginx), &w); err != nil {
		t.Fatal(err)
	}
	w.Spec.Replicas = ptr.To[int32](3)
	if err := c.Update(ctx, &w); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the Deployment to follow the Workload's new replica count", func() (bool, error) {
		var d appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, &d); err != nil {
			return false, err
		}
		return *d.Spec.Replicas == 3, fmt.Errorf("replicas %d", *d.Spec.Replicas)
	})
	var svc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, &svc); err != nil {
		t.Errorf("the nginx Workload needs a Service: %v", err)
	}
	waitFor(t, ctx, "the failing Workload's condition", func() (bool, error) {
		var w demov1alpha1.Workload
		if err := c.Get(ctx, client.ObjectKeyFromObject(broken), &w); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(w.Status.Conditions, "Reconciled")
		return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == "Failed", nil
	})
	waitFor(t, ctx, "the ReconcileFailed and DeploymentCreated Events", func() (bool, error) {
		reasons, err := eventReasons(ctx, c)
		return strings.Contains(reasons, "ReconcileFailed") && strings.Contains(reasons, "DeploymentCreated"), err
	})

	// Deletion goes through the finalizer, which removes the Deployment and the Service (there
	// is no garbage collector in this control plane: only the finalizer can do it).
	if err := c.Delete(ctx, nginx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the Workload, its Deployment and Service to be gone", func() (bool, error) {
		gone := 0
		for _, obj := range []client.Object{&demov1alpha1.Workload{}, &appsv1.Deployment{}, &corev1.Service{}} {
			if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, obj); apierrors.IsNotFound(err) {
				gone++
			}
		}
		return gone == 3, nil
	})

	// The manager's own /metrics serves GoWatchtower's metrics beside controller-runtime's.
	body := httpGet(t, metricsURL)
	for _, want := range []string{`watchtower_reconciles_total{`, `controller_runtime_reconcile_total{controller="workload"`, `watchtower_reconcile_duration_seconds_bucket{`, `watchtower_queue_wait_seconds_count{`, `watchtower_api_duration_seconds_count{`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	select {
	case <-op.Done():
		t.Fatalf("the operator exited with no collector to talk to:\n%s", op.LogTail(4096))
	default:
	}
}

func eventReasons(ctx context.Context, c client.Client) (string, error) {
	var list corev1.EventList
	if err := c.List(ctx, &list, client.InNamespace("default")); err != nil {
		return "", err
	}
	var reasons []string
	for _, e := range list.Items {
		reasons = append(reasons, e.Reason)
	}
	return strings.Join(reasons, ","), nil
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() (bool, error)) {
	t.Helper()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
