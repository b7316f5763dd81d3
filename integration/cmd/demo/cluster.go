package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// The release and namespaces of the cluster demo, as docs/deploy.md uses them.
const (
	clusterRelease    = "owt"
	clusterChartNS    = "observability"
	clusterOperatorNS = "workload-operator-system"
)

// runCluster is `make demo-cluster`: the same story as the process demo, in a real single-node
// Kubernetes cluster (integration/harness StartCluster) with the images `make images` built —
// the chart's gateway and agent, the example operator deployed with its kustomize layout and its
// own ServiceAccount, its Workloads' pods — and Kafka, Jaeger and Prometheus beside the node.
func runCluster(r *runner, p ports, dir string) int {
	start := time.Now()
	tools := harness.MustTools(r)
	step := func(what string) { fmt.Printf("demo: [%5.1fs] %s\n", time.Since(start).Seconds(), what) }
	ctx := context.Background()
	images := harness.ImageArchives(r, harness.WatchtowerImages...)

	step("starting a single-node Kubernetes cluster (etcd, control plane, containerd, kubelet, kube-proxy, CoreDNS)")
	tracing := filepath.Join(r.TempDir(), "apiserver-tracing.yaml")
	mustWrite(r, tracing, fmt.Sprintf("apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: %s:4317\nsamplingRatePerMillion: 1000000\n", harness.ClusterNodeIP))
	c := harness.StartCluster(r, harness.WithClusterImages(images...), harness.WithClusterAPIServerFlag("tracing-config-file", tracing))
	kubeconfig := filepath.Join(dir, "kubeconfig")
	b, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		r.Fatal(err)
	}
	mustWrite(r, kubeconfig, string(b))
	kubectl := func(args ...string) {
		if out, err := c.Kubectl(ctx, args...); err != nil {
			r.Fatalf("%v\n%s", err, out)
		}
	}

	nodeNet := c.Network()
	step("starting Jaeger and Kafka beside the node")
	jaeger := harness.StartJaeger(r, harness.WithJaegerNetwork(nodeNet), harness.WithJaegerQueryPort(p.jaeger))
	kafka := harness.StartKafka(r, harness.WithKafkaNetwork(nodeNet), harness.WithKafkaPort(p.kafka))
	kafka.CreateTopic(r, "otlp_spans", 2)
	kafka.CreateTopic(r, "otlp_metrics", 1)

	step("helm install " + clusterRelease + " deploy/helm/otelcol-watchtower (gateway + agent DaemonSet)")
	values := filepath.Join(dir, "values.yaml")
	mustWrite(r, values, harness.ClusterChartValues(kafka.Bootstrap, jaeger.OTLPGRPC, 2, false))
	if _, err := c.Helm(ctx, "install", clusterRelease, "deploy/helm/otelcol-watchtower", "--namespace", clusterChartNS,
		"--create-namespace", "-f", values, "--wait", "--timeout", "3m"); err != nil {
		r.Fatal(err)
	}

	step("kubectl apply -k examples/workload-operator/config/default")
	kubectl("apply", "-k", filepath.Join(tools.RepoRoot, "examples/workload-operator/config/default"))
	kubectl("-n", clusterOperatorNS, "rollout", "status", "deployment/workload-operator", "--timeout=2m")
	step("kubectl apply -f examples/workload-operator/config/samples")
	kubectl("apply", "-f", filepath.Join(tools.RepoRoot, "examples/workload-operator/config/samples"))

	step("starting Prometheus beside the node, scraping the gateway's Service")
	gw := &unstructured.Unstructured{}
	gw.SetAPIVersion("v1")
	gw.SetKind("Service")
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: clusterChartNS, Name: clusterRelease + "-otelcol-watchtower-gateway"}, gw); err != nil {
		r.Fatal(err)
	}
	clusterIP, _, _ := unstructured.NestedString(gw.Object, "spec", "clusterIP")
	prom := harness.StartPrometheus(r, harness.WithPrometheusNetwork(nodeNet), harness.WithPrometheusPort(p.prometheus),
		harness.WithScrapeInterval(5*time.Second),
		harness.WithScrapeTarget("otelcol-watchtower", clusterIP+":8889", "/metrics"),
		harness.WithScrapeTarget("otelcol-watchtower-telemetry", clusterIP+":8888", "/metrics"))

	step("ready")
	kubectlBin := filepath.Join(tools.Dir, "kubernetes-"+tools.Versions["KUBERNETES_VERSION"], "kubectl")
	k := kubectlBin + " --kubeconfig " + kubeconfig
	fmt.Printf(`
GoWatchtower cluster demo is ready: node %[1]s (%[2]s), release %[3]s in %[4]s, the operator in %[5]s.

  Pods:            %[6]s get pods -A -o wide
  Workloads:       %[6]s get workloads
  OOM-killed:      %[6]s get pod -l app.kubernetes.io/instance=memory-over-limit -o jsonpath='{..lastState.terminated.reason}'
  Operator logs:   %[6]s -n %[5]s logs deploy/workload-operator
  Gateway metrics: %[6]s -n %[4]s port-forward svc/%[3]s-otelcol-watchtower-gateway 8889  (then curl 127.0.0.1:8889/metrics)

  Slow reconciles in Jaeger (spans carry the operator pod's k8s.pod.name, k8s.deployment.name, k8s.node.name):
    curl -s '%[7]s/api/traces?service=workload-operator&operation=reconcile%%20workload&minDuration=1s&limit=5'
  Reconciles per second by result, from Prometheus:
    curl -s '%[8]s/api/v1/query' --data-urlencode 'query=sum by (watchtower_reconcile_result) (rate(watchtower_reconciles_total[1m]))'
  Kafka:           bootstrap %[9]s, topics otlp_spans and otlp_metrics
  Logs:            %[10]s (the node's components, while it runs: %[11]s)

Ctrl-C stops everything and removes the cluster from this machine.
`, c.Name, c.NodeIP, clusterRelease, clusterChartNS, clusterOperatorNS, k, jaeger.QueryURL, prom.URL, kafka.Bootstrap, dir,
		filepath.Dir(c.LogPath("kubelet")))

	// A small steady load, as in the process demo: poke every Workload now and then.
	r.markReady()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	names := sampleNames(r, filepath.Join(tools.RepoRoot, "examples/workload-operator/config/samples"))
	for n := 1; ; n++ {
		select {
		case <-r.interrupted:
			return 0
		case <-tick.C:
			for _, name := range names {
				w := &unstructured.Unstructured{}
				w.SetAPIVersion("demo.gowatchtower.io/v1alpha1")
				w.SetKind("Workload")
				w.SetNamespace("default")
				w.SetName(name)
				patch := fmt.Sprintf(`{"metadata":{"annotations":{"demo.gowatchtower.io/poke":"%d"}}}`, n)
				if err := c.Client.Patch(ctx, w, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
					r.Logf("poke %s: %v", name, err)
				}
			}
		}
	}
}

// sampleNames are the Workloads the samples define (metadata.name of each file).
func sampleNames(r *runner, dir string) []string {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		r.Fatalf("no sample Workloads in %s", dir)
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			r.Fatal(err)
		}
		var m struct {
			Metadata struct{ Name string } `json:"metadata"`
		}
		if err := yaml.Unmarshal(b, &m); err != nil || m.Metadata.Name == "" {
			r.Fatalf("%s: no metadata.name (%v)", f, err)
		}
		names = append(names, m.Metadata.Name)
	}
	return names
}
