package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// The images the end-to-end cluster test runs: everything `make images` builds.
var e2eImages = []string{"pause", "otelcol-watchtower", "workload-operator", "stress-cpu", "memory-load", "nginx"}

const (
	e2eChartNS    = "observability"
	e2eOperatorNS = "workload-operator-system"
)

// TestClusterEndToEnd does what a platform team and an operator author do, in a real node with
// the images `make images` built: helm install the collector (gateway and agent DaemonSet),
// deploy the example operator with its own manifests and ServiceAccount, apply the sample
// Workloads, and follow the telemetry from the operator's pod through the agent (which adds the
// pod's Kubernetes metadata) and the gateway to Kafka, Prometheus and Jaeger; then helm upgrade
// and uninstall.
func TestClusterEndToEnd(t *testing.T) {
	tools := harness.MustTools(t)
	root := tools.RepoRoot
	images := clusterImages(t, e2eImages...)
	ctx := ctxTimeout(t, 15*time.Minute)

	// The API server traces every request to the agent on its node, like the operator does.
	tracing := filepath.Join(t.TempDir(), "apiserver-tracing.yaml")
	if err := os.WriteFile(tracing, []byte(fmt.Sprintf(
		"apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: %s:4317\nsamplingRatePerMillion: 1000000\n",
		harness.ClusterNodeIP)), 0o644); err != nil {
		t.Fatal(err)
	}
	c := harness.StartCluster(t, harness.WithClusterImages(images...), harness.WithClusterAPIServerFlag("tracing-config-file", tracing))
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := c.Kubectl(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// Kafka and Jaeger run beside the node, in its network, as they would outside a cluster.
	nodeNet := c.Network()
	kafka := harness.StartKafka(t, harness.WithKafkaNetwork(nodeNet))
	const spansTopic, metricsTopic, partitions = "otlp_spans", "otlp_metrics", 2
	kafka.CreateTopic(t, spansTopic, partitions)
	kafka.CreateTopic(t, metricsTopic, 1)
	jaeger := harness.StartJaeger(t, harness.WithJaegerNetwork(nodeNet))

	h := newHelm(t)
	values := writeE2EValues(t, kafka, jaeger, partitions)
	helm := func(args ...string) {
		t.Helper()
		args = append(args, "--kubeconfig", c.Kubeconfig, "--namespace", e2eChartNS)
		if _, err := h.run(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	helm("install", chartRelease, chartDir, "--create-namespace", "-f", values, "--wait", "--timeout", "3m")
	t.Logf("e2e: helm install --wait took %s", time.Since(start).Round(100*time.Millisecond))
	gatewayPods := waitPodsReady(t, ctx, c, e2eChartNS, "app.kubernetes.io/component=gateway", 1)
	waitPodsReady(t, ctx, c, e2eChartNS, "app.kubernetes.io/component=agent", 1)

	// The example operator as its users deploy it: its kustomize layout, its own ServiceAccount.
	kubectl("apply", "-k", filepath.Join(root, "examples/workload-operator/config/default"))
	kubectl("-n", e2eOperatorNS, "rollout", "status", "deployment/workload-operator", "--timeout=2m")
	opPods := waitPodsReady(t, ctx, c, e2eOperatorNS, "app.kubernetes.io/name=workload-operator", 1)
	opPod := opPods[0]
	if opPod.Spec.ServiceAccountName != "workload-operator" {
		t.Errorf("the operator runs as ServiceAccount %q, want its own workload-operator", opPod.Spec.ServiceAccountName)
	}
	kubectl("apply", "-f", filepath.Join(root, "examples/workload-operator/config/samples"))

	t.Run("workloads", func(t *testing.T) {
		for name, image := range map[string]string{"fast-nginx": "nginx", "cpu-burner": "stress-cpu", "slow-memory": "memory-load"} {
			pods := waitPodsReady(t, ctx, c, "default", "app.kubernetes.io/instance="+name, 0)
			if got := pods[0].Spec.Containers[0].Image; got != "gowatchtower/"+image+":0.1.0" {
				t.Errorf("%s runs image %s, want gowatchtower/%s:0.1.0", name, got, image)
			}
		}
		// The memory hog is killed by the kernel, visibly.
		waitFor(t, ctx, "memory-over-limit to be OOMKilled", func() (bool, error) {
			pods := listPods(t, ctx, c, "default", "app.kubernetes.io/instance=memory-over-limit")
			for _, p := range pods {
				for _, cs := range p.Status.ContainerStatuses {
					for _, term := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
						if term != nil && term.Reason == "OOMKilled" {
							return true, nil
						}
					}
				}
			}
			return false, fmt.Errorf("pods: %s", podStates(pods))
		})
		// nginx serves HTTP through the Service the operator made (kube-proxy's ClusterIP).
		svc := &corev1.Service{}
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "fast-nginx"}, svc); err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("http://%s:%d/", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+nodeNet.NetNS, "curl", "-sf", "--max-time", "5", url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "nginx") {
			t.Errorf("GET %s from the node: %v\n%s", url, err, out)
		}
	})

	t.Run("traces-in-jaeger", func(t *testing.T) {
		// A slow reconcile (slow-memory waits 1.5s) is kept by the tail sampler, with its API
		// calls as children, and carries the operator pod's real Kubernetes identity: the SDK
		// reads the Downward API, and the agent's k8s_attributes adds the Deployment.
		var tr harness.JaegerTrace
		waitFor(t, ctx, "a slow reconcile of slow-memory in Jaeger", func() (bool, error) {
			traces, err := jaeger.FindTraces(ctx, harness.TraceQuery{Service: "workload-operator", Operation: "reconcile workload",
				MinDuration: time.Second, Tags: map[string]string{"watchtower.object.name": "slow-memory"}, Limit: 5})
			if err != nil || len(traces) == 0 {
				return false, err
			}
			tr = traces[0]
			return true, nil
		})
		var rootSpan harness.JaegerSpan
		children := 0
		for _, s := range tr.Spans {
			if s.OperationName == "reconcile workload" && s.ParentSpanID() == "" {
				rootSpan = s
			}
		}
		for _, s := range tr.Spans {
			if rootSpan.SpanID != "" && s.ParentSpanID() == rootSpan.SpanID {
				children++
			}
		}
		if rootSpan.SpanID == "" || children == 0 {
			t.Fatalf("trace %s: root %q with %d children; want a reconcile root with its API calls as children", tr.TraceID, rootSpan.OperationName, children)
		}
		got := map[string]string{}
		for _, kv := range tr.Processes[rootSpan.ProcessID].Tags {
			got[kv.Key] = fmt.Sprint(kv.Value)
		}
		want := map[string]string{
			"k8s.pod.name": opPod.Name, "k8s.namespace.name": e2eOperatorNS, "k8s.node.name": c.Name,
			"k8s.pod.uid": string(opPod.UID), "k8s.deployment.name": "workload-operator",
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("the operator's spans have %s=%q, want %q (all: %v)", k, got[k], v, got)
			}
		}
		t.Logf("e2e: slow reconcile %s: %.1fs, %d API-call children", tr.TraceID, float64(rootSpan.Duration)/1e6, children)
	})

	t.Run("metrics-in-prometheus", func(t *testing.T) {
		// Prometheus scrapes the gateway's exporter through its Service, from the node.
		svc := &corev1.Service{}
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: e2eChartNS, Name: chartRelease + "-otelcol-watchtower-gateway"}, svc); err != nil {
			t.Fatal(err)
		}
		prom := harness.StartPrometheus(t, harness.WithPrometheusNetwork(nodeNet), harness.WithScrapeInterval(2*time.Second),
			harness.WithScrapeTarget("otelcol-watchtower", svc.Spec.ClusterIP+":8889", "/metrics"))
		// Staged, so that a failure says which link is missing: the scrape, the operator's
		// metrics, their pod identity.
		for _, q := range []string{
			`up{job="otelcol-watchtower"} == 1`,
			`watchtower_reconciles_total`,
			`target_info{k8s_pod_name!=""}`,
		} {
			qctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			_, err := prom.WaitForQuery(qctx, q, func(s []harness.Sample) bool { return len(s) > 0 })
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		// The operator dashboard's panels, as Grafana runs them against this Prometheus (the
		// operator's service.name is exported_job; the scrape job is the collector's).
		d := readDashboard(t, "operator-reconciles.json")
		vars := map[string]string{"datasource": "prometheus", "job": "otelcol-watchtower", "namespace": ".*", "controller": "workload", "__rate_interval": "1m", "__range": "5m"}
		for _, title := range []string{"Reconciles per second by result", "API calls per second by verb and code"} {
			for _, p := range d.Panels {
				if p.Title != title {
					continue
				}
				q, err := substitute(p.Targets[0].Expr, vars)
				if err != nil {
					t.Fatal(err)
				}
				qctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				if _, err := prom.WaitForQuery(qctx, q, func(s []harness.Sample) bool { return len(s) > 0 }); err != nil {
					t.Errorf("panel %q: %v", title, err)
				}
				cancel()
			}
		}
		// The same reconcile rate by pod: target_info carries the pod identity the SDK and the
		// agent's k8s_attributes gave the operator's resource.
		q := `sum by (k8s_pod_name, k8s_deployment_name, k8s_node_name) (rate(watchtower_reconciles_total[1m]) * on (exported_job, exported_instance) group_left (k8s_pod_name, k8s_deployment_name, k8s_node_name) target_info)`
		qctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		samples, err := prom.WaitForQuery(qctx, q, func(s []harness.Sample) bool { return len(s) > 0 })
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range samples {
			want := map[string]string{"k8s_pod_name": opPod.Name, "k8s_deployment_name": "workload-operator", "k8s_node_name": c.Name}
			for k, v := range want {
				if s.Metric[k] != v {
					t.Errorf("reconcile rate labelled %s=%q, want %q (%v)", k, s.Metric[k], v, s.Metric)
				}
			}
		}
	})

	// Exactly what enters the node's agent reaches Kafka: telemetrygen sends a known number of
	// spans to the agent's hostPort, under a service name nothing else uses.
	telemetrygen := tools.Path(t, "telemetrygen", "TELEMETRYGEN_VERSION", "telemetrygen")
	sendSpans := func(service string, traces int) int {
		t.Helper()
		const children = 4
		out, err := exec.CommandContext(ctx, telemetrygen, "traces", "--otlp-endpoint", harness.ClusterNodeIP+":4317", "--otlp-insecure",
			"--service", service, "--traces", strconv.Itoa(traces), "--child-spans", strconv.Itoa(children), "--rate", "500").CombinedOutput()
		if err != nil {
			t.Fatalf("telemetrygen: %v\n%s", err, out)
		}
		return traces * (1 + children)
	}
	countSpans := func(services ...string) map[string]int {
		t.Helper()
		recs, err := kafka.ReadAllRecords(ctx, spansTopic)
		if err != nil {
			t.Fatal(err)
		}
		tds, err := harness.DecodeTraces(recs)
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, td := range tds {
			for i := 0; i < td.ResourceSpans().Len(); i++ {
				rs := td.ResourceSpans().At(i)
				svc, _ := rs.Resource().Attributes().Get("service.name")
				for j := 0; j < rs.ScopeSpans().Len(); j++ {
					n[svc.AsString()] += rs.ScopeSpans().At(j).Spans().Len()
				}
			}
		}
		return n
	}
	waitCount := func(what string, want map[string]int) {
		t.Helper()
		var got map[string]int
		waitFor(t, ctx, what, func() (bool, error) {
			got = countSpans()
			for svc, n := range want {
				if got[svc] < n {
					return false, fmt.Errorf("%s: %d of %d spans in Kafka", svc, got[svc], n)
				}
			}
			return true, nil
		})
		// No more than sent either: wait a little for duplicates, then compare exactly.
		time.Sleep(3 * time.Second)
		got = countSpans()
		for svc, n := range want {
			if got[svc] != n {
				t.Errorf("%s: Kafka holds %d spans, want exactly the %d sent", svc, got[svc], n)
			}
		}
	}
	before := colUniqueService("e2e-before-upgrade")
	wantBefore := sendSpans(before, 200)
	waitCount("telemetrygen's spans in Kafka", map[string]int{before: wantBefore})
	if n := countSpans()["apiserver"]; n == 0 {
		t.Error("no span of the API server in Kafka: it traces to the agent on its node")
	}

	t.Run("helm-upgrade", func(t *testing.T) {
		// A changed sampling threshold is a changed collector config: the gateway pods roll,
		// and Kafka keeps everything it had.
		helm("upgrade", chartRelease, chartDir, "-f", values, "--set", "sampling.slowThresholdMs=2000", "--wait", "--timeout", "3m")
		newPods := waitPodsReady(t, ctx, c, e2eChartNS, "app.kubernetes.io/component=gateway", 1)
		if newPods[0].Name == gatewayPods[0].Name {
			t.Errorf("the gateway pod %s did not roll after a config change", newPods[0].Name)
		}
		after := colUniqueService("e2e-after-upgrade")
		wantAfter := sendSpans(after, 100)
		waitCount("spans from before and after the upgrade in Kafka", map[string]int{before: wantBefore, after: wantAfter})
	})

	t.Run("helm-uninstall", func(t *testing.T) {
		helm("uninstall", chartRelease, "--wait", "--timeout", "2m")
		// What stays is what docs/deploy.md says stays: the namespace the install created. The
		// pods take their grace period to go.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		waitFor(t, wctx, "the release's objects to be gone from "+e2eChartNS, func() (bool, error) {
			out := kubectl("get", "all,configmaps,secrets,serviceaccounts,networkpolicies,roles,rolebindings,pvc", "-n", e2eChartNS, "-o", "name")
			var left []string
			for _, l := range strings.Fields(out) {
				// Every namespace has these, whatever was installed in it.
				if l != "configmap/kube-root-ca.crt" && l != "serviceaccount/default" {
					left = append(left, l)
				}
			}
			return len(left) == 0, fmt.Errorf("still there: %v", left)
		})
		out := kubectl("get", "clusterroles,clusterrolebindings", "-o", "name")
		if strings.Contains(out, chartRelease+"-otelcol-watchtower") {
			t.Errorf("after helm uninstall, cluster-wide RBAC of the release remains:\n%s", out)
		}
	})
}

// writeE2EValues is the chart's values for the node: Kafka and Jaeger on the node's IP, and
// requests small enough that the collector, the operator and its workloads share 2 CPUs.
func writeE2EValues(t *testing.T, kafka *harness.Kafka, jaeger *harness.Jaeger, partitions int) string {
	t.Helper()
	_, kafkaPort, _ := strings.Cut(kafka.Bootstrap, ":")
	_, jaegerPort, _ := strings.Cut(jaeger.OTLPGRPC, ":")
	v := fmt.Sprintf(`kafka:
  brokers: [%q]
  spansTopicPartitions: %d
tracesBackend:
  endpoint: %q
sampling:
  slowThresholdMs: 1000
  baselinePercent: 0
  decisionWait: 5s
gateway:
  resources:
    requests: {cpu: 100m, memory: 128Mi}
    limits: {cpu: "1", memory: 1Gi}
  memoryLimiter: {limitMiB: 768, spikeLimitMiB: 192}
sampler:
  resources:
    requests: {cpu: 100m, memory: 128Mi}
    limits: {cpu: "1", memory: 1Gi}
  memoryLimiter: {limitMiB: 768, spikeLimitMiB: 192}
agent:
  enabled: true
  resources:
    requests: {cpu: 50m, memory: 64Mi}
networkPolicy:
  egress:
    kafkaPorts: [%s]
    tracesBackendPorts: [%s]
`, kafka.Bootstrap, partitions, jaeger.OTLPGRPC, kafkaPort, jaegerPort)
	p := filepath.Join(t.TempDir(), "e2e-values.yaml")
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func listPods(t *testing.T, ctx context.Context, c *harness.Cluster, ns, selector string) []corev1.Pod {
	t.Helper()
	out, err := c.Kubectl(ctx, "get", "pods", "-n", ns, "-l", selector, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var l corev1.PodList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	// Pods on their way out are not what a user counts.
	var pods []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods
}

// waitPodsReady waits until exactly n pods (n 0: at least one) match selector, all Running
// with every container ready, and returns them.
func waitPodsReady(t *testing.T, ctx context.Context, c *harness.Cluster, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	waitFor(t, wctx, fmt.Sprintf("%d pod(s) %s in %s Running and Ready", n, selector, ns), func() (bool, error) {
		pods = listPods(t, ctx, c, ns, selector)
		if len(pods) == 0 || (n > 0 && len(pods) != n) {
			return false, fmt.Errorf("%d pods: %s", len(pods), podStates(pods))
		}
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning {
				return false, fmt.Errorf("%s", podStates(pods))
			}
			for _, cs := range p.Status.ContainerStatuses {
				if !cs.Ready {
					return false, fmt.Errorf("%s", podStates(pods))
				}
			}
		}
		return true, nil
	})
	return pods
}

// podStates says, per pod, what a user would read in kubectl get pods and describe.
func podStates(pods []corev1.Pod) string {
	var b strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&b, "%s %s", p.Name, p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, " [%s ready=%v restarts=%d", cs.Name, cs.Ready, cs.RestartCount)
			if w := cs.State.Waiting; w != nil {
				fmt.Fprintf(&b, " waiting %s: %s", w.Reason, w.Message)
			}
			if term := cs.LastTerminationState.Terminated; term != nil {
				fmt.Fprintf(&b, " last %s", term.Reason)
			}
			b.WriteString("]")
		}
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue && cond.Message != "" {
				fmt.Fprintf(&b, " %s: %s", cond.Type, cond.Message)
			}
		}
		b.WriteString("; ")
	}
	return b.String()
}
