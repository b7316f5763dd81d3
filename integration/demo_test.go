package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestDemo runs `make demo`'s program the way a user does — on free ports so that it can run
// beside anything — and checks what the README promises: it reaches "ready", the printed Jaeger
// query then returns a slow reconcile whose root span has API-call children, and Ctrl-C (SIGINT)
// stops everything it started.
func TestDemo(t *testing.T) {
	tools := harness.MustTools(t)
	bin := filepath.Join(t.TempDir(), "watchtower-demo")
	build := exec.Command("go", "build", "-o", bin, "./cmd/demo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v\n%s", err, out)
	}
	ports := map[string]int{}
	var args []string
	for _, f := range []string{"jaeger-port", "prometheus-port", "kafka-port", "otlp-grpc-port", "otlp-http-port",
		"collector-prometheus-port", "collector-telemetry-port", "collector-health-port", "operator-metrics-port"} {
		ports[f] = harness.FreePort(t)
		args = append(args, fmt.Sprintf("-%s=%d", f, ports[f]))
	}
	state := t.TempDir()
	cmd := exec.Command(bin, append(args, "-dir", state)...)
	cmd.Dir = tools.RepoRoot
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
		}
	})

	ready := make(chan string, 1)
	var printed strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			printed.WriteString(line + "\n")
			if strings.Contains(line, "] ready") {
				ready <- line
			}
			if strings.Contains(line, "curl -s '") && strings.Contains(line, "minDuration=1s") {
				ready <- strings.TrimSuffix(strings.SplitN(line, "curl -s '", 2)[1], "'")
			}
		}
		exited <- cmd.Wait()
	}()
	start := time.Now()
	var slowURL string
	for slowURL == "" {
		select {
		case l := <-ready:
			if strings.HasPrefix(l, "http://") {
				slowURL = l
			}
		case err := <-exited:
			t.Fatalf("the demo exited before it was ready: %v\n%s", err, printed.String())
		case <-time.After(3 * time.Minute):
			t.Fatalf("the demo was not ready after 3 minutes:\n%s", printed.String())
		}
	}
	t.Logf("demo ready after %s; slow reconciles at %s", time.Since(start).Round(time.Millisecond), slowURL)
	if want := fmt.Sprintf("http://127.0.0.1:%d/api/traces?", ports["jaeger-port"]); !strings.HasPrefix(slowURL, want) {
		t.Fatalf("the printed query %q does not use the configured Jaeger port", slowURL)
	}

	// The printed query, as a user pastes it: a slow reconcile with API-call children.
	jaeger := &harness.Jaeger{QueryURL: fmt.Sprintf("http://127.0.0.1:%d", ports["jaeger-port"])}
	ctx := ctxTimeout(t, 2*time.Minute)
	waitFor(t, ctx, "a slow reconcile trace with API-call children in Jaeger", func() (bool, error) {
		traces, err := jaeger.FindTraces(ctx, harness.TraceQuery{Service: "workload-operator", Operation: "reconcile workload", MinDuration: time.Second, Limit: 5})
		if err != nil {
			return false, err
		}
		for _, tr := range traces {
			for _, root := range tr.Spans {
				if root.OperationName != "reconcile workload" {
					continue
				}
				for _, s := range tr.Spans {
					if src, ok := s.Tag("watchtower.api.source"); ok && src != "" && s.ParentSpanID() == root.SpanID {
						return true, nil
					}
				}
			}
		}
		return false, nil
	})

	// Ctrl-C stops everything: the demo exits 0 and leaves no process from its state directory.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the demo did not exit cleanly on SIGINT: %v\n%s", err, printed.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the demo did not stop within 90s of SIGINT")
	}
	if left := processesMentioning(state); len(left) > 0 {
		t.Fatalf("processes of the demo outlived it: %v", left)
	}
}

// processesMentioning lists the command lines of running processes that mention s.
func processesMentioning(s string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, s) {
			out = append(out, e.Name()+": "+cmdline)
		}
	}
	return out
}
