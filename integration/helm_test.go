// The Helm chart deploy/helm/otelcol-watchtower: lint, render for the values profiles in its
// ci/ directory, check what the rendered collectors would actually run (the built
// otelcol-watchtower resolves each rendered config with the rendered environment), reject wrong
// values by name, and let a real kube-apiserver validate every rendered object (server-side
// dry-run) and a real `helm install` / `helm upgrade` / `helm uninstall`.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/integration/harness"
)

const (
	chartDir       = "deploy/helm/otelcol-watchtower"
	chartNamespace = "watchtower-system"
	chartRelease   = "owt"
	// The chart mounts its ConfigMap here and the Kafka TLS Secret there.
	chartConfigDir = "/etc/otelcol-watchtower/config"
	chartTLSDir    = "/etc/otelcol-watchtower/kafka-tls"
)

// chartProfile is one values file of the chart's ci/ directory and what rendering it must give.
type chartProfile struct {
	name string // ci/<name>-values.yaml
	// monitoring renders as for a cluster serving monitoring.coreos.com/v1.
	monitoring bool
	// kinds counts the objects of each kind, besides the dashboard ConfigMaps and the
	// PrometheusRule (which follow deploy/dashboards and deploy/alerts).
	kinds map[string]int
	// What the collectors must resolve from it.
	brokers        []string
	samplerTier    bool
	consumerGroup  string
	tracesEndpoint string
	memoryLimitMiB int
	slowMs         string
	compression    string
	requiredAcks   int
	tls            *chartTLS
	sasl           *chartSASL
	otlp           *chartOTLP
}

// chartOTLP is the OTLP security of a profile: the gateway's certificate Secret (its keys for
// the certificate, key, CA and client CA), the agents' client certificate Secret, the token's.
type chartOTLP struct{ secret, cert, key, ca, clientCA, agentSecret, tokenSecret, tokenKey string }

type chartTLS struct{ secret, ca, cert, key, serverName string }
type chartSASL struct{ secret, mechanism, userKey, passKey string }

var chartProfiles = []chartProfile{
	{
		name:    "default",
		kinds:   map[string]int{"Deployment": 1, "Service": 1, "ConfigMap": 1, "ServiceAccount": 1, "NetworkPolicy": 1},
		brokers: []string{"kafka:9092"}, tracesEndpoint: "jaeger-collector:4317", memoryLimitMiB: 1536,
		slowMs: "1000", compression: "lz4", requiredAcks: -1,
	},
	{
		name: "scaled", monitoring: true,
		kinds: map[string]int{"Deployment": 2, "DaemonSet": 1, "Service": 3, "ConfigMap": 3, "ServiceAccount": 3, "NetworkPolicy": 3,
			"HorizontalPodAutoscaler": 2, "PodDisruptionBudget": 2, "ClusterRole": 1, "ClusterRoleBinding": 1, "ServiceMonitor": 3},
		brokers:     []string{"kafka-0.kafka:9092", "kafka-1.kafka:9092", "kafka-2.kafka:9092"},
		samplerTier: true, consumerGroup: "watchtower-samplers", tracesEndpoint: "tempo-distributor.tracing:4317", memoryLimitMiB: 1536,
		slowMs: "2000", compression: "zstd", requiredAcks: 1,
	},
	{
		name:    "kafka-auth",
		kinds:   map[string]int{"Deployment": 2, "Service": 2, "ConfigMap": 2, "ServiceAccount": 2, "NetworkPolicy": 2},
		brokers: []string{"kafka.messaging:9093"}, samplerTier: true, consumerGroup: "otelcol-watchtower-sampler",
		tracesEndpoint: "jaeger-collector:4317", memoryLimitMiB: 1536, slowMs: "1000", compression: "lz4", requiredAcks: -1,
		tls:  &chartTLS{secret: "kafka-client-tls", ca: "ca.crt", cert: "tls.crt", key: "tls.key", serverName: "kafka.messaging.svc"},
		sasl: &chartSASL{secret: "kafka-client-sasl", mechanism: "SCRAM-SHA-512", userKey: "user", passKey: "pass"},
	},
	{
		name:    "otlp-security",
		kinds:   map[string]int{"Deployment": 1, "DaemonSet": 1, "Service": 2, "ConfigMap": 2, "ServiceAccount": 2, "NetworkPolicy": 2, "ClusterRole": 1, "ClusterRoleBinding": 1},
		brokers: []string{"kafka:9092"}, tracesEndpoint: "jaeger-collector:4317", memoryLimitMiB: 1536,
		slowMs: "1000", compression: "lz4", requiredAcks: -1,
		otlp: &chartOTLP{secret: "gateway-otlp-tls", cert: "tls.crt", key: "tls.key", ca: "ca.crt", clientCA: "ca.crt",
			agentSecret: "agent-otlp-client", tokenSecret: "gateway-otlp-token", tokenKey: "token"},
	},
	{
		name:    "statefulset",
		kinds:   map[string]int{"StatefulSet": 1, "Deployment": 1, "Service": 2, "ConfigMap": 2, "ServiceAccount": 2, "NetworkPolicy": 2},
		brokers: []string{"kafka:9092"}, samplerTier: true, consumerGroup: "otelcol-watchtower-sampler",
		tracesEndpoint: "jaeger-collector:4317", memoryLimitMiB: 1536, slowMs: "1000", compression: "lz4", requiredAcks: -1,
	},
	{
		name:    "memory-queue",
		kinds:   map[string]int{"Deployment": 1, "Service": 1, "ConfigMap": 1, "ServiceAccount": 1, "NetworkPolicy": 1},
		brokers: []string{"kafka:9092"}, tracesEndpoint: "jaeger-collector:4317", memoryLimitMiB: 1024,
		slowMs: "1000", compression: "lz4", requiredAcks: -1,
	},
	{
		name: "monitoring", monitoring: true,
		kinds: map[string]int{"Deployment": 1, "Service": 1, "ConfigMap": 1, "ServiceAccount": 1, "NetworkPolicy": 1,
			"PersistentVolumeClaim": 1, "ServiceMonitor": 1},
		brokers: []string{"kafka:9092"}, tracesEndpoint: "jaeger-collector:4317", memoryLimitMiB: 1536,
		slowMs: "1000", compression: "lz4", requiredAcks: -1,
	},
}

// helmCLI is the harness' Helm with the chart tests' own helpers.
type helmCLI struct{ *harness.Helm }

func newHelm(t *testing.T) *helmCLI { return &helmCLI{harness.NewHelm(t)} }

// render runs helm template for a profile and decodes every object.
func (h *helmCLI) render(ctx context.Context, t *testing.T, p chartProfile) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", chartRelease, chartDir, "--namespace", chartNamespace, "-f", profileValues(p)}
	if p.monitoring {
		args = append(args, "--api-versions", "monitoring.coreos.com/v1")
	}
	out, err := h.Run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeManifests(out)
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	return objs
}

func profileValues(p chartProfile) string {
	return filepath.Join(chartDir, "ci", p.name+"-values.yaml")
}

func decodeManifests(s string) ([]*unstructured.Unstructured, error) {
	dec := k8syaml.NewYAMLOrJSONDecoder(strings.NewReader(s), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode rendered manifests: %w", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// TestHelmChartFilesAreCurrent: the chart's copies of the pipeline configs, alert rules and
// dashboards, and the generated prometheus-operator CRDs in deploy/crds, match their sources.
func TestHelmChartFilesAreCurrent(t *testing.T) {
	tools := harness.MustTools(t)
	ctx := ctxTimeout(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, filepath.Join(tools.RepoRoot, "hack", "chart.sh"), "check")
	cmd.Dir = tools.RepoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/chart.sh check: %v\n%s", err, out)
	}
}

func TestHelmChartLint(t *testing.T) {
	h := newHelm(t)
	ctx := ctxTimeout(t, 2*time.Minute)
	for _, p := range chartProfiles {
		if _, err := h.Run(ctx, "lint", "--strict", chartDir, "--namespace", chartNamespace, "-f", profileValues(p)); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}
}

// TestHelmChartRenders renders every profile and checks the objects: the kinds, the hardening
// of every workload, references that resolve inside the release, the configs copied verbatim,
// every WATCHTOWER_* variable the chart sets being read by the config it is set for, secrets
// only by reference, and the monitoring objects only where their API is served. Then the built
// otelcol-watchtower resolves each workload's rendered config with its rendered environment.
func TestHelmChartRenders(t *testing.T) {
	h := newHelm(t)
	tools := harness.MustTools(t)
	ctx := ctxTimeout(t, 4*time.Minute)
	dashboards, _ := filepath.Glob(filepath.Join(tools.RepoRoot, "deploy", "dashboards", "*.json"))
	ruleGroups := alertRuleGroups(t, tools.RepoRoot)
	collector := harness.BuildCollector(t).Path

	for _, p := range chartProfiles {
		t.Run(p.name, func(t *testing.T) {
			objs := h.render(ctx, t, p)
			want := map[string]int{}
			for k, n := range p.kinds {
				want[k] = n
			}
			want["ConfigMap"] += len(dashboards)
			if p.monitoring && len(ruleGroups) > 0 {
				want["PrometheusRule"] = 1
			}
			got := map[string]int{}
			for _, o := range objs {
				got[o.GetKind()]++
				if o.GetKind() == "Secret" {
					t.Errorf("the chart rendered Secret %s: secrets must only be referenced", o.GetName())
				}
				if strings.HasPrefix(o.GetAPIVersion(), "monitoring.coreos.com/") && !p.monitoring {
					t.Errorf("%s %s rendered though monitoring.coreos.com/v1 is not served", o.GetKind(), o.GetName())
				}
			}
			if fmt.Sprint(sortedCounts(got)) != fmt.Sprint(sortedCounts(want)) {
				t.Errorf("rendered kinds %v, want %v", sortedCounts(got), sortedCounts(want))
			}
			r := indexObjects(objs)
			for _, w := range r.workloads() {
				checkWorkload(t, tools.RepoRoot, r, w, p)
				checkResolvedConfig(ctx, t, collector, r, w, p)
			}
			checkRBAC(t, r)
			checkDashboards(t, r, dashboards)
			if p.monitoring {
				checkMonitoring(t, r, ruleGroups)
			}
		})
	}
}

// renderedObjects indexes a release's objects by kind and name.
type renderedObjects map[string]map[string]*unstructured.Unstructured

func indexObjects(objs []*unstructured.Unstructured) renderedObjects {
	r := renderedObjects{}
	for _, o := range objs {
		if r[o.GetKind()] == nil {
			r[o.GetKind()] = map[string]*unstructured.Unstructured{}
		}
		r[o.GetKind()][o.GetName()] = o
	}
	return r
}

func (r renderedObjects) workloads() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, kind := range []string{"Deployment", "StatefulSet", "DaemonSet"} {
		for _, name := range sortedKeys(r[kind]) {
			out = append(out, r[kind][name])
		}
	}
	return out
}

func (r renderedObjects) byComponent(kind, component string) *unstructured.Unstructured {
	for _, o := range r[kind] {
		if o.GetLabels()["app.kubernetes.io/component"] == component {
			return o
		}
	}
	return nil
}

func podSpecOf(t *testing.T, w *unstructured.Unstructured) corev1.PodSpec {
	t.Helper()
	m, found, err := unstructured.NestedMap(w.Object, "spec", "template", "spec")
	if err != nil || !found {
		t.Fatalf("%s %s has no pod template: %v", w.GetKind(), w.GetName(), err)
	}
	var spec corev1.PodSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &spec); err != nil {
		t.Fatalf("%s %s: %v", w.GetKind(), w.GetName(), err)
	}
	return spec
}

var envRef = regexp.MustCompile(`\$\{env:([A-Za-z_][A-Za-z0-9_]*)`)

func checkWorkload(t *testing.T, root string, r renderedObjects, w *unstructured.Unstructured, p chartProfile) {
	name := w.GetKind() + " " + w.GetName()
	tier := w.GetLabels()["app.kubernetes.io/component"]
	spec := podSpecOf(t, w)

	if sa := r["ServiceAccount"][spec.ServiceAccountName]; sa == nil {
		t.Errorf("%s: ServiceAccount %q is not in the release", name, spec.ServiceAccountName)
	}
	// Only the agent talks to the API server.
	if mount := spec.AutomountServiceAccountToken; mount == nil || *mount != (tier == "agent") {
		t.Errorf("%s: automountServiceAccountToken %v, want %v", name, mount, tier == "agent")
	}
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil {
		t.Errorf("%s: pod securityContext %+v: want runAsNonRoot and a seccomp profile", name, sc)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", name, len(spec.Containers))
	}
	c := spec.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, corev1.Capability("ALL")) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: container securityContext %+v: want non-root, read-only root file system, no privilege escalation, ALL capabilities dropped", name, sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: resources %+v: want CPU and memory requests and a memory limit", name, c.Resources)
	}
	ports := map[string]int32{}
	for _, port := range c.Ports {
		ports[port.Name] = port.ContainerPort
	}
	for probeName, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.String() != "health" || ports["health"] != 13133 {
			t.Errorf("%s: %s probe %+v: want an HTTP GET on the health port 13133 (health_check)", name, probeName, probe)
		}
	}

	// Volumes resolve inside the release (ConfigMaps, claims) or to the profile's Secrets.
	configMap := ""
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			if r["ConfigMap"][v.ConfigMap.Name] == nil {
				t.Errorf("%s: volume %s: ConfigMap %s is not in the release", name, v.Name, v.ConfigMap.Name)
			}
			configMap = v.ConfigMap.Name
		case v.PersistentVolumeClaim != nil:
			if r["PersistentVolumeClaim"][v.PersistentVolumeClaim.ClaimName] == nil {
				t.Errorf("%s: volume %s: claim %s is not in the release", name, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		case v.Secret != nil:
			var allowed []string
			if p.tls != nil {
				allowed = append(allowed, p.tls.secret)
			}
			if p.otlp != nil {
				allowed = append(allowed, p.otlp.secret, p.otlp.agentSecret, p.otlp.tokenSecret)
			}
			if !slices.Contains(allowed, v.Secret.SecretName) {
				t.Errorf("%s: volume %s mounts Secret %s, want only the Kafka and OTLP Secrets of the values %v", name, v.Name, v.Secret.SecretName, allowed)
			}
			if tier == "agent" && p.otlp != nil && v.Secret.SecretName == p.otlp.secret &&
				(len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != p.otlp.ca) {
				t.Errorf("%s: volume %s mounts %+v of the gateway's Secret %s, want its CA %s only (not the gateway's key)", name, v.Name, v.Secret.Items, p.otlp.secret, p.otlp.ca)
			}
		case v.EmptyDir != nil:
		default:
			t.Errorf("%s: unexpected volume %+v", name, v)
		}
	}
	cm := r["ConfigMap"][configMap]
	if cm == nil {
		t.Fatalf("%s mounts no ConfigMap of the release", name)
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	src, err := os.ReadFile(filepath.Join(root, "deploy", "collector", tier+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if data[tier+".yaml"] != string(src) {
		t.Errorf("%s: ConfigMap %s key %s.yaml is not deploy/collector/%s.yaml verbatim", name, cm.GetName(), tier, tier)
	}
	var configs []string
	for _, a := range c.Args {
		f, ok := strings.CutPrefix(a, "--config="+chartConfigDir+"/")
		if !ok {
			t.Errorf("%s: argument %q is not a --config in %s", name, a, chartConfigDir)
			continue
		}
		if _, ok := data[f]; !ok {
			t.Errorf("%s: --config %s is not a key of ConfigMap %s", name, f, cm.GetName())
		}
		configs = append(configs, data[f])
	}
	if len(configs) == 0 || !strings.HasSuffix(c.Args[0], "/"+tier+".yaml") {
		t.Errorf("%s: args %v: want deploy/collector/%s.yaml first", name, c.Args, tier)
	}

	// The gateway's two Kafka queues get a quarter of the queue volume each, in bytes, so that
	// both full, with their files' overhead, fit in half of it (docs/deploy.md).
	if tier == "gateway" {
		var volume int64
		// A StatefulSet's queue is a claim of each replica, from its volumeClaimTemplates.
		templates, _, _ := unstructured.NestedSlice(w.Object, "spec", "volumeClaimTemplates")
		for _, tpl := range templates {
			m, _ := tpl.(map[string]any)
			if n, _, _ := unstructured.NestedString(m, "metadata", "name"); n != "queue" {
				continue
			}
			q, _, _ := unstructured.NestedString(m, "spec", "resources", "requests", "storage")
			size := resource.MustParse(q)
			volume = size.Value()
			if mounted := slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.Name == "queue" }); !mounted {
				t.Errorf("%s: the queue claim template is not mounted", name)
			}
		}
		for _, v := range spec.Volumes {
			switch {
			case v.EmptyDir != nil && v.EmptyDir.SizeLimit != nil:
				volume = v.EmptyDir.SizeLimit.Value()
			case v.PersistentVolumeClaim != nil:
				if pvc := r["PersistentVolumeClaim"][v.PersistentVolumeClaim.ClaimName]; pvc != nil {
					q, _, _ := unstructured.NestedString(pvc.Object, "spec", "resources", "requests", "storage")
					size := resource.MustParse(q)
					volume = size.Value()
				}
			}
		}
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "WATCHTOWER_KAFKA_QUEUE_BYTES" })
		inMemory := slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasSuffix(a, "/gateway-memory-queue.yaml") })
		switch {
		case inMemory:
			// In memory, each queue is an eighth of the memory limiter's budget.
			if i < 0 || c.Env[i].Value != strconv.Itoa(p.memoryLimitMiB<<20/8) {
				t.Errorf("%s: with the queues in memory, WATCHTOWER_KAFKA_QUEUE_BYTES must be an eighth of the %d MiB limiter (env %+v)", name, p.memoryLimitMiB, c.Env)
			}
		case volume == 0 || i < 0 || c.Env[i].Value != strconv.FormatInt(volume/4, 10):
			t.Errorf("%s: WATCHTOWER_KAFKA_QUEUE_BYTES must be a quarter of the %d-byte queue volume (env %+v)", name, volume, c.Env)
		}
		if (p.name == "memory-queue") != inMemory {
			t.Errorf("%s: the memory-queue overlay is in the args %v exactly for persistentQueue.volume=memory", name, c.Args)
		}
	}

	// Every WATCHTOWER_* variable the chart sets is read by this tier's configs: a misspelt
	// name would silently leave the config's default in force.
	read := map[string]bool{}
	for _, cfg := range configs {
		for _, m := range envRef.FindAllStringSubmatch(cfg, -1) {
			read[m[1]] = true
		}
	}
	// Every file a variable names is on a read-only mount of a Secret volume.
	secretMount := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			secretMount[v.Name] = true
		}
	}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "WATCHTOWER_") || !strings.HasSuffix(e.Name, "_FILE") {
			continue
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.ReadOnly && secretMount[m.Name] && strings.HasPrefix(e.Value, m.MountPath+"/")
		}) {
			t.Errorf("%s: %s=%s is not on a read-only Secret mount (%+v)", name, e.Name, e.Value, c.VolumeMounts)
		}
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "WATCHTOWER_") && !read[e.Name] {
			t.Errorf("%s sets %s, which none of its configs (%s) reads", name, e.Name, strings.Join(c.Args, " "))
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			if p.sasl == nil || e.ValueFrom.SecretKeyRef.Name != p.sasl.secret {
				t.Errorf("%s: %s from Secret %s, want only the SASL Secret of the values", name, e.Name, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		if strings.Contains(strings.ToLower(e.Name), "password") && e.Value != "" {
			t.Errorf("%s: %s has an inline value", name, e.Name)
		}
	}
}

// checkResolvedConfig runs the built collector's print-config on the workload's rendered config
// files with its rendered environment (Secret references become placeholders) and checks the
// resolved configuration against the profile: this is what the pod would run.
func checkResolvedConfig(ctx context.Context, t *testing.T, collector string, r renderedObjects, w *unstructured.Unstructured, p chartProfile) {
	name := w.GetKind() + " " + w.GetName()
	tier := w.GetLabels()["app.kubernetes.io/component"]
	spec := podSpecOf(t, w)
	c := spec.Containers[0]
	var cm *unstructured.Unstructured
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			cm = r["ConfigMap"][v.ConfigMap.Name]
		}
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	dir := t.TempDir()
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"print-config", "--mode=unredacted"}
	for _, a := range c.Args {
		args = append(args, strings.Replace(a, chartConfigDir, dir, 1))
	}
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil {
			switch {
			case f.SecretKeyRef != nil:
				v = "from-secret:" + f.SecretKeyRef.Name + "/" + f.SecretKeyRef.Key
			case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.name":
				v = "pod-0"
			case f.FieldRef != nil && f.FieldRef.FieldPath == "spec.nodeName":
				v = "node-0"
			default:
				t.Fatalf("%s: %s: unexpected valueFrom %+v", name, e.Name, f)
			}
		}
		env = append(env, e.Name+"="+v)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(pctx, collector, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: otelcol-watchtower %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("%s: print-config output: %v", name, err)
	}
	// get follows a dotted path; a numeric element indexes a list.
	get := func(path string) any {
		var v any = cfg
		for _, k := range strings.Split(path, ".") {
			switch x := v.(type) {
			case map[string]any:
				v = x[k]
			case []any:
				i, err := strconv.Atoi(k)
				if err != nil || i >= len(x) {
					return nil
				}
				v = x[i]
			default:
				return nil
			}
		}
		return v
	}
	expect := func(path string, want any) {
		t.Helper()
		if got := get(path); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s resolves %s to %v, want %v", name, path, got, want)
		}
	}
	ports := map[string]int32{}
	for _, port := range c.Ports {
		ports[port.Name] = port.ContainerPort
	}
	// The ports the pod declares (and probes, and its Services target) are where it listens.
	expect("extensions.health_check.endpoint", fmt.Sprintf("0.0.0.0:%d", ports["health"]))
	expect("service.telemetry.metrics.readers.0.pull.exporter.prometheus.port", ports["telemetry"])
	expect("service.telemetry.logs.level", "info")
	expect("processors.memory_limiter.limit_mib", map[string]int{"gateway": p.memoryLimitMiB, "sampler": p.memoryLimitMiB, "agent": 400}[tier])
	if tier != "sampler" {
		expect("receivers.otlp.protocols.grpc.endpoint", fmt.Sprintf("0.0.0.0:%d", ports["otlp-grpc"]))
		expect("receivers.otlp.protocols.http.endpoint", fmt.Sprintf("0.0.0.0:%d", ports["otlp-http"]))
	}

	// The tail sampler's policies do not survive print-config's output, so the threshold is
	// checked where the chart sets it (the variable is read by the config: checkWorkload).
	if tier == "sampler" || (tier == "gateway" && !p.samplerTier) {
		found := false
		for _, e := range c.Env {
			if e.Name == "WATCHTOWER_SLOW_THRESHOLD_MS" {
				found = true
				if e.Value != p.slowMs {
					t.Errorf("%s: WATCHTOWER_SLOW_THRESHOLD_MS=%s, want %s", name, e.Value, p.slowMs)
				}
			}
		}
		if !found {
			t.Errorf("%s samples but does not set WATCHTOWER_SLOW_THRESHOLD_MS", name)
		}
	}

	// Who may send: TLS, mutual TLS and the token on the gateway's receivers, and the agents
	// verifying the gateway and presenting their certificate and the token.
	switch o := p.otlp; {
	case o == nil && tier != "sampler":
		for _, path := range []string{"receivers.otlp.protocols.grpc.tls", "receivers.otlp.protocols.http.auth", "exporters.otlp_grpc/gateway.auth"} {
			if got := get(path); got != nil {
				t.Errorf("%s resolves %s to %v without otlp values", name, path, got)
			}
		}
	case o != nil && tier == "gateway":
		for _, proto := range []string{"grpc", "http"} {
			r := "receivers.otlp.protocols." + proto
			expect(r+".tls.cert_file", "/etc/otelcol-watchtower/otlp-tls/"+o.cert)
			expect(r+".tls.key_file", "/etc/otelcol-watchtower/otlp-tls/"+o.key)
			expect(r+".tls.client_ca_file", "/etc/otelcol-watchtower/otlp-tls/"+o.clientCA)
			expect(r+".auth.authenticator", "bearertokenauth/otlp")
		}
		expect("extensions.bearertokenauth/otlp.filename", "/etc/otelcol-watchtower/otlp-token/"+o.tokenKey)
		expect("service.extensions", "[health_check file_storage/queue kafka_topics_check bearertokenauth/otlp]")
	case o != nil && tier == "agent":
		// print-config leaves out a false insecure (omitempty).
		if got := get("exporters.otlp_grpc/gateway.tls.insecure"); got == true {
			t.Errorf("%s sends to the gateway in plaintext (tls.insecure %v) with otlp.tls", name, got)
		}
		expect("exporters.otlp_grpc/gateway.tls.ca_file", "/etc/otelcol-watchtower/otlp-tls/"+o.ca)
		expect("exporters.otlp_grpc/gateway.tls.cert_file", "/etc/otelcol-watchtower/otlp-client/tls.crt")
		expect("exporters.otlp_grpc/gateway.tls.key_file", "/etc/otelcol-watchtower/otlp-client/tls.key")
		expect("exporters.otlp_grpc/gateway.auth.authenticator", "bearertokenauth/gateway")
		expect("extensions.bearertokenauth/gateway.filename", "/etc/otelcol-watchtower/otlp-token/"+o.tokenKey)
		expect("service.extensions", "[health_check bearertokenauth/gateway]")
	}

	// The Kafka clients of the tier: the gateway's topic check at start connects as its
	// exporter does, to the same brokers with the same TLS and SASL.
	kafkaClients := map[string][]string{"gateway": {"exporters.kafka", "extensions.kafka_topics_check"}, "sampler": {"receivers.kafka"}}[tier]
	switch tier {
	case "gateway":
		expect("exporters.prometheus.endpoint", fmt.Sprintf("0.0.0.0:%d", ports["metrics"]))
		expect("exporters.kafka.traces.topic", "otlp_spans")
		expect("exporters.kafka.metrics.topic", "otlp_metrics")
		expect("exporters.kafka.client_id", "pod-0")
		expect("extensions.kafka_topics_check.topics", "[otlp_spans otlp_metrics]")
		expect("extensions.kafka_topics_check.client_id", "pod-0")
		expect("extensions.kafka_topics_check.on_missing", "fail")
		if !slices.Contains(strings.Fields(strings.Trim(fmt.Sprint(get("service.extensions")), "[]")), "kafka_topics_check") {
			t.Errorf("%s: service.extensions %v does not run kafka_topics_check", name, get("service.extensions"))
		}
		expect("exporters.kafka.producer.compression", p.compression)
		expect("exporters.kafka.producer.required_acks", p.requiredAcks)
		// The persistent queue is on a volume (the root file system is read-only).
		dirPath, _ := get("extensions.file_storage/queue.directory").(string)
		onVolume := false
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(dirPath, m.MountPath+"/") && !m.ReadOnly {
				onVolume = true
			}
		}
		if !onVolume {
			t.Errorf("%s: the file_storage directory %q is not on a writable volume (mounts %+v)", name, dirPath, c.VolumeMounts)
		}
		if p.samplerTier {
			// The sampler tier samples; the gateway must not sample or export traces itself.
			expect("service.pipelines.traces/sampling.processors", "[]")
			expect("service.pipelines.traces/sampling.exporters", "[debug/sampler_tier]")
			expect("exporters.debug/sampler_tier.output_paths", "[/dev/null]")
		} else {
			expect("service.pipelines.traces/sampling.processors", "[tail_sampling]")
			expect("service.pipelines.traces/sampling.exporters", "[otlp_grpc/traces_backend]")
			expect("exporters.otlp_grpc/traces_backend.endpoint", p.tracesEndpoint)
		}
	case "sampler":
		expect("receivers.kafka.group_id", p.consumerGroup)
		expect("receivers.kafka.traces.topics", "[otlp_spans]")
		expect("service.pipelines.traces.processors", "[memory_limiter tail_sampling]")
		expect("exporters.otlp_grpc/traces_backend.endpoint", p.tracesEndpoint)
	case "agent":
		gw := r.byComponent("Service", "gateway")
		if gw == nil {
			t.Fatalf("%s: no gateway Service in the release", name)
		}
		expect("exporters.otlp_grpc/gateway.endpoint", fmt.Sprintf("%s.%s.svc:4317", gw.GetName(), chartNamespace))
		expect("processors.k8s_attributes.filter.node_from_env_var", "KUBE_NODE_NAME")
		if !strings.Contains(fmt.Sprint(get("receivers.prometheus.config.scrape_configs")), "spec.nodeName=node-0") {
			t.Errorf("%s: the pod discovery is not limited to the node: %v", name, get("receivers.prometheus.config.scrape_configs"))
		}
	}
	for _, kafka := range kafkaClients {
		checkKafkaClient(t, name, kafka, expect, get, c, spec, p)
	}
}

// checkKafkaClient checks one Kafka client's resolved connection settings (kafka, e.g.
// "exporters.kafka") against the profile: brokers, TLS files on the read-only Secret mount, SASL
// credentials from the Secret.
func checkKafkaClient(t *testing.T, name, kafka string, expect func(string, any), get func(string) any, c corev1.Container, spec corev1.PodSpec, p chartProfile) {
	t.Helper()
	expect(kafka+".brokers", p.brokers)
	if p.tls != nil {
		expect(kafka+".tls.ca_file", chartTLSDir+"/"+p.tls.ca)
		expect(kafka+".tls.cert_file", chartTLSDir+"/"+p.tls.cert)
		expect(kafka+".tls.key_file", chartTLSDir+"/"+p.tls.key)
		expect(kafka+".tls.server_name_override", p.tls.serverName)
		if get(kafka+".tls.insecure") == true {
			t.Errorf("%s: %s.tls.insecure is true", name, kafka)
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			if m.MountPath == chartTLSDir && m.ReadOnly {
				for _, v := range spec.Volumes {
					mounted = mounted || (v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == p.tls.secret)
				}
			}
		}
		if !mounted {
			t.Errorf("%s: Secret %s is not mounted read-only at %s", name, p.tls.secret, chartTLSDir)
		}
	} else {
		expect(kafka+".tls", nil)
	}
	if p.sasl != nil {
		expect(kafka+".auth.sasl.mechanism", p.sasl.mechanism)
		expect(kafka+".auth.sasl.username", "from-secret:"+p.sasl.secret+"/"+p.sasl.userKey)
		expect(kafka+".auth.sasl.password", "from-secret:"+p.sasl.secret+"/"+p.sasl.passKey)
	} else {
		expect(kafka+".auth.sasl", nil)
	}
}

// checkRBAC: the agent's only permission is to list and watch pods (k8s_attributes and the
// prometheus receiver's pod discovery), bound to the agent's ServiceAccount alone.
func checkRBAC(t *testing.T, r renderedObjects) {
	t.Helper()
	if len(r["Role"])+len(r["RoleBinding"]) != 0 {
		t.Errorf("unexpected namespaced RBAC: %v %v", sortedKeys(r["Role"]), sortedKeys(r["RoleBinding"]))
	}
	for _, cr := range r["ClusterRole"] {
		rules, _, _ := unstructured.NestedSlice(cr.Object, "rules")
		if got := fmt.Sprint(rules); got != "[map[apiGroups:[] resources:[pods] verbs:[list watch]]]" {
			t.Errorf("ClusterRole %s rules %s, want list and watch on pods only", cr.GetName(), got)
		}
	}
	agentSA := r.byComponent("ServiceAccount", "agent")
	for _, crb := range r["ClusterRoleBinding"] {
		subjects, _, _ := unstructured.NestedSlice(crb.Object, "subjects")
		ref, _, _ := unstructured.NestedString(crb.Object, "roleRef", "name")
		if agentSA == nil || len(subjects) != 1 || fmt.Sprint(subjects[0]) != fmt.Sprintf("map[kind:ServiceAccount name:%s namespace:%s]", agentSA.GetName(), chartNamespace) || r["ClusterRole"][ref] == nil {
			t.Errorf("ClusterRoleBinding %s binds %v to %s, want the agent's ServiceAccount to the release's ClusterRole", crb.GetName(), subjects, ref)
		}
	}
}

// checkDashboards: one ConfigMap per deploy/dashboards/*.json, labelled for the Grafana sidecar,
// holding the file unchanged.
func checkDashboards(t *testing.T, r renderedObjects, files []string) {
	t.Helper()
	found := 0
	for _, cm := range r["ConfigMap"] {
		if cm.GetLabels()["grafana_dashboard"] != "1" {
			continue
		}
		found++
		data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
		for k, v := range data {
			want, err := os.ReadFile(filepath.Join(filepath.Dir(files[0]), k))
			if err != nil {
				t.Errorf("dashboard ConfigMap %s: key %s is not a file of deploy/dashboards: %v", cm.GetName(), k, err)
				continue
			}
			if strings.TrimSpace(v) != strings.TrimSpace(string(want)) {
				t.Errorf("dashboard ConfigMap %s: %s differs from deploy/dashboards/%s", cm.GetName(), k, k)
			}
		}
	}
	if found != len(files) {
		t.Errorf("%d dashboard ConfigMaps labelled grafana_dashboard=1, want %d (deploy/dashboards/*.json)", found, len(files))
	}
}

// checkMonitoring: a ServiceMonitor per tier selecting exactly that tier's Service, and one
// PrometheusRule holding every group of the rule files in deploy/alerts.
func checkMonitoring(t *testing.T, r renderedObjects, ruleGroups []any) {
	t.Helper()
	for _, sm := range r["ServiceMonitor"] {
		tier := sm.GetLabels()["app.kubernetes.io/component"]
		svc := r.byComponent("Service", tier)
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		if svc == nil || len(sel) == 0 {
			t.Errorf("ServiceMonitor %s selects %v; the %s Service is %v", sm.GetName(), sel, tier, svc)
			continue
		}
		for k, v := range sel {
			if svc.GetLabels()[k] != v {
				t.Errorf("ServiceMonitor %s selector %v does not match Service %s", sm.GetName(), sel, svc.GetName())
			}
		}
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		svcPorts, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		for _, e := range endpoints {
			port := e.(map[string]any)["port"]
			if !slices.ContainsFunc(svcPorts, func(p any) bool { return p.(map[string]any)["name"] == port }) {
				t.Errorf("ServiceMonitor %s scrapes port %v, which Service %s does not have", sm.GetName(), port, svc.GetName())
			}
		}
	}
	if len(ruleGroups) == 0 {
		return
	}
	for _, pr := range r["PrometheusRule"] {
		groups, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
		if fmt.Sprint(groups) != fmt.Sprint(ruleGroups) {
			t.Errorf("PrometheusRule %s groups differ from the rule files of deploy/alerts", pr.GetName())
		}
	}
}

// alertRuleGroups: the groups of the Prometheus rule files in deploy/alerts (YAML files with a
// top-level groups key), in file name order.
func alertRuleGroups(t *testing.T, root string) []any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(root, "deploy", "alerts", "*.yaml"))
	sort.Strings(files)
	var groups []any
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			continue // not a single YAML document: not a rule file
		}
		if g, ok := doc["groups"].([]any); ok {
			groups = append(groups, g...)
		}
	}
	return groups
}

// TestHelmChartRejectsWrongValues: a wrong value fails `helm template` with a message naming it.
func TestHelmChartRejectsWrongValues(t *testing.T) {
	h := newHelm(t)
	ctx := ctxTimeout(t, 2*time.Minute)
	for _, tc := range []struct{ set, want string }{
		{"gateway.replicas=0", "at '/gateway/replicas': minimum: got 0, want 1"},
		{"gatway.replicas=2", "additional properties 'gatway' not allowed"},
		{"sampling.baselinePercent=150", "at '/sampling/baselinePercent': maximum: got 150, want 100"},
		{"sampling.decisionWait=ten", "at '/sampling/decisionWait'"},
		{"kafka.brokers=kafka", "at '/kafka/brokers': got string, want array"},
		{"kafka.brokers[0]=kafka", "at '/kafka/brokers/0'"},
		{"kafka.sasl.mechanism=MD5", "at '/kafka/sasl/mechanism': value must be one of 'PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'"},
		// Secrets are never values.
		{"kafka.sasl.password=hunter2", "at '/kafka/sasl': additional properties 'password' not allowed"},
		{"tracesBackend.endpoint=http://jaeger:4317", "at '/tracesBackend/endpoint'"},
		{"image.digest=latest", "at '/image/digest'"},
		{"gateway.persistentQueue.volume=hostPath", "at '/gateway/persistentQueue/volume'"},
		{"gateway.resources.limits=null", "at '/gateway/resources'"},
		// Rules across values, from the templates.
		{"gateway.replicas=3", "gateway.replicas > 1 and gateway.autoscaling.enabled need sampler.enabled=true"},
		{"gateway.autoscaling.enabled=true", "gateway.replicas > 1 and gateway.autoscaling.enabled need sampler.enabled=true"},
		{"kafka.tls.enabled=true", "kafka.tls.enabled=true needs kafka.tls.secretName"},
		{"kafka.sasl.enabled=true", "kafka.sasl.enabled=true needs kafka.sasl.secretName"},
		{"kafka.tls.enabled=true,kafka.tls.secretName=s,kafka.tls.certKey=tls.crt", "kafka.tls.certKey and kafka.tls.keyKey go together"},
		{"gateway.memoryLimiter.spikeLimitMiB=2000", "gateway.memoryLimiter.spikeLimitMiB (2000) must be below gateway.memoryLimiter.limitMiB (1536)"},
		{"sampler.enabled=true,sampler.replicas=8,kafka.spansTopicPartitions=6", "kafka.spansTopicPartitions is 6"},
		{"sampler.enabled=true,gateway.replicas=2,gateway.persistentQueue.volume=persistentVolumeClaim", "gateway.persistentQueue.volume=persistentVolumeClaim is one ReadWriteOnce claim"},
		{"gateway.podDisruptionBudget.enabled=true,gateway.podDisruptionBudget.maxUnavailable=1", "gateway.podDisruptionBudget: set exactly one of minAvailable and maxUnavailable"},
		{"gateway.persistentQueue.sizeLimit=2G", `gateway.persistentQueue.sizeLimit: "2G" is not a size this chart understands: use a whole number with Ki, Mi, Gi or Ti (e.g. 2Gi)`},
		{"otlp.tls.enabled=true", "otlp.tls.enabled=true needs otlp.tls.secretName"},
		{"otlp.bearerToken.enabled=true,otlp.bearerToken.secretName=t", "otlp.bearerToken.enabled=true needs otlp.tls.enabled=true"},
		{"otlp.tls.enabled=true,otlp.tls.secretName=s,otlp.bearerToken.enabled=true", "otlp.bearerToken.enabled=true needs otlp.bearerToken.secretName"},
		{"otlp.tls.enabled=true,otlp.tls.secretName=s,otlp.tls.clientCAKey=ca.crt,agent.enabled=true", "otlp.tls.clientCAKey (mutual TLS) with agent.enabled=true needs otlp.tls.agentSecretName"},
		// Secrets are never values.
		{"otlp.bearerToken.token=hunter2", "at '/otlp/bearerToken': additional properties 'token' not allowed"},
	} {
		out, err := h.Run(ctx, "template", chartRelease, chartDir, "--set", tc.set)
		if err == nil {
			t.Errorf("--set %s rendered (%d bytes), want an error naming it", tc.set, len(out))
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: error\n%v\nwant it to contain %q", tc.set, err, tc.want)
		}
	}
}

// TestHelmChartOnAPIServer: a real kube-apiserver, with the generated prometheus-operator CRDs,
// validates every object of every profile (server-side dry-run create with strict field
// validation); then the chart is installed, upgraded and uninstalled with helm itself, and a
// wrong value fails the install.
func TestHelmChartOnAPIServer(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	tools := harness.MustTools(t)
	h := newHelm(t)
	kube := harness.StartKube(t, harness.WithCRDs(filepath.Join(tools.RepoRoot, "deploy", "crds")))
	c := kube.Client
	ctx := ctxTimeout(t, 4*time.Minute)
	for _, ns := range []string{chartNamespace, "monitoring"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("dry-run", func(t *testing.T) {
		for _, p := range chartProfiles {
			objs := h.render(ctx, t, p)
			for _, o := range objs {
				if err := c.Create(ctx, o.DeepCopy(), client.DryRunAll, client.FieldValidation("Strict")); err != nil {
					t.Errorf("%s: the API server rejects %s %s: %v", p.name, o.GetKind(), o.GetName(), err)
				}
			}
			if _, err := readBack(ctx, c, objs[0]); !apierrors.IsNotFound(err) {
				t.Errorf("%s: a dry-run object was persisted (get: %v)", p.name, err)
			}
		}
		// The check has teeth: a misspelt field is rejected.
		bad := h.render(ctx, t, chartProfiles[0])
		for _, o := range bad {
			if o.GetKind() != "Deployment" {
				continue
			}
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			containers[0].(map[string]any)["securityContext"].(map[string]any)["readOnlyRootFileSystem"] = true
			_ = unstructured.SetNestedSlice(o.Object, containers, "spec", "template", "spec", "containers")
			err := c.Create(ctx, o, client.DryRunAll, client.FieldValidation("Strict"))
			if err == nil || !strings.Contains(err.Error(), "readOnlyRootFileSystem") {
				t.Errorf("a Deployment with a misspelt field: got %v, want a strict-validation error naming it", err)
			}
		}
	})

	t.Run("install-upgrade-uninstall", func(t *testing.T) {
		kubeconfig := kubeconfigFor(t, kube)
		const ns = "watchtower-install"
		install := func(verb string, extra ...string) error {
			args := append([]string{verb, chartRelease, chartDir, "--kubeconfig", kubeconfig, "--namespace", ns, "--timeout", "60s"}, extra...)
			_, err := h.Run(ctx, args...)
			return err
		}
		// A wrong value fails the install by name, and nothing is installed.
		if err := install("install", "--create-namespace", "--set", "sampling.slowThresholdMs=-5"); err == nil || !strings.Contains(err.Error(), "at '/sampling/slowThresholdMs'") {
			t.Fatalf("install with sampling.slowThresholdMs=-5: got %v, want an error naming it", err)
		}
		if out, err := h.Run(ctx, "list", "--kubeconfig", kubeconfig, "--namespace", ns, "--all", "-q"); err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("after the failed install, releases %q (%v), want none", out, err)
		}

		if err := install("install", "--create-namespace", "-f", profileValues(chartProfiles[0])); err != nil {
			t.Fatal(err)
		}
		gw := &unstructured.Unstructured{}
		gw.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"})
		gw.SetNamespace(ns)
		gw.SetName(chartRelease + "-otelcol-watchtower-gateway")
		before, err := readBack(ctx, c, gw)
		if err != nil {
			t.Fatalf("the gateway Deployment after install: %v", err)
		}
		// Installed against a server that serves monitoring.coreos.com/v1, helm renders the
		// ServiceMonitor and the PrometheusRule by itself.
		mustExist(ctx, t, c, ns, "monitoring.coreos.com/v1", "ServiceMonitor", chartRelease+"-otelcol-watchtower-gateway")
		if len(alertRuleGroups(t, tools.RepoRoot)) > 0 {
			mustExist(ctx, t, c, ns, "monitoring.coreos.com/v1", "PrometheusRule", chartRelease+"-otelcol-watchtower")
		}

		if err := install("upgrade", "-f", filepath.Join(chartDir, "ci", "scaled-values.yaml")); err != nil {
			t.Fatal(err)
		}
		for kind, name := range map[string]string{"DaemonSet": "agent", "Deployment": "sampler"} {
			mustExist(ctx, t, c, ns, "apps/v1", kind, chartRelease+"-otelcol-watchtower-"+name)
		}
		mustExist(ctx, t, c, ns, "autoscaling/v2", "HorizontalPodAutoscaler", chartRelease+"-otelcol-watchtower-gateway")
		after, err := readBack(ctx, c, gw)
		if err != nil {
			t.Fatal(err)
		}
		// The gateway's config changed (it hands sampling to the sampler tier): its pods roll.
		sum := func(o *unstructured.Unstructured) string {
			s, _, _ := unstructured.NestedString(o.Object, "spec", "template", "metadata", "annotations", "checksum/config")
			return s
		}
		if sum(before) == "" || sum(before) == sum(after) {
			t.Errorf("checksum/config of the gateway pods %q before the upgrade, %q after: want a change", sum(before), sum(after))
		}

		if _, err := h.Run(ctx, "uninstall", chartRelease, "--kubeconfig", kubeconfig, "--namespace", ns, "--timeout", "60s"); err != nil {
			t.Fatal(err)
		}
		if _, err := readBack(ctx, c, gw); !apierrors.IsNotFound(err) {
			t.Errorf("the gateway Deployment after uninstall: %v, want NotFound", err)
		}
	})
}

func readBack(ctx context.Context, c client.Client, o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(o.GroupVersionKind())
	err := c.Get(ctx, client.ObjectKey{Namespace: o.GetNamespace(), Name: o.GetName()}, got)
	return got, err
}

func mustExist(ctx context.Context, t *testing.T, c client.Client, ns, apiVersion, kind, name string) {
	t.Helper()
	o := &unstructured.Unstructured{}
	o.SetAPIVersion(apiVersion)
	o.SetKind(kind)
	o.SetNamespace(ns)
	o.SetName(name)
	if _, err := readBack(ctx, c, o); err != nil {
		t.Errorf("%s %s/%s: %v", kind, ns, name, err)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedCounts(m map[string]int) []string {
	var out []string
	for _, k := range sortedKeys(m) {
		if m[k] != 0 {
			out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
		}
	}
	return out
}

// TestHelmChartAgentRBACSufficesForK8sAttributes runs the agent's config (the chart's copy) with
// the built collector against a real API server, authenticated as the agent's ServiceAccount
// with nothing but the chart's rendered ClusterRole and ClusterRoleBinding: k8s_attributes must
// attach the sending pod's metadata without a single refused request, and the ServiceAccount
// must not be able to do more than list and watch pods. (The prometheus receiver's pod
// discovery only works in a cluster, with the in-cluster configuration, so it is not exercised
// here; it lists and watches pods too.)
func TestHelmChartAgentRBACSufficesForK8sAttributes(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	tools := harness.MustTools(t)
	h := newHelm(t)
	kube := harness.StartKube(t)
	c := kube.Client
	ctx := ctxTimeout(t, 3*time.Minute)

	var scaled chartProfile
	for _, p := range chartProfiles {
		if p.name == "scaled" {
			scaled = p
		}
	}
	r := indexObjects(h.render(ctx, t, scaled))
	for _, ns := range []string{chartNamespace, "apps"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	sa := r.byComponent("ServiceAccount", "agent")
	for _, o := range []*unstructured.Unstructured{sa, r.byComponent("ClusterRole", "agent"), r.byComponent("ClusterRoleBinding", "agent")} {
		if o == nil {
			t.Fatal("the scaled profile renders no agent ServiceAccount, ClusterRole or ClusterRoleBinding")
		}
		if err := c.Create(ctx, o.DeepCopy()); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}

	// A pod of Deployment "web" on node-0, with the IP the span will come from.
	const podIP, node = "10.1.2.3", "node-0"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "web-7c9f8d6b5d-x2x4q",
			Labels: map[string]string{"pod-template-hash": "7c9f8d6b5d"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7c9f8d6b5d",
				UID: "0b0f4c4e-7a51-4a0e-9f0a-1d3e5c7b9a11", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: podIP, PodIPs: []corev1.PodIP{{IP: podIP}}}
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}

	// Authenticate as the ServiceAccount: a client certificate for its user name is what RBAC
	// sees for a ServiceAccount token.
	user, err := kube.Env.ControlPlane.AddUser(envtest.User{
		Name:   fmt.Sprintf("system:serviceaccount:%s:%s", sa.GetNamespace(), sa.GetName()),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.GetNamespace(), "system:authenticated"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	saClient, err := client.New(user.Config(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var pods corev1.PodList
	if err := saClient.List(ctx, &pods); err != nil {
		t.Fatalf("the agent's ServiceAccount cannot list pods: %v", err)
	}
	for what, err := range map[string]error{
		"get a pod":        saClient.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}),
		"list namespaces":  saClient.List(ctx, &corev1.NamespaceList{}),
		"list secrets":     saClient.List(ctx, &corev1.SecretList{}),
		"list nodes":       saClient.List(ctx, &corev1.NodeList{}),
		"delete a pod":     saClient.Delete(ctx, pod.DeepCopy(), client.DryRunAll),
		"list config maps": saClient.List(ctx, &corev1.ConfigMapList{}),
	} {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the agent's ServiceAccount can %s (err %v): want Forbidden", what, err)
		}
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	sink := newResourceSink(t)
	agent := harness.StartCollector(t, "otelcol-agent", filepath.Join(tools.RepoRoot, chartDir, "files", "collector", "agent.yaml"), map[string]string{
		"KUBE_NODE_NAME":              node,
		"KUBECONFIG":                  kubeconfig,
		"WATCHTOWER_K8S_AUTH_TYPE":    "kubeConfig",
		"WATCHTOWER_GATEWAY_ENDPOINT": sink.endpoint,
	})

	// Spans claiming the pod's IP (pod association by k8s.pod.ip) until one arrives decorated:
	// the pod informer needs a moment to sync after the start.
	conn, err := grpc.NewClient(agent.OTLPGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	exporter := coltracepb.NewTraceServiceClient(conn)
	want := map[string]string{"k8s.pod.name": pod.Name, "k8s.namespace.name": "apps", "k8s.deployment.name": "web", "k8s.node.name": node,
		"k8s.pod.uid": string(mustGetUID(ctx, t, c, pod))}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; ; i++ {
		req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
				{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "web"}}},
				{Key: "k8s.pod.ip", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: podIP}}},
			}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
				TraceId: bytes.Repeat([]byte{byte(i + 1)}, 16), SpanId: bytes.Repeat([]byte{byte(i + 1)}, 8), Name: "reconcile web",
				StartTimeUnixNano: uint64(time.Now().UnixNano()), EndTimeUnixNano: uint64(time.Now().UnixNano()),
			}}}},
		}}}
		if _, err := exporter.Export(ctx, req); err != nil {
			t.Fatalf("export to the agent: %v", err)
		}
		if got, ok := sink.waitDecorated(ctx, 500*time.Millisecond, want); ok {
			t.Logf("the agent attached %v", got)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span arrived with %v; last resources %v\n%s", want, sink.last(), agent.Process().LogTail(8<<10))
		}
	}
	if log := agent.Process().LogTail(256 << 10); strings.Contains(log, "forbidden") {
		t.Errorf("the agent was refused by the API server:\n%s", log)
	}
}

func mustGetUID(ctx context.Context, t *testing.T, c client.Client, pod *corev1.Pod) types.UID {
	t.Helper()
	var p corev1.Pod
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
		t.Fatal(err)
	}
	return p.UID
}

// resourceSink is an OTLP/gRPC trace receiver that keeps the resource attributes of what it
// receives (harness.OTLPSink keeps only service.name).
type resourceSink struct {
	coltracepb.UnimplementedTraceServiceServer
	endpoint  string
	mu        sync.Mutex
	resources []map[string]string
	changed   chan struct{}
}

func newResourceSink(t *testing.T) *resourceSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &resourceSink{endpoint: l.Addr().String(), changed: make(chan struct{})}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, s)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return s
}

func (s *resourceSink) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		attrs := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			attrs[kv.Key] = kv.GetValue().GetStringValue()
		}
		s.resources = append(s.resources, attrs)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (s *resourceSink) last() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.resources) == 0 {
		return nil
	}
	return s.resources[len(s.resources)-1]
}

// waitDecorated waits up to d for a received resource carrying every attribute of want.
func (s *resourceSink) waitDecorated(ctx context.Context, d time.Duration, want map[string]string) (map[string]string, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		for _, r := range s.resources {
			ok := true
			for k, v := range want {
				ok = ok && r[k] == v
			}
			if ok {
				s.mu.Unlock()
				return r, true
			}
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}
