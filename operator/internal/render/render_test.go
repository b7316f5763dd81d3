package render

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

func watchtower() *v1alpha1.Watchtower {
	return &v1alpha1.Watchtower{
		ObjectMeta: metav1.ObjectMeta{Name: "pipeline", Namespace: "observability"},
		Spec: v1alpha1.WatchtowerSpec{
			Kafka: v1alpha1.KafkaSpec{
				Brokers: []string{"kafka-0.kafka:9093", "kafka-1.kafka:9093"},
				Topics: &v1alpha1.KafkaTopics{
					Spans:   &v1alpha1.KafkaTopic{Name: "otlp_spans", Partitions: 3},
					Metrics: &v1alpha1.KafkaTopic{Name: "otlp_metrics", Partitions: 1},
				},
			},
			TracesBackend: v1alpha1.TracesBackendSpec{Endpoint: "jaeger-collector.tracing:4317", Insecure: true},
			Sampling: v1alpha1.SamplingSpec{
				SlowThreshold:   &metav1.Duration{Duration: 1500 * time.Millisecond},
				BaselinePercent: "0.5",
				DecisionWait:    &metav1.Duration{Duration: 10 * time.Second},
			},
		},
	}
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	var have []string
	for _, o := range objs {
		have = append(have, o.GetKind()+"/"+o.GetName())
	}
	t.Fatalf("no %s %s rendered; rendered: %v", kind, name, have)
	return nil
}

func env(t *testing.T, dep *unstructured.Unstructured) map[string]string {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	out := map[string]string{}
	for _, e := range cs[0].(map[string]any)["env"].([]any) {
		m := e.(map[string]any)
		if v, ok := m["value"].(string); ok {
			out[m["name"].(string)] = v
		}
	}
	return out
}

// The spec reaches the collectors as the chart's values would: the pipeline config verbatim,
// the spec's brokers, topics, backend and sampling in the environment, the NetworkPolicy's
// egress on the spec's ports.
func TestRenderCarriesTheSpecIntoTheChart(t *testing.T) {
	res, err := Render(watchtower(), Options{ImageRepository: "gowatchtower/otelcol-watchtower", ImageTag: "0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	cm := find(t, res.Objects, "ConfigMap", "pipeline-gateway")
	want, err := os.ReadFile("../../../deploy/collector/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedString(cm.Object, "data", "gateway.yaml"); strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
		t.Errorf("the gateway's ConfigMap is not deploy/collector/gateway.yaml verbatim")
	}
	dep := find(t, res.Objects, "Deployment", "pipeline-gateway")
	e := env(t, dep)
	for k, v := range map[string]string{
		"WATCHTOWER_KAFKA_BROKERS":             "kafka-0.kafka:9093,kafka-1.kafka:9093",
		"WATCHTOWER_KAFKA_SPANS_TOPIC":         "otlp_spans",
		"WATCHTOWER_TRACES_ENDPOINT":           "jaeger-collector.tracing:4317",
		"WATCHTOWER_SLOW_THRESHOLD_MS":         "1500",
		"WATCHTOWER_SAMPLING_BASELINE_PERCENT": "0.5",
		"WATCHTOWER_SAMPLING_DECISION_WAIT":    "10s",
	} {
		if e[k] != v {
			t.Errorf("gateway env %s = %q, want %q", k, e[k], v)
		}
	}
	cs, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if img := cs[0].(map[string]any)["image"]; img != "gowatchtower/otelcol-watchtower:0.1.0" {
		t.Errorf("image %v", img)
	}
	np := find(t, res.Objects, "NetworkPolicy", "pipeline-gateway")
	b, _ := json.Marshal(np.Object["spec"])
	if !strings.Contains(string(b), `"port":9093`) || strings.Contains(string(b), `"port":9092`) {
		t.Errorf("the gateway's egress is not on the brokers' port 9093: %s", b)
	}
	for _, o := range res.Objects {
		l := o.GetLabels()
		if l[LabelWatchtower] != "pipeline" || l[LabelWatchtowerNamespace] != "observability" || l["app.kubernetes.io/managed-by"] != ManagedBy {
			t.Errorf("%s/%s labels %v", o.GetKind(), o.GetName(), l)
		}
		if o.GetKind() == "ServiceMonitor" || o.GetKind() == "PrometheusRule" {
			t.Errorf("%s rendered though the cluster does not serve monitoring.coreos.com/v1", o.GetKind())
		}
	}
}

// A tier's memory limit sets its memory limiter, as in the chart's defaults: the collector
// refuses data before the kernel kills it.
func TestMemoryLimiterFollowsTheLimit(t *testing.T) {
	wt := watchtower()
	wt.Spec.Gateway.Resources = &corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
	res, err := Render(wt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := env(t, find(t, res.Objects, "Deployment", "pipeline-gateway"))
	if e["WATCHTOWER_MEMORY_LIMIT_MIB"] != "768" || e["WATCHTOWER_MEMORY_SPIKE_LIMIT_MIB"] != "192" {
		t.Errorf("memory limiter %s/%s MiB for a 1Gi limit, want 768/192", e["WATCHTOWER_MEMORY_LIMIT_MIB"], e["WATCHTOWER_MEMORY_SPIKE_LIMIT_MIB"])
	}
}

// The same spec renders the same pods (an operator upgrade restarts nothing); a new slow
// threshold changes them (the collectors roll with it).
func TestConfigHashFollowsThePods(t *testing.T) {
	a, err := Render(watchtower(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Render(watchtower(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.ConfigHash == "" || a.ConfigHash != b.ConfigHash {
		t.Fatalf("the same spec hashed %q and %q", a.ConfigHash, b.ConfigHash)
	}
	wt := watchtower()
	wt.Spec.Sampling.SlowThreshold = &metav1.Duration{Duration: 2 * time.Second}
	c, err := Render(wt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ConfigHash == a.ConfigHash {
		t.Errorf("a new slow threshold kept the hash %q", a.ConfigHash)
	}
	wt.Spec.ServedNamespaces = []string{"team-a"}
	d, err := Render(wt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.ConfigHash != c.ConfigHash {
		t.Errorf("a NetworkPolicy change rolled the collectors: %q → %q", c.ConfigHash, d.ConfigHash)
	}
}

func TestMonitoringObjectsOnlyWhenServed(t *testing.T) {
	res, err := Render(watchtower(), Options{APIVersions: []string{"monitoring.coreos.com/v1"}})
	if err != nil {
		t.Fatal(err)
	}
	find(t, res.Objects, "ServiceMonitor", "pipeline-gateway")
	off := false
	wt := watchtower()
	wt.Spec.Prometheus.ServiceMonitors = &off
	res, err = Render(wt, Options{APIVersions: []string{"monitoring.coreos.com/v1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range res.Objects {
		if o.GetKind() == "ServiceMonitor" {
			t.Errorf("ServiceMonitor %s rendered with spec.prometheus.serviceMonitors=false", o.GetName())
		}
	}
}

func TestSamplerTier(t *testing.T) {
	wt := watchtower()
	two, three := int32(2), int32(3)
	wt.Spec.Gateway.Replicas = &two
	wt.Spec.Sampler = v1alpha1.SamplerSpec{Enabled: true, Replicas: &three}
	res, err := Render(wt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	find(t, res.Objects, "PodDisruptionBudget", "pipeline-gateway")
	find(t, res.Objects, "PodDisruptionBudget", "pipeline-sampler")
	s := find(t, res.Objects, "Deployment", "pipeline-sampler")
	if r, _, _ := unstructured.NestedInt64(s.Object, "spec", "replicas"); r != 3 {
		t.Errorf("sampler replicas %d", r)
	}
	// The chart's own rule, which the API's validation mirrors: more sampler replicas than
	// partitions sit idle.
	wt.Spec.Kafka.Topics.Spans.Partitions = 2
	if _, err := Render(wt, Options{}); err == nil || !strings.Contains(err.Error(), "spansTopicPartitions") {
		t.Errorf("3 sampler replicas on 2 partitions rendered: %v", err)
	}
}

// The operator's objects are `helm template`'s, but for the labels that say who manages them:
// the chart is the one definition of a collector deployment.
func TestRenderIsHelmTemplate(t *testing.T) {
	helm := helmBinary(t)
	wt := watchtower()
	wt.Spec.Sampler = v1alpha1.SamplerSpec{Enabled: true}
	wt.Spec.ServedNamespaces = []string{"team-a", "team-b"}
	opts := Options{ImageRepository: "gowatchtower/otelcol-watchtower", ImageTag: "0.1.0"}
	res, err := Render(wt, opts)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := Values(wt, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(vals)
	if err != nil {
		t.Fatal(err)
	}
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(helm, "template", wt.Name, "../../../deploy/helm/otelcol-watchtower", "--namespace", wt.Namespace, "-f", vf).CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	objs, err := decode(map[string]string{"all.yaml": string(out)})
	if err != nil {
		t.Fatal(err)
	}
	strip := func(o *unstructured.Unstructured) map[string]any {
		c := o.DeepCopy()
		l := c.GetLabels()
		delete(l, LabelWatchtower)
		delete(l, LabelWatchtowerNamespace)
		delete(l, "app.kubernetes.io/managed-by")
		c.SetLabels(l)
		unstructured.RemoveNestedField(c.Object, "spec", "template", "metadata", "labels", "app.kubernetes.io/managed-by")
		// The pods' checksum/config hashes the rendered ConfigMap, labels included; the
		// ConfigMaps themselves are compared.
		unstructured.RemoveNestedField(c.Object, "spec", "template", "metadata", "annotations", "checksum/config")
		return c.Object
	}
	if len(objs) != len(res.Objects) {
		t.Fatalf("helm template rendered %d objects, the operator %d", len(objs), len(res.Objects))
	}
	for _, h := range objs {
		o := find(t, res.Objects, h.GetKind(), h.GetName())
		if !reflect.DeepEqual(strip(h), strip(o)) {
			hb, _ := yaml.Marshal(strip(h))
			ob, _ := yaml.Marshal(strip(o))
			t.Errorf("%s %s differs from helm template's:\nhelm:\n%s\noperator:\n%s", h.GetKind(), h.GetName(), hb, ob)
		}
	}
}

// helmBinary is the pinned helm of the tool cache (make tools). Under CI it must be there.
func helmBinary(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("WATCHTOWER_TOOLS_DIR")
	if dir == "" {
		if c, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(c, "gowatchtower", "tools")
		}
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "helm-*", "helm"))
	if len(matches) == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no helm in the tool cache %s: run `make tools`", dir)
		}
		t.Skipf("no helm in the tool cache %s: run `make tools`", dir)
	}
	return matches[len(matches)-1]
}
