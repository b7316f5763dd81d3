package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/integration/harness"
	wtkafka "github.com/gowatchtower/watchtower/kafka"
)

// TestKafkaConsumersReadTheExampleOperator: the example operator's spans, through the gateway
// into Kafka, read by the three consumers GoWatchtower ships — the Go package (stopped halfway
// and resumed by a second consumer of its group), `watchtower kafka tail -all`, and the Python
// consumer (stopped after a few records and started again) — each finding exactly what the
// gateway accepted: every span (Go), every reconcile (the command line and Python).
func TestKafkaConsumersReadTheExampleOperator(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	tools := harness.MustTools(t)
	py := tools.Path(t, "python-venv", "PYTHON_VENV_VERSION", "bin", "python")
	kube, c := startKubeWithWorkloadCRD(t)
	kafka, gw := startGatewayStack(t)
	_, op := startOperator(t, kube, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+gw.OTLPHTTP, "POD_NAME=workload-operator-kafka", "POD_NAMESPACE=default")
	ctx := ctxTimeout(t, 5*time.Minute)

	for name, spec := range map[string]demov1alpha1.WorkloadSpec{
		"fast-nginx":  {Type: demov1alpha1.Nginx, Replicas: ptr.To[int32](2)},
		"slow-memory": {Type: demov1alpha1.MemoryLoad, ReconcileDelay: "1200ms"},
		"broken":      {Type: demov1alpha1.StressCPU, FailWith: demov1alpha1.FailTerminal},
	} {
		if err := c.Create(ctx, &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	waitReconciled(t, ctx, c, 3)
	// The operator stops (flushing its spans): what the gateway accepted is then final.
	if err := op.Stop(); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, ctx, gw)
	accepted, _, err := gw.SelfMetric(ctx, "otelcol_receiver_accepted_spans", map[string]string{"receiver": "otlp"})
	if err != nil || accepted == 0 {
		t.Fatalf("the gateway accepted %v spans: %v", accepted, err)
	}

	// The Go package: a consumer stopped halfway, a second of the same group resumes.
	var (
		mu         sync.Mutex
		spans      = map[string]int{}
		reconciles = map[string]bool{} // span IDs of reconcile spans
		stopFirst  func()
	)
	handler := func(_ context.Context, b wtkafka.Batch) error {
		if b.Traces == nil {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range b.Traces.ResourceSpans().All() {
			for _, ss := range rs.ScopeSpans().All() {
				for _, sp := range ss.Spans().All() {
					spans[sp.SpanID().String()]++
					if strings.HasPrefix(sp.Name(), "reconcile ") {
						reconciles[sp.SpanID().String()] = true
					}
					if stopFirst != nil && float64(len(spans)) >= accepted/2 {
						stopFirst()
						stopFirst = nil
					}
				}
			}
		}
		return nil
	}
	for i, until := range []func() bool{nil, func() bool { return float64(len(spans)) >= accepted }} {
		cons, err := wtkafka.NewConsumer([]string{kafka.Bootstrap}, "e2e-go", wtkafka.FromStart(), wtkafka.WithTopics(wtkafka.DefaultSpansTopic, ""))
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		if i == 0 {
			mu.Lock()
			stopFirst = cancel
			mu.Unlock()
		} else {
			go func() {
				for cctx.Err() == nil {
					mu.Lock()
					done := until()
					mu.Unlock()
					if done {
						cancel()
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
		if err := cons.Run(cctx, handler); err != nil {
			t.Fatal(err)
		}
		cancel()
		if ctx.Err() != nil {
			t.Fatalf("the Go consumers handled %d of the %v spans accepted", len(spans), accepted)
		}
	}
	dups := 0
	for _, n := range spans {
		dups += n - 1
	}
	if float64(len(spans)) != accepted {
		t.Errorf("the Go consumers handled %d distinct spans; the gateway accepted %v", len(spans), accepted)
	}

	// The command line: every reconcile.
	bin := harness.BuildBinary(t, "./kafka/cmd/watchtower")
	out, err := exec.CommandContext(ctx, bin, "kafka", "tail", "-brokers", kafka.Bootstrap, "-from-start", "-all", "-json", "-n", strconv.Itoa(len(reconciles))).Output()
	if err != nil {
		t.Fatalf("watchtower kafka tail: %v\n%s", err, out)
	}
	cli := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			TraceID string `json:"trace_id"`
			Name    string
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("tail line %q: %v", line, err)
		}
		cli[r.TraceID+"/"+r.Name] = true
	}

	// Python: stopped after 5 records, then run again in the same group until idle.
	site := installPythonConsumer(t, ctx, py)
	jsonl := filepath.Join(t.TempDir(), "reconciles.jsonl")
	runPythonConsumer(t, ctx, py, site, kafka.Bootstrap, "e2e-python", jsonl, "--max-records", "5")
	runPythonConsumer(t, ctx, py, site, kafka.Bootstrap, "e2e-python", jsonl, "--idle-exit", "5")
	b, err := os.ReadFile(jsonl)
	if err != nil {
		t.Fatal(err)
	}
	python := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r struct {
			SpanID string `json:"span_id"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("python line %q: %v", line, err)
		}
		if !reconciles[r.SpanID] {
			t.Errorf("the Python consumer wrote reconcile span %s, which the Go consumer did not find", r.SpanID)
		}
		python[r.SpanID]++
	}
	if len(python) != len(reconciles) {
		t.Errorf("the Python consumer wrote %d distinct reconciles, the Go consumer found %d", len(python), len(reconciles))
	}
	if len(cli) != len(reconciles) {
		t.Errorf("watchtower kafka tail printed %d distinct reconciles, the Go consumer found %d", len(cli), len(reconciles))
	}
	t.Logf("the example operator's telemetry through Kafka: the gateway accepted %v spans; the Go consumers handled %d (%d duplicates) with %d reconciles; watchtower kafka tail printed %d reconciles; the Python consumer wrote %d",
		accepted, len(spans), dups, len(reconciles), len(cli), len(python))
}

// installPythonConsumer installs python/ with pip into a folder of its own, from a copy
// (setuptools builds in the source folder; the checkout stays clean), and returns the folder.
func installPythonConsumer(t *testing.T, ctx context.Context, py string) string {
	t.Helper()
	src, site := t.TempDir(), t.TempDir()
	if err := os.CopyFS(src, os.DirFS(filepath.Join(harness.MustTools(t).RepoRoot, "python"))); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--no-build-isolation",
		"--target", site, src).CombinedOutput(); err != nil {
		t.Fatalf("pip install ./python: %v\n%s", err, out)
	}
	return site
}

// runPythonConsumer runs the installed consumer's command in group, appending to out.
func runPythonConsumer(t *testing.T, ctx context.Context, py, site, brokers, group, out string, extra ...string) string {
	t.Helper()
	args := append([]string{"-m", "gowatchtower_kafka", "--brokers", brokers, "--group", group, "--from-start", "--out", out}, extra...)
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+site)
	cmd.Dir = t.TempDir() // not the repository: the installed package is what runs
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python -m gowatchtower_kafka %v: %v\n%s", extra, err, b)
	}
	return strings.TrimSpace(string(b))
}
