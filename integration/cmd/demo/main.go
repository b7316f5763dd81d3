// Command demo is `make demo`: the whole GoWatchtower stack on one machine, with no Docker and
// no cluster — a real kube-apiserver and etcd, the example workload operator, the
// otelcol-watchtower gateway, Apache Kafka, Prometheus and Jaeger — started with the same
// harness the integration tests use. It applies sample Workloads (fast, slow, failing), keeps a
// small steady load going, prints where to look, and stops everything on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/integration/harness"
)

type ports struct {
	jaeger, prometheus, kafka, otlpGRPC, otlpHTTP, collectorExport, collectorSelf, collectorHealth, operatorMetrics, console int
}

func main() {
	var p ports
	flag.IntVar(&p.jaeger, "jaeger-port", 16686, "Jaeger query API port")
	flag.IntVar(&p.prometheus, "prometheus-port", 9090, "Prometheus API port")
	flag.IntVar(&p.kafka, "kafka-port", 9092, "Kafka bootstrap port")
	flag.IntVar(&p.otlpGRPC, "otlp-grpc-port", 4317, "collector OTLP/gRPC port")
	flag.IntVar(&p.otlpHTTP, "otlp-http-port", 4318, "collector OTLP/HTTP port")
	flag.IntVar(&p.collectorExport, "collector-prometheus-port", 8889, "collector Prometheus exporter port (exported metrics)")
	flag.IntVar(&p.collectorSelf, "collector-telemetry-port", 8888, "collector's own metrics port")
	flag.IntVar(&p.collectorHealth, "collector-health-port", 13133, "collector health_check port")
	flag.IntVar(&p.operatorMetrics, "operator-metrics-port", 8080, "example operator's /metrics port")
	flag.IntVar(&p.console, "console-port", 8090, "Watchtower console port")
	stateDir := flag.String("dir", "bin/demo", "state directory: logs, data, kubeconfig")
	inCluster := flag.Bool("cluster", false, "run the stack in a real single-node Kubernetes cluster (make demo-cluster; needs root and `make images`)")
	flag.Parse()
	// The demo configures every component itself: a developer's own OTEL_*, WATCHTOWER_* and
	// KUBECONFIG must not reach them (envtest's kube-apiserver inherits this environment).
	if removed := harness.IsolateEnvironment(); len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "demo: ignoring %s from your environment: the demo configures its components itself\n", strings.Join(removed, ", "))
	}

	// Ctrl-C is handled from the first moment: during the start it stops what has started so
	// far; a second Ctrl-C stops at once (the components die with the demo: each has a death
	// signal, and the harness' watchdog removes what they started, a cluster included).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)

	stack := run
	if *inCluster {
		// The cluster's components listen on the node's IP, not on 127.0.0.1.
		stack = runCluster
	} else if err := checkPorts(p); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	dir, err := prepareStateDir(*stateDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	r := newRunner(dir)
	done := make(chan int, 1)
	go func() { done <- r.guard(func() int { return stack(r, p, dir) }) }()
	var code int
	select {
	case code = <-done:
		// A Ctrl-C that reaches a component while it is being forked (for a moment still in
		// the demo's process group) kills it and fails the start; the Ctrl-C is the cause, and
		// its signal is already here or about to be.
		if code != 0 {
			select {
			case <-sigs:
				fmt.Println("demo: Ctrl-C: stopped while starting")
				code = 130
			case <-time.After(200 * time.Millisecond):
			}
		}
	case <-sigs:
		fmt.Println("demo: Ctrl-C: stopping everything (Ctrl-C again to stop at once) ...")
		go func() {
			<-sigs
			fmt.Fprintln(os.Stderr, "demo: second Ctrl-C: stopping at once; logs are in", dir)
			os.Exit(130)
		}()
		code = r.interrupt(done)
	}
	fmt.Println("demo: stopping everything ...")
	r.stop()
	fmt.Println("demo: stopped; logs are in", dir)
	os.Exit(code)
}

// stateDirMarker marks a state directory the demo created, and so may empty on the next run.
const stateDirMarker = ".watchtower-demo"

// prepareStateDir empties the state directory of the previous run and returns its absolute
// path. It refuses a directory that holds anything but was not made by the demo: -dir=. or
// -dir=$HOME must never delete a checkout or a home.
func prepareStateDir(path string) (string, error) {
	dir, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(dir)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return "", err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, stateDirMarker)); err != nil {
			return "", fmt.Errorf("-dir %s holds files the demo did not create; pick an empty or new directory", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, stateDirMarker), []byte("state of `make demo`; emptied by its next run\n"), 0o644)
}

// checkPorts refuses to start when a configured port is taken, naming it and its flag.
func checkPorts(p ports) error {
	for _, c := range []struct {
		port       int
		what, flag string
	}{
		{p.jaeger, "Jaeger query API", "jaeger-port"}, {p.prometheus, "Prometheus", "prometheus-port"},
		{p.kafka, "Kafka", "kafka-port"}, {p.otlpGRPC, "collector OTLP/gRPC", "otlp-grpc-port"},
		{p.otlpHTTP, "collector OTLP/HTTP", "otlp-http-port"}, {p.collectorExport, "collector Prometheus exporter", "collector-prometheus-port"},
		{p.collectorSelf, "collector telemetry", "collector-telemetry-port"}, {p.collectorHealth, "collector health check", "collector-health-port"},
		{p.operatorMetrics, "operator metrics", "operator-metrics-port"}, {p.console, "Watchtower console", "console-port"},
	} {
		l, err := net.Listen("tcp", harness.Loopback(c.port))
		if err != nil {
			return fmt.Errorf("port %d (%s) is already in use on 127.0.0.1: stop what holds it or pick another with -%s (DEMO_FLAGS='-%s=N' make demo)", c.port, c.what, c.flag, c.flag)
		}
		l.Close()
	}
	return nil
}

func run(r *runner, p ports, dir string) int {
	start := time.Now()
	tools := harness.MustTools(r)
	// The console's address comes first: it is where a user looks.
	fmt.Printf("Watchtower console: http://127.0.0.1:%d (serving once the stack is up)\n", p.console)

	step := func(what string) { fmt.Printf("demo: [%5.1fs] %s\n", time.Since(start).Seconds(), what) }

	step("building the example operator and the console")
	operatorBin := harness.BuildBinary(r, "./examples/workload-operator/cmd")
	consoleBin := harness.BuildBinary(r, "./operator/cmd/console")

	step("starting Jaeger")
	jaeger := harness.StartJaeger(r, harness.WithJaegerQueryPort(p.jaeger))
	step("starting Kafka")
	kafka := harness.StartKafka(r, harness.WithKafkaPort(p.kafka))
	kafka.CreateTopic(r, "otlp_spans", 3)
	kafka.CreateTopic(r, "otlp_metrics", 1)

	step("starting otelcol-watchtower (deploy/collector/gateway.yaml)")
	collector := harness.StartCollector(r, "otelcol-watchtower", "deploy/collector/gateway.yaml", map[string]string{
		"WATCHTOWER_OTLP_GRPC_ENDPOINT":         harness.Loopback(p.otlpGRPC),
		"WATCHTOWER_OTLP_HTTP_ENDPOINT":         harness.Loopback(p.otlpHTTP),
		"WATCHTOWER_KAFKA_BROKERS":              kafka.Bootstrap,
		"WATCHTOWER_TRACES_ENDPOINT":            jaeger.OTLPGRPC,
		"WATCHTOWER_PROMETHEUS_ENDPOINT":        harness.Loopback(p.collectorExport),
		"WATCHTOWER_HEALTH_ENDPOINT":            harness.Loopback(p.collectorHealth),
		"WATCHTOWER_SELF_METRICS_PORT":          fmt.Sprint(p.collectorSelf),
		"WATCHTOWER_SAMPLING_DECISION_WAIT":     "5s",
		"WATCHTOWER_SPANMETRICS_FLUSH_INTERVAL": "5s",
		"WATCHTOWER_SLOW_THRESHOLD_MS":          "1000",
	})

	step("starting Prometheus")
	prom := harness.StartPrometheus(r, harness.WithPrometheusPort(p.prometheus), harness.WithScrapeInterval(5*time.Second),
		harness.WithScrapeTarget("otelcol-watchtower", harness.Loopback(p.collectorExport), "/metrics"),
		harness.WithScrapeTarget("otelcol-watchtower-telemetry", harness.Loopback(p.collectorSelf), "/metrics"),
		harness.WithScrapeTarget("workload-operator", harness.Loopback(p.operatorMetrics), "/metrics"))

	step("starting kube-apiserver and etcd (tracing to the collector)")
	tracing := filepath.Join(r.TempDir(), "tracing.yaml")
	mustWrite(r, tracing, fmt.Sprintf("apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: %s\n", harness.Loopback(p.otlpGRPC)))
	kube := harness.StartKube(r, harness.WithCRDs(filepath.Join(tools.RepoRoot, "examples/workload-operator/config/crd/bases")),
		harness.WithAPIServerFlag("tracing-config-file", tracing))
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := kube.WriteKubeconfig(kubeconfig); err != nil {
		r.Fatal(err)
	}

	step("starting the example workload operator")
	probe := harness.Loopback(harness.FreePort(r))
	op := harness.StartProcess(r, harness.ProcessSpec{
		Name: "workload-operator",
		Path: operatorBin,
		Args: []string{"--metrics-bind-address=" + harness.Loopback(p.operatorMetrics), "--metrics-secure=false", "--health-probe-bind-address=" + probe},
		Env: []string{
			"KUBECONFIG=" + kubeconfig,
			"OTEL_SERVICE_NAME=workload-operator",
			fmt.Sprintf("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d", p.otlpHTTP),
			"OTEL_METRIC_EXPORT_INTERVAL=5000",
			"POD_NAME=workload-operator-demo", "POD_NAMESPACE=default", "NODE_NAME=" + hostname(),
		},
	})
	op.MustWaitReady(r, 60*time.Second, harness.HTTPStatusOK("http://"+probe+"/readyz"))

	step("starting the Watchtower console")
	harness.StartConsole(r, harness.ConsoleConfig{
		// Prometheus gets the operator's metrics twice — scraped from its /metrics and pushed
		// through the collector's exporter, with exemplars — which the console counts once.
		Port: p.console, Binary: consoleBin, JaegerURL: jaeger.QueryURL, PrometheusURL: prom.URL, Kubeconfig: kubeconfig,
	})

	step("applying the sample Workloads (examples/workload-operator/config/samples)")
	c := demoClient(r, kube)
	ctx := context.Background()
	names := applySamples(r, ctx, c, filepath.Join(tools.RepoRoot, "examples/workload-operator/config/samples"))

	step("ready")
	printReady(p, kafka.Bootstrap, kubeconfig, filepath.Join(tools.Dir, "kube-apiserver-"+tools.Versions["KUBERNETES_VERSION"], "kubectl"), dir, names, prom.URL)

	// A small steady load: poke every Workload every few seconds, so reconciles keep coming.
	r.markReady()
	tick := time.NewTicker(4 * time.Second)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-r.interrupted:
			return 0
		case <-op.Done():
			r.Errorf("the operator exited; its log: %s", op.LogPath())
			return 1
		case <-collector.Process().Done():
			r.Errorf("the collector exited; its log: %s", collector.Process().LogPath())
			return 1
		case <-tick.C:
			for _, name := range names {
				patch := fmt.Sprintf(`{"metadata":{"annotations":{"demo.gowatchtower.io/poke":"%d"}}}`, n)
				w := &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
				if err := c.Patch(ctx, w, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
					r.Logf("poke %s: %v", name, err)
				}
			}
		}
	}
}

func printReady(p ports, kafka, kubeconfig, kubectl, dir string, names []string, promURL string) {
	jaeger := fmt.Sprintf("http://127.0.0.1:%d", p.jaeger)
	fmt.Printf(`
GoWatchtower demo is ready. Workloads: %s

  Watchtower console: http://127.0.0.1:%d   (controllers, slow and failed reconciles, traces, pipeline)

  Slow reconciles in Jaeger (root span "reconcile workload", API calls as children):
    curl -s '%s/api/traces?service=workload-operator&operation=reconcile%%20workload&minDuration=1s&limit=5'
  Failed reconciles (result error; terminal_error for terminal ones):
    curl -s '%s/api/traces?service=workload-operator&tags=%%7B%%22watchtower.reconcile.result%%22%%3A%%22error%%22%%7D&limit=5'

  Reconciles per second by result, from Prometheus:
    curl -s '%s/api/v1/query' --data-urlencode 'query=sum by (watchtower_reconcile_result) (rate(watchtower_reconciles_total[1m]))'

  Collector:  exported metrics http://127.0.0.1:%d/metrics   own telemetry http://127.0.0.1:%d/metrics
  Operator:   http://127.0.0.1:%d/metrics
  Kafka:      bootstrap %s, topics otlp_spans (keyed by trace ID) and otlp_metrics (OTLP protobuf)
  Kubernetes: %s --kubeconfig %s get workloads
  Logs:       %s

Ctrl-C stops everything.
`, strings.Join(names, ", "), p.console, jaeger, jaeger, promURL, p.collectorExport, p.collectorSelf, p.operatorMetrics, kafka, kubectl, kubeconfig, dir)
}

func demoClient(r *runner, kube *harness.Kube) client.Client {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		r.Fatal(err)
	}
	if err := demov1alpha1.AddToScheme(s); err != nil {
		r.Fatal(err)
	}
	c, err := client.New(kube.Config, client.Options{Scheme: s})
	if err != nil {
		r.Fatal(err)
	}
	return c
}

func applySamples(r *runner, ctx context.Context, c client.Client, dir string) []string {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		r.Fatalf("no sample Workloads in %s", dir)
	}
	sort.Strings(files)
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			r.Fatal(err)
		}
		var w demov1alpha1.Workload
		if err := yaml.UnmarshalStrict(b, &w); err != nil {
			r.Fatalf("%s: %v", f, err)
		}
		if err := c.Create(ctx, &w); err != nil {
			r.Fatalf("apply %s: %v", f, err)
		}
		names = append(names, w.Name)
	}
	return names
}

func mustWrite(r *runner, path, content string) {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		r.Fatal(err)
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}
