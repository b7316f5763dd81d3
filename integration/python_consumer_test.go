package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestPythonConsumerReadsWhatTheGatewayWrote: the Python consumer (python/, installed with pip
// from the repository into a fresh folder) reads the reconciles the gateway wrote, in a consumer
// group, stopped after 40 records and started again: every reconcile sent is written once or
// more (duplicates counted), with its controller, object, result and trace ID.
func TestPythonConsumerReadsWhatTheGatewayWrote(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	tools := harness.MustTools(t)
	py := tools.Path(t, "python-venv", "PYTHON_VENV_VERSION", "bin", "python")
	kafka, gw := startGatewayStack(t)
	ctx := ctxTimeout(t, 4*time.Minute)
	service := colUniqueService("python-consumer")
	sent := colSendTraces(ctx, t, gw.OTLPGRPC, service, colPlan{Fast: 60, Slow: 8, Failed: 12}, nil)

	// Installable with pip: into a folder of its own, from the repository's python/.
	// From a copy: setuptools builds in the source folder, and the checkout stays clean.
	src, site := t.TempDir(), t.TempDir()
	if err := os.CopyFS(src, os.DirFS(filepath.Join(tools.RepoRoot, "python"))); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--no-build-isolation",
		"--target", site, src).CombinedOutput(); err != nil {
		t.Fatalf("pip install ./python: %v\n%s", err, out)
	}
	out := filepath.Join(t.TempDir(), "reconciles.jsonl")
	run := func(extra ...string) string {
		args := append([]string{"-m", "gowatchtower_kafka", "--brokers", kafka.Bootstrap, "--group", "python-consumer-test", "--from-start", "--out", out}, extra...)
		cmd := exec.CommandContext(ctx, py, args...)
		cmd.Env = append(os.Environ(), "PYTHONPATH="+site)
		cmd.Dir = t.TempDir() // not the repository: the installed package is what runs
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("python -m gowatchtower_kafka %v: %v\n%s", extra, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	first := run("--max-records", "40")
	second := run("--idle-exit", "5")

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	byRoot := map[string]colTrace{}
	for _, tr := range sent {
		byRoot[tr.SpanIDs[0]] = tr
	}
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r struct {
			Service, Controller, Namespace, Name, Result string
			TraceID                                      string  `json:"trace_id"`
			SpanID                                       string  `json:"span_id"`
			Duration                                     float64 `json:"duration_s"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		tr, ok := byRoot[r.SpanID]
		if !ok || r.Service != service {
			t.Errorf("the consumer wrote a reconcile the test did not send: %s", line)
			continue
		}
		wantResult := "success"
		if tr.Kind == colFailed {
			wantResult = "error"
		}
		if r.TraceID != tr.TraceID || r.Controller != colController || r.Result != wantResult || time.Duration(r.Duration*1e9).Round(time.Millisecond) != tr.Duration.Round(time.Millisecond) {
			t.Errorf("reconcile %s (%s, %s) was written as %s", r.SpanID, tr.Kind, tr.Duration, line)
		}
		seen[r.SpanID]++
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	if len(seen) != len(sent) {
		t.Errorf("the consumer wrote %d of the %d reconciles sent", len(seen), len(sent))
	}
	t.Logf("python consumer: %d reconciles sent, %d written, %d duplicates; first run: %s; second run: %s", len(sent), len(seen), dups, first, second)
}
