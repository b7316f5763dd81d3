// Package render turns a Watchtower into the Kubernetes objects of its collectors by rendering
// GoWatchtower's Helm chart (deploy/helm/otelcol-watchtower) with values derived from the spec,
// as `helm template` would. The chart stays the one definition of a collector deployment: its
// pipeline configs, environment, probes, security contexts, NetworkPolicies and config-hash
// annotations are the same whether Helm or the operator installs them.
package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/ignore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/gowatchtower/watchtower/deploy"
	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// Labels the operator puts on everything it creates, to find it again (pruning, deletion).
const (
	// LabelWatchtower is the name of the Watchtower an object belongs to.
	LabelWatchtower = "observability.gowatchtower.io/watchtower"
	// LabelWatchtowerNamespace is the namespace of that Watchtower.
	LabelWatchtowerNamespace = "observability.gowatchtower.io/watchtower-namespace"
	// ManagedBy is the app.kubernetes.io/managed-by value of the operator's objects.
	ManagedBy = "watchtower-operator"
)

// Options are what the spec does not say: which collector image, and what the cluster serves.
type Options struct {
	// ImageRepository and ImageTag of otelcol-watchtower; an empty tag is the chart's appVersion.
	ImageRepository, ImageTag string
	// APIVersions the cluster serves ("group/version" and "group/version/Kind"), as Helm's
	// .Capabilities.APIVersions: the chart creates ServiceMonitors and PrometheusRules only when
	// monitoring.coreos.com/v1 is among them.
	APIVersions []string
}

// Result is a rendered Watchtower.
type Result struct {
	// Objects in the order they are applied: configuration and RBAC before the workloads.
	Objects []*unstructured.Unstructured
	// ConfigHash identifies the collectors' pod templates, configuration and environment: it
	// changes exactly when the collectors roll.
	ConfigHash string
}

var loadChart = sync.OnceValues(func() (*chart.Chart, error) { return loadFS(deploy.Chart()) })

// Render renders the chart for wt.
func Render(wt *v1alpha1.Watchtower, opts Options) (*Result, error) {
	c, err := loadChart()
	if err != nil {
		return nil, fmt.Errorf("loading the chart %s: %w", deploy.ChartDir, err)
	}
	vals, err := Values(wt, opts)
	if err != nil {
		return nil, err
	}
	caps := common.DefaultCapabilities.Copy()
	caps.APIVersions = append(slices.Clone(caps.APIVersions), opts.APIVersions...)
	top, err := chartutil.ToRenderValues(c, vals, common.ReleaseOptions{Name: wt.Name, Namespace: wt.Namespace, IsInstall: true, Revision: 1}, caps)
	if err != nil {
		return nil, fmt.Errorf("the chart refused the values of Watchtower %s/%s: %w", wt.Namespace, wt.Name, err)
	}
	// app.kubernetes.io/managed-by says who owns the objects: this operator, not Helm.
	top["Release"].(map[string]any)["Service"] = ManagedBy
	files, err := engine.Render(c, top)
	if err != nil {
		return nil, fmt.Errorf("rendering the chart for Watchtower %s/%s: %w", wt.Namespace, wt.Name, err)
	}
	objs, err := decode(files)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	// The hash of every collector pod template: what makes the collectors roll when it changes
	// (their configuration files and their environment alike).
	h := sha256.New()
	for _, o := range objs {
		labels := o.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelWatchtower] = wt.Name
		labels[LabelWatchtowerNamespace] = wt.Namespace
		o.SetLabels(labels)
		switch o.GetKind() {
		case "Deployment", "StatefulSet", "DaemonSet":
			tmpl, _, _ := unstructured.NestedMap(o.Object, "spec", "template")
			b, err := json.Marshal(tmpl) // map keys sorted: stable
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(h, "%s/%s=", o.GetKind(), o.GetName())
			h.Write(b)
		}
	}
	res.ConfigHash = hex.EncodeToString(h.Sum(nil)[:8])
	sort.SliceStable(objs, func(i, j int) bool { return applyOrder(objs[i]) < applyOrder(objs[j]) })
	res.Objects = objs
	return res, nil
}

// Values are the chart values of wt: the chart's defaults with what the spec decides.
func Values(wt *v1alpha1.Watchtower, opts Options) (map[string]any, error) {
	s := wt.Spec
	field := func(f string, err error) error {
		return fmt.Errorf("watchtower %s/%s: %s: %w", wt.Namespace, wt.Name, f, err)
	}

	spans, metrics := s.Kafka.SpansTopic(), s.Kafka.MetricsTopic()
	kafka := map[string]any{
		"brokers":              s.Kafka.Brokers,
		"spansTopic":           spans.Name,
		"metricsTopic":         metrics.Name,
		"spansTopicPartitions": spans.Partitions,
	}
	if t := s.Kafka.TLS; t != nil {
		kafka["tls"] = map[string]any{
			"enabled": true, "secretName": t.SecretName, "caKey": t.CAKeyOrDefault(),
			"certKey": t.CertKey, "keyKey": t.KeyKey, "serverName": t.ServerName,
		}
	}
	if a := s.Kafka.SASL; a != nil {
		kafka["sasl"] = map[string]any{
			"enabled": true, "mechanism": a.MechanismOrDefault(), "secretName": a.SecretName,
			"usernameKey": a.UsernameKeyOrDefault(), "passwordKey": a.PasswordKeyOrDefault(),
		}
	}

	sampling := map[string]any{}
	if d := s.Sampling.SlowThreshold; d != nil {
		sampling["slowThresholdMs"] = d.Milliseconds()
	}
	if p := s.Sampling.BaselinePercent; p != "" {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 100 {
			return nil, field("spec.sampling.baselinePercent", fmt.Errorf("%q is not a percentage from 0 to 100", p))
		}
		sampling["baselinePercent"] = f
	}
	if d := s.Sampling.DecisionWait; d != nil {
		sampling["decisionWait"] = d.Duration.String()
	}

	gateway := map[string]any{}
	if s.Gateway.Replicas != nil {
		gateway["replicas"] = *s.Gateway.Replicas
	}
	withResources(gateway, s.Gateway.Resources)
	// Several replicas: a voluntary disruption (a node drain) takes one at a time. The chart's
	// defaults keep one gateway available and let one sampler go.
	if s.Gateway.Replicas != nil && *s.Gateway.Replicas > 1 {
		gateway["podDisruptionBudget"] = map[string]any{"enabled": true}
	}
	sampler := map[string]any{"enabled": s.Sampler.Enabled}
	if s.Sampler.Replicas != nil {
		sampler["replicas"] = *s.Sampler.Replicas
	}
	withResources(sampler, s.Sampler.Resources)
	if s.Sampler.Replicas != nil && *s.Sampler.Replicas > 1 {
		sampler["podDisruptionBudget"] = map[string]any{"enabled": true}
	}

	// The NetworkPolicies' egress: the ports of the brokers and of the backend, whatever they are.
	var kafkaPorts []int
	for i, b := range s.Kafka.Brokers {
		p, err := port(b)
		if err != nil {
			return nil, field(fmt.Sprintf("spec.kafka.brokers[%d]", i), err)
		}
		if !slices.Contains(kafkaPorts, p) {
			kafkaPorts = append(kafkaPorts, p)
		}
	}
	backendPort, err := port(s.TracesBackend.Endpoint)
	if err != nil {
		return nil, field("spec.tracesBackend.endpoint", err)
	}
	netpol := map[string]any{"egress": map[string]any{"kafkaPorts": kafkaPorts, "tracesBackendPorts": []int{backendPort}}}
	if len(s.ServedNamespaces) > 0 {
		netpol["otlpFrom"] = []any{map[string]any{"namespaceSelector": map[string]any{"matchExpressions": []any{
			map[string]any{"key": "kubernetes.io/metadata.name", "operator": "In", "values": s.ServedNamespaces},
		}}}}
	}

	image := map[string]any{"repository": orDefault(opts.ImageRepository, "gowatchtower/otelcol-watchtower")}
	if opts.ImageTag != "" {
		image["tag"] = opts.ImageTag
	}
	v := map[string]any{
		"fullnameOverride": wt.Name,
		"image":            image,
		"kafka":            kafka,
		"tracesBackend":    map[string]any{"endpoint": s.TracesBackend.Endpoint, "insecure": s.TracesBackend.Insecure},
		"sampling":         sampling,
		"gateway":          gateway,
		"sampler":          sampler,
		"agent":            map[string]any{"enabled": s.Agent.Enabled},
		"networkPolicy":    netpol,
		"serviceMonitor":   map[string]any{"enabled": isTrue(s.Prometheus.ServiceMonitors)},
		"prometheusRule":   map[string]any{"enabled": isTrue(s.Prometheus.PrometheusRules)},
		"dashboards":       map[string]any{"enabled": isTrue(s.Dashboards.ConfigMaps)},
	}
	// Through JSON, as values read from YAML: numbers, lists and the resource quantities in the
	// types the chart's schema and templates expect.
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// GatewayService is the name of the gateway's Service for a Watchtower (the chart's
// "<fullname>-gateway").
func GatewayService(wt *v1alpha1.Watchtower) string { return truncName(wt.Name, 54) + "-gateway" }

func truncName(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.TrimSuffix(s, "-")
}

// withResources sets a tier's resources and, from its memory limit, its memory limiter as the
// chart's defaults have it (2Gi → 1536 MiB, spike 384 MiB): the limiter at 75 % of the limit,
// the spike at a quarter of that, so the collector refuses data before the kernel kills it.
func withResources(tier map[string]any, r *corev1.ResourceRequirements) {
	if r == nil {
		return
	}
	tier["resources"] = r
	if mem, ok := r.Limits[corev1.ResourceMemory]; ok && mem.Value() > 0 {
		limit := mem.Value() * 3 / 4 >> 20
		tier["memoryLimiter"] = map[string]any{"limitMiB": limit, "spikeLimitMiB": limit / 4}
	}
}

func isTrue(b *bool) bool { return b == nil || *b }

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func port(hostport string) (int, error) {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, fmt.Errorf("%q is not host:port: %w", hostport, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q: the port %q is not a number from 1 to 65535", hostport, p)
	}
	return n, nil
}

// applyOrder puts what the workloads mount or run as first.
func applyOrder(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "ServiceAccount", "ConfigMap", "Secret":
		return 0
	case "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding":
		return 1
	case "Service", "NetworkPolicy", "PersistentVolumeClaim":
		return 2
	case "Deployment", "StatefulSet", "DaemonSet":
		return 3
	default:
		return 4
	}
}

// decode splits the rendered templates into objects, in a stable order; NOTES.txt and partials
// are not objects.
func decode(files map[string]string) ([]*unstructured.Unstructured, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		if strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var objs []*unstructured.Unstructured
	for _, name := range names {
		d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(files[name]), 4096)
		for {
			var raw json.RawMessage
			if err := d.Decode(&raw); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("the chart's %s rendered an object that is not YAML: %w", name, err)
			}
			if len(raw) == 0 || string(raw) == "null" || string(raw) == "{}" {
				continue
			}
			// Through the unstructured JSON scheme: integers stay integers.
			o := &unstructured.Unstructured{}
			if err := o.UnmarshalJSON(raw); err != nil {
				return nil, fmt.Errorf("the chart's %s rendered an object that is not a Kubernetes object: %w", name, err)
			}
			if o.GetKind() == "" || o.GetName() == "" {
				return nil, fmt.Errorf("the chart's %s rendered an object without kind or name", name)
			}
			objs = append(objs, o)
		}
	}
	return objs, nil
}

// loadFS loads a chart from a file system as `helm` loads a chart directory: .helmignore applies.
func loadFS(fsys fs.FS) (*chart.Chart, error) {
	rules := ignore.Empty()
	if b, err := fs.ReadFile(fsys, ignore.HelmIgnore); err == nil {
		if rules, err = ignore.Parse(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("%s: %w", ignore.HelmIgnore, err)
		}
	}
	rules.AddDefaults()
	var files []*archive.BufferedFile
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if rules.Ignore(p, fi) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: path.Clean(p), Data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return loader.LoadFiles(files)
}
