package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Helm runs the pinned helm against the cluster as the admin (see Helm), with its state under
// the cluster's folder, and returns its standard output.
func (c *Cluster) Helm(ctx context.Context, args ...string) (string, error) {
	return c.helm.Run(ctx, append(args, "--kubeconfig", c.Kubeconfig)...)
}

// WatchtowerImages are the short names of every image `make images` builds, which a cluster
// running the chart, the example operator and its workloads needs (pause is the sandbox image).
var WatchtowerImages = []string{"pause", "otelcol-watchtower", "workload-operator", "stress-cpu", "memory-load", "nginx"}

// ImageArchives are the archives bin/images/<name>.tar that `make images` wrote, for
// WithClusterImages: pause always, then names. A missing one fails t (never skips): `make test`
// and `make demo-cluster` build them first.
func ImageArchives(t TB, names ...string) []string {
	t.Helper()
	root := MustTools(t).RepoRoot
	tars := []string{filepath.Join(root, "bin", "images", "pause.tar")}
	for _, name := range names {
		if name != "pause" {
			tars = append(tars, filepath.Join(root, "bin", "images", name+".tar"))
		}
	}
	for _, tar := range tars {
		if _, err := os.Stat(tar); err != nil {
			t.Fatalf("harness: %s is missing: run `make images`", tar)
		}
	}
	return tars
}

// ClusterChartValues are values of the otelcol-watchtower chart for a test cluster's node: Kafka
// and the traces backend (Jaeger's OTLP/gRPC) at the given host:port addresses in the node's
// Network(), the agent DaemonSet on, and requests small enough that the collector, the example
// operator and its workloads share the node's 2 CPUs. The sampler tier is on when sampler is.
func ClusterChartValues(kafkaBootstrap, tracesEndpoint string, spansPartitions int, sampler bool) string {
	_, kafkaPort, _ := strings.Cut(kafkaBootstrap, ":")
	_, tracesPort, _ := strings.Cut(tracesEndpoint, ":")
	return fmt.Sprintf(`kafka:
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
  enabled: %t
  replicas: %d
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
`, kafkaBootstrap, spansPartitions, tracesEndpoint, sampler, min(2, spansPartitions), kafkaPort, tracesPort)
}
