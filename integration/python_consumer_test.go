package integration

import (
	"encoding/json"
	"os"
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
	site := installPythonConsumer(t, ctx, py)
	out := filepath.Join(t.TempDir(), "reconciles.jsonl")
	run := func(extra ...string) string {
		return runPythonConsumer(t, ctx, py, site, kafka.Bootstrap, "python-consumer-test", out, extra...)
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
