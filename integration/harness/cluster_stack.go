package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Helm runs the pinned helm against the cluster as the admin, with its configuration, cache and
// data under the cluster's folder, and returns its standard output.
func (c *Cluster) Helm(ctx context.Context, args ...string) (string, error) {
	tools, err := LoadTools()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(tools.Dir, "helm-"+tools.Versions["HELM_VERSION"], "helm")
	home := filepath.Join(c.Dir, "helm")
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", c.Kubeconfig)...)
	cmd.Dir = tools.RepoRoot
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
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
