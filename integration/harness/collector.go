package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CollectorBuild is the otelcol-watchtower binary the tests run.
type CollectorBuild struct {
	// Path is the binary, bin/otelcol-watchtower in the repository (what `make otelcol` builds).
	Path string
	// Version is the version the build injected (-X main.version); the binary must report it.
	Version string
}

var (
	collectorBuildOnce sync.Once
	collectorBuildVal  CollectorBuild
	collectorBuildErr  error
)

// BuildCollector builds bin/otelcol-watchtower from the committed otelcol-watchtower/ with
// `hack/otelcol.sh build --no-generate`, once per test process, and returns it. With a warm Go
// build cache an up-to-date binary costs a few seconds; a cold cache compiles the distribution
// (minutes on two cores). Tests never regenerate the committed code: a stale
// otelcol-watchtower/ is what TestCollectorGeneratedCodeIsCurrent reports.
func BuildCollector(t TB) CollectorBuild {
	t.Helper()
	tools := MustTools(t)
	collectorBuildOnce.Do(func() {
		collectorBuildVal, collectorBuildErr = buildCollector(tools.RepoRoot)
	})
	if collectorBuildErr != nil {
		t.Fatalf("harness: %v", collectorBuildErr)
	}
	return collectorBuildVal
}

func buildCollector(root string) (CollectorBuild, error) {
	script := filepath.Join(root, "hack", "otelcol.sh")
	out, err := exec.Command(script, "version").Output()
	if err != nil {
		return CollectorBuild{}, fmt.Errorf("%s version: %w", script, err)
	}
	b := CollectorBuild{
		Path:    filepath.Join(root, "bin", "otelcol-watchtower"),
		Version: strings.TrimSpace(string(out)),
	}
	start := time.Now()
	cmd := exec.Command(script, "build", "--no-generate", "-o", b.Path)
	// The version is fixed before the build so that a tree that changes meanwhile cannot make
	// the binary and this record disagree.
	cmd.Env = append(os.Environ(), "OTELCOL_VERSION="+b.Version)
	if log, err := cmd.CombinedOutput(); err != nil {
		return CollectorBuild{}, fmt.Errorf("build otelcol-watchtower (%s build): %w\n%s", script, err, log)
	}
	fmt.Fprintf(os.Stderr, "harness: otelcol-watchtower %s ready in %s\n", b.Version, time.Since(start).Round(time.Millisecond))
	return b, nil
}

// Collector is a running otelcol-watchtower.
type Collector struct {
	// Build is the binary it runs.
	Build CollectorBuild
	// Config is the configuration file it was started with, and Overlays those merged over it.
	Config   string
	Overlays []string
	// Env holds the WATCHTOWER_* variables it was started with, the harness' and the test's.
	Env map[string]string
	// OTLPGRPC and OTLPHTTP are its OTLP receiver endpoints, "127.0.0.1:port".
	OTLPGRPC, OTLPHTTP string
	// Prometheus is the endpoint of its prometheus exporter ("127.0.0.1:port", path /metrics).
	Prometheus string
	// HealthURL is its health_check extension; SelfMetricsURL its own Prometheus metrics.
	HealthURL, SelfMetricsURL string
	// QueueDir is the file_storage directory of its persistent queues.
	QueueDir string
	// Started is how long it took from the start of the process to a healthy health check.
	Started time.Duration

	proc *Process
}

// StartCollector starts the built otelcol-watchtower with the configuration file config (e.g.
// deploy/collector/gateway.yaml, relative to the repository root or absolute) and waits until
// its health check answers. Every endpoint variable the deploy/collector configurations read
// gets a free loopback port and the queue directory a fresh temporary directory; env sets
// further variables (brokers, topics, thresholds) and overrides any of those.
func StartCollector(t TB, name, config string, env map[string]string) *Collector {
	t.Helper()
	return StartCollectorWithOverlays(t, name, config, nil, env)
}

// StartCollectorWithOverlays is StartCollector with overlay files (e.g.
// deploy/collector/overlays/otlp-tls.yaml) merged over config, in order, as further --config
// flags.
func StartCollectorWithOverlays(t TB, name, config string, overlays []string, env map[string]string) *Collector {
	t.Helper()
	build := BuildCollector(t)
	tools := MustTools(t)
	if !filepath.IsAbs(config) {
		config = filepath.Join(tools.RepoRoot, config)
	}
	args := []string{"--config", config}
	for _, o := range overlays {
		if !filepath.IsAbs(o) {
			o = filepath.Join(tools.RepoRoot, o)
		}
		args = append(args, "--config", o)
	}
	dir := t.TempDir()
	c := &Collector{
		Build:    build,
		Config:   config,
		Overlays: overlays,
		OTLPGRPC: Loopback(FreePort(t)), OTLPHTTP: Loopback(FreePort(t)),
		Prometheus: Loopback(FreePort(t)),
		QueueDir:   filepath.Join(dir, "queue"),
	}
	health, selfPort := Loopback(FreePort(t)), FreePort(t)
	c.Env = map[string]string{
		"WATCHTOWER_HEALTH_ENDPOINT":     health,
		"WATCHTOWER_OTLP_GRPC_ENDPOINT":  c.OTLPGRPC,
		"WATCHTOWER_OTLP_HTTP_ENDPOINT":  c.OTLPHTTP,
		"WATCHTOWER_PROMETHEUS_ENDPOINT": c.Prometheus,
		"WATCHTOWER_SELF_METRICS_HOST":   "127.0.0.1",
		"WATCHTOWER_SELF_METRICS_PORT":   strconv.Itoa(selfPort),
		"WATCHTOWER_QUEUE_DIR":           c.QueueDir,
	}
	for k, v := range env {
		c.Env[k] = v
	}
	if v, ok := c.Env["WATCHTOWER_HEALTH_ENDPOINT"]; ok {
		health = v
	}
	if v, ok := c.Env["WATCHTOWER_QUEUE_DIR"]; ok {
		c.QueueDir = v
	}
	c.HealthURL = "http://" + health + "/"
	c.SelfMetricsURL = fmt.Sprintf("http://%s:%s/metrics", c.Env["WATCHTOWER_SELF_METRICS_HOST"], c.Env["WATCHTOWER_SELF_METRICS_PORT"])

	var envList []string
	for k, v := range c.Env {
		envList = append(envList, k+"="+v)
	}
	start := time.Now()
	c.proc = StartProcess(t, ProcessSpec{
		Name:        name,
		Path:        build.Path,
		Args:        args,
		Env:         envList,
		Dir:         dir,
		StopTimeout: 20 * time.Second, // a graceful stop finishes in-flight exports
	})
	// Polled every 5ms rather than WaitReady's 100ms: Started is a figure the benchmarks report.
	ready := HTTPStatusOK(c.HealthURL)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := ready(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-c.proc.Done():
			t.Fatalf("harness: %s exited before it was healthy (%v):\n%s", name, err, c.proc.LogTail(16<<10))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("harness: %s not healthy after 60s: %v\n%s", name, err, c.proc.LogTail(16<<10))
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.Started = time.Since(start)
	return c
}

// Process is the collector's process.
func (c *Collector) Process() *Process { return c.proc }

// Stop stops the collector gracefully (SIGTERM: receivers stop first, in-flight exports finish;
// an in-memory queue is drained, a persistent one keeps what it holds on disk for the next
// start) and fails the test if it needed SIGKILL. It is safe to call before the cleanup does.
func (c *Collector) Stop(t TB) {
	t.Helper()
	if err := c.proc.Stop(); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if c.proc.Killed() {
		t.Fatalf("harness: %s did not stop within its stop timeout after SIGTERM and was killed:\n%s", c.proc.Name(), c.proc.LogTail(8<<10))
	}
}

// SelfMetric sums the values of every series of the collector's own metric name (Prometheus
// exposition name, e.g. "otelcol_exporter_sent_spans": the collector adds no _total suffix to its own metrics) whose labels include all of
// labels. found is false when no series matched.
func (c *Collector) SelfMetric(ctx context.Context, name string, labels map[string]string) (sum float64, found bool, err error) {
	return ScrapeSum(ctx, c.SelfMetricsURL, name, labels)
}

// WaitSelfMetric polls SelfMetric every 200ms until accept returns true for its sum, and
// returns that sum; on timeout the error carries the last value.
func (c *Collector) WaitSelfMetric(ctx context.Context, name string, labels map[string]string, accept func(float64) bool) (float64, error) {
	var last float64
	var lastErr error
	for {
		sum, _, err := c.SelfMetric(ctx, name, labels)
		last, lastErr = sum, err
		if err == nil && accept(sum) {
			return sum, nil
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("%s: %s%v: no acceptable value before %v (last %v, last error %v)", c.proc.Name(), name, labels, ctx.Err(), last, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ScrapeSum fetches a Prometheus text exposition from url and sums the samples of metric name
// whose labels include all of labels.
func ScrapeSum(ctx context.Context, url, name string, labels map[string]string) (sum float64, found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return SumSamples(resp.Body, name, labels)
}

// SumSamples sums the samples of metric name whose labels include all of labels in a
// Prometheus text exposition.
func SumSamples(r io.Reader, name string, labels map[string]string) (sum float64, found bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		s, ok := parseSample(sc.Text())
		if !ok || s.name != name || !hasLabels(s.labels, labels) {
			continue
		}
		sum += s.value
		found = true
	}
	return sum, found, sc.Err()
}

type textSample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseSample parses one sample line of the Prometheus text format (name{l="v",...} value
// [timestamp]); comments and malformed lines return false.
func parseSample(line string) (textSample, bool) {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return textSample{}, false
	}
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return textSample{}, false
	}
	s := textSample{name: line[:i], labels: map[string]string{}}
	rest := line[i:]
	if strings.HasPrefix(rest, "{") {
		end := strings.LastIndex(rest, "}")
		if end < 0 {
			return textSample{}, false
		}
		body := rest[1:end]
		rest = rest[end+1:]
		for body != "" {
			eq := strings.Index(body, "=")
			if eq < 0 || len(body) < eq+2 || body[eq+1] != '"' {
				return textSample{}, false
			}
			key := strings.TrimSpace(body[:eq])
			// The value is a quoted string with \", \\ and \n escapes.
			var val strings.Builder
			i := eq + 2
			for ; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' && i+1 < len(body) {
					i++
					if body[i] == 'n' {
						val.WriteByte('\n')
						continue
					}
				}
				val.WriteByte(body[i])
			}
			if i >= len(body) {
				return textSample{}, false
			}
			s.labels[key] = val.String()
			body = strings.TrimLeft(body[i+1:], ", ")
		}
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return textSample{}, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return textSample{}, false
	}
	s.value = v
	return s, true
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
