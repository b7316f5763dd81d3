// Tests of the example operator's deployment manifests (config/): what a user relies on when
// running `kubectl apply -k config/default`, checked on the YAML files themselves so that no
// kubectl or cluster is needed. The integration tests render and apply them for real.
package workloadoperator_test

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

const (
	namespace      = "workload-operator-system"
	operatorImage  = "gowatchtower/workload-operator:0.1.0"
	nonRootUID     = 65532
	probePort      = 8081
	metricsPort    = 8443
	serviceAccount = "workload-operator"
)

// object is one YAML document of config/, with where it came from.
type object struct {
	file string
	raw  []byte
	meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
}

// decode decodes the document strictly into out: an unknown field is a typo in the manifest.
func (o object) decode(t *testing.T, out any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.raw, out); err != nil {
		t.Fatalf("%s: %s %s: %v", o.file, o.meta.Kind, o.meta.Metadata.Name, err)
	}
}

// manifests are the documents of every YAML file under dir (kustomization files excluded).
func manifests(t *testing.T, dir string) []object {
	t.Helper()
	var objs []object
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" || d.Name() == "kustomization.yaml" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			o := object{file: path, raw: doc}
			if err := yaml.Unmarshal(doc, &o.meta); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// find returns the one object of kind and name.
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.meta.Kind == kind && o.meta.Metadata.Name == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q in config/, found %d", kind, name, len(found))
	}
	return found[0]
}

func deployable(t *testing.T) []object {
	t.Helper()
	var objs []object
	for _, dir := range []string{"crd", "rbac", "manager", "default"} {
		objs = append(objs, manifests(t, filepath.Join("config", dir))...)
	}
	return objs
}

type kustomization struct {
	Namespace  string   `json:"namespace"`
	NamePrefix string   `json:"namePrefix"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// TestKustomizeLayout: config/default pulls in crd, rbac and manager and sets the namespace;
// every resource a kustomization lists exists, and every manifest is listed by one.
func TestKustomizeLayout(t *testing.T) {
	listed := map[string]bool{}
	var walk func(dir string) kustomization
	walk = func(dir string) kustomization {
		var k kustomization
		b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, &k); err != nil {
			t.Fatalf("%s/kustomization.yaml: %v", dir, err)
		}
		for _, r := range k.Resources {
			p := filepath.Join(dir, r)
			st, err := os.Stat(p)
			switch {
			case err != nil:
				t.Errorf("%s/kustomization.yaml lists %s: %v", dir, r, err)
			case st.IsDir():
				walk(p)
			default:
				listed[p] = true
			}
		}
		return k
	}
	k := walk(filepath.Join("config", "default"))
	if k.Namespace != namespace {
		t.Errorf("config/default namespace %q, want %q", k.Namespace, namespace)
	}
	for _, want := range []string{"../crd", "../rbac", "../manager"} {
		if !slices.Contains(k.Resources, want) {
			t.Errorf("config/default does not include %s", want)
		}
	}
	for _, o := range deployable(t) {
		if !listed[o.file] {
			t.Errorf("%s is in config/ but no kustomization lists it", o.file)
		}
	}
	// The namespace config/default puts everything in is the one config/manager creates, and
	// the files say it too, so that `kubectl apply -f` of one file lands in the same place.
	find(t, deployable(t), "Namespace", namespace)
	for _, o := range deployable(t) {
		switch o.meta.Kind {
		case "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding":
		default:
			if o.meta.Metadata.Namespace != namespace {
				t.Errorf("%s: %s %s is in namespace %q, want %q", o.file, o.meta.Kind, o.meta.Metadata.Name, o.meta.Metadata.Namespace, namespace)
			}
		}
	}
	// A kustomize images entry must not silently turn the image into another one.
	mk := walk(filepath.Join("config", "manager"))
	for _, img := range mk.Images {
		if img.Name+":"+img.NewTag != operatorImage || img.NewName != "" {
			t.Errorf("config/manager rewrites the image to %s%s:%s, want %s", img.Name, img.NewName, img.NewTag, operatorImage)
		}
	}
}

func managerDeployment(t *testing.T) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	var dep appsv1.Deployment
	find(t, deployable(t), "Deployment", "workload-operator").decode(t, &dep)
	cs := dep.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "manager" {
		t.Fatalf("want one container named manager, got %d", len(cs))
	}
	return &dep, cs[0]
}

// downwardAPIVariables are the Downward API variables GoWatchtower's sdk reads for its resource
// attributes, taken from the sdk's source (the constants env* whose value is POD_* or NODE_*)
// so that a variable added there cannot be forgotten here.
func downwardAPIVariables(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "..", "sdk", "config.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Values) != 1 || !strings.HasPrefix(vs.Names[0].Name, "env") {
			return true
		}
		if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			v, _ := strconv.Unquote(lit.Value)
			if strings.HasPrefix(v, "POD_") || strings.HasPrefix(v, "NODE_") {
				vars = append(vars, v)
			}
		}
		return true
	})
	if len(vars) < 4 {
		t.Fatalf("found only %q in sdk/config.go; did the sdk's variables move?", vars)
	}
	return vars
}

// TestManagerTelemetryEnvironment: the manager gets its pod's identity from the Downward API in
// exactly the variables the sdk reads, and sends OTLP/HTTP to the agent on its node.
func TestManagerTelemetryEnvironment(t *testing.T) {
	_, c := managerDeployment(t)
	index := map[string]int{}
	for i, e := range c.Env {
		if _, dup := index[e.Name]; dup {
			t.Errorf("env %s is set twice", e.Name)
		}
		index[e.Name] = i
	}
	fieldOf := func(name string) string {
		i, ok := index[name]
		if !ok {
			return ""
		}
		e := c.Env[i]
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			return ""
		}
		return e.ValueFrom.FieldRef.FieldPath
	}
	want := map[string]string{
		"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_UID": "metadata.uid",
		"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP",
	}
	for _, v := range downwardAPIVariables(t) {
		if _, ok := want[v]; !ok {
			t.Errorf("the sdk reads %s, which this test does not know the Downward API field of", v)
		}
		if fieldOf(v) == "" {
			t.Errorf("the sdk reads %s but the manager does not set it from the Downward API", v)
		}
	}
	for name, path := range want {
		if got := fieldOf(name); got != path {
			t.Errorf("env %s from fieldRef %q, want %q", name, got, path)
		}
	}
	value := func(name string) string {
		if i, ok := index[name]; ok {
			return c.Env[i].Value
		}
		return ""
	}
	// The tests and dashboards know the operator as workload-operator; the sdk takes the name
	// from the environment only.
	if got := value("OTEL_SERVICE_NAME"); got != "workload-operator" {
		t.Errorf("OTEL_SERVICE_NAME %q, want workload-operator", got)
	}
	if got := value("OTEL_EXPORTER_OTLP_ENDPOINT"); got != "http://$(HOST_IP):4318" {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q, want http://$(HOST_IP):4318", got)
	}
	if got := value("OTEL_EXPORTER_OTLP_PROTOCOL"); got != "http/protobuf" {
		t.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q, want http/protobuf", got)
	}
	// $(HOST_IP) is expanded only from variables defined before it.
	if i, j := index["HOST_IP"], index["OTEL_EXPORTER_OTLP_ENDPOINT"]; i >= j {
		t.Errorf("HOST_IP (env #%d) must come before OTEL_EXPORTER_OTLP_ENDPOINT (env #%d)", i, j)
	}
}

// TestManagerPodSpec: image, non-root, read-only, resources, probes, ports and flags.
func TestManagerPodSpec(t *testing.T) {
	dep, c := managerDeployment(t)
	if c.Image != operatorImage || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s (%s), want %s (IfNotPresent): the nodes import it, no registry", c.Image, c.ImagePullPolicy, operatorImage)
	}
	pod := dep.Spec.Template.Spec
	if pod.ServiceAccountName != serviceAccount {
		t.Errorf("serviceAccountName %q, want %q", pod.ServiceAccountName, serviceAccount)
	}
	if psc := pod.SecurityContext; psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || ptr.Deref(psc.RunAsUser, 0) != nonRootUID {
		t.Errorf("pod securityContext %+v, want runAsNonRoot and user %d", psc, nonRootUID)
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("the manager container has no securityContext")
	}
	if !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.RunAsUser, 0) != nonRootUID || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
		ptr.Deref(sc.AllowPrivilegeEscalation, true) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("manager securityContext %+v: want non-root %d, read-only root, no privilege escalation, drop ALL, RuntimeDefault seccomp", sc, nonRootUID)
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, limit := c.Resources.Requests[name], c.Resources.Limits[name]
		if req.IsZero() || limit.IsZero() || req.Cmp(limit) > 0 {
			t.Errorf("%s: request %s limit %s, want both, request <= limit", name, req.String(), limit.String())
		}
	}
	for probe, path := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port != intstr.FromInt32(probePort) {
			t.Errorf("want a probe GET %s on :%d, got %+v", path, probePort, probe)
		}
	}
	args := map[string]string{}
	for _, a := range c.Args {
		name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		args[name] = value
	}
	defined := operatorFlags(t)
	for name := range args {
		if !defined[name] {
			t.Errorf("the manager is started with --%s, which cmd/main.go does not define", name)
		}
	}
	if v, ok := args["leader-elect"]; !ok || (v != "" && v != "true") {
		t.Errorf("--leader-elect is not set: %q", c.Args)
	}
	if args["metrics-bind-address"] != ":"+strconv.Itoa(metricsPort) {
		t.Errorf("--metrics-bind-address=%q, want :%d", args["metrics-bind-address"], metricsPort)
	}
	if v, ok := args["metrics-secure"]; ok && v != "true" {
		t.Errorf("--metrics-secure=%s: the deployed metrics endpoint must be HTTPS with authentication", v)
	}
	if args["health-probe-bind-address"] != ":"+strconv.Itoa(probePort) {
		t.Errorf("--health-probe-bind-address=%q, want :%d", args["health-probe-bind-address"], probePort)
	}
	var ports []int32
	for _, p := range c.Ports {
		ports = append(ports, p.ContainerPort)
	}
	if !slices.Contains(ports, metricsPort) || !slices.Contains(ports, probePort) {
		t.Errorf("container ports %v, want %d and %d", ports, metricsPort, probePort)
	}

	// The metrics Service reaches this pod on 8443.
	var svc corev1.Service
	find(t, deployable(t), "Service", "workload-operator-metrics").decode(t, &svc)
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("the metrics Service selects %s=%s, which the manager's pods do not have", k, v)
		}
	}
	if len(svc.Spec.Selector) == 0 || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != metricsPort || svc.Spec.Ports[0].TargetPort.IntValue() != metricsPort {
		t.Errorf("metrics Service ports %+v, want port %d to the pods' %d", svc.Spec.Ports, metricsPort, metricsPort)
	}
	for k, v := range dep.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("the Deployment's selector %s=%s does not match its pods", k, v)
		}
	}
}

// operatorFlags are the flag names cmd/main.go defines with flag.*Var or flag.<Type>.
func operatorFlags(t *testing.T) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("cmd", "main.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "flag" {
			return true
		}
		for _, a := range call.Args[:min(2, len(call.Args))] {
			if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				name, _ := strconv.Unquote(lit.Value)
				flags[name] = true
				break
			}
		}
		return true
	})
	for _, want := range []string{"metrics-bind-address", "metrics-secure", "workload-image-prefix", "workload-image-tag"} {
		if !flags[want] {
			t.Fatalf("cmd/main.go defines no --%s (found %v)", want, flags)
		}
	}
	return flags
}

// allows reports whether rules grant verb on group/resource.
func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if (slices.Contains(r.APIGroups, group) || slices.Contains(r.APIGroups, "*")) &&
			(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) &&
			(slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, "*")) {
			return true
		}
	}
	return false
}

// boundToOperator checks that a binding in objs of kind binds roleKind roleName to the
// operator's service account.
func boundToOperator(t *testing.T, objs []object, kind, roleKind, roleName string) {
	t.Helper()
	for _, o := range objs {
		if o.meta.Kind != kind {
			continue
		}
		var b rbacv1.ClusterRoleBinding // a RoleBinding has the same fields
		o.decode(t, &b)
		if b.RoleRef.Kind != roleKind || b.RoleRef.Name != roleName {
			continue
		}
		for _, s := range b.Subjects {
			if s.Kind == "ServiceAccount" && s.Name == serviceAccount && s.Namespace == namespace {
				return
			}
		}
	}
	t.Errorf("no %s binds %s %s to the service account %s/%s", kind, roleKind, roleName, namespace, serviceAccount)
}

// TestRBAC: the operator's service account may do what the controller, leader election and the
// secure metrics endpoint do, and a scraper can be granted GET /metrics.
func TestRBAC(t *testing.T) {
	objs := deployable(t)
	find(t, objs, "ServiceAccount", serviceAccount)

	var role rbacv1.ClusterRole
	find(t, objs, "ClusterRole", "workload-operator").decode(t, &role)
	boundToOperator(t, objs, "ClusterRoleBinding", "ClusterRole", "workload-operator")
	type need struct{ group, resource, verbs string }
	for _, n := range []need{
		{"demo.gowatchtower.io", "workloads", "get list watch update patch"},
		{"demo.gowatchtower.io", "workloads/status", "get update patch"},
		{"demo.gowatchtower.io", "workloads/finalizers", "update"},
		{"apps", "deployments", "get list watch create update patch delete"},
		{"", "services", "get list watch create update patch delete"},
		{"events.k8s.io", "events", "create patch"},
	} {
		for _, verb := range strings.Fields(n.verbs) {
			if !allows(role.Rules, n.group, n.resource, verb) {
				t.Errorf("ClusterRole workload-operator does not allow %s on %s in group %q", verb, n.resource, n.group)
			}
		}
	}

	var le rbacv1.Role
	find(t, objs, "Role", "workload-operator-leader-election").decode(t, &le)
	boundToOperator(t, objs, "RoleBinding", "Role", "workload-operator-leader-election")
	for _, verb := range []string{"get", "list", "watch", "create", "update", "patch"} {
		if !allows(le.Rules, "coordination.k8s.io", "leases", verb) {
			t.Errorf("the leader election Role does not allow %s on leases", verb)
		}
	}

	var auth rbacv1.ClusterRole
	find(t, objs, "ClusterRole", "workload-operator-metrics-auth").decode(t, &auth)
	boundToOperator(t, objs, "ClusterRoleBinding", "ClusterRole", "workload-operator-metrics-auth")
	if !allows(auth.Rules, "authentication.k8s.io", "tokenreviews", "create") || !allows(auth.Rules, "authorization.k8s.io", "subjectaccessreviews", "create") {
		t.Errorf("the metrics auth ClusterRole must allow creating tokenreviews and subjectaccessreviews: %+v", auth.Rules)
	}

	var reader rbacv1.ClusterRole
	find(t, objs, "ClusterRole", "workload-operator-metrics-reader").decode(t, &reader)
	ok := false
	for _, r := range reader.Rules {
		ok = ok || (slices.Contains(r.NonResourceURLs, "/metrics") && slices.Contains(r.Verbs, "get"))
	}
	if !ok {
		t.Errorf("the metrics reader ClusterRole must allow GET /metrics: %+v", reader.Rules)
	}
}
