package integration

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// demoProcess is `make demo`'s program started as a terminal starts it: in its own process
// group (the terminal's foreground group, which Ctrl-C signals as a whole), on free ports.
type demoProcess struct {
	cmd    *exec.Cmd
	ports  map[string]int
	state  string
	owner  string // its harness.OwnerEnv value: every component it starts carries it
	exited chan struct{}
	err    error // valid once exited is closed

	mu      sync.Mutex
	printed strings.Builder
	lines   chan string
}

// demoBinDir holds the demo binary built once for the test binary; TestMain removes it.
var demoBinDir string

var demoBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "watchtower-demo-bin-")
	if err != nil {
		return "", err
	}
	demoBinDir = dir
	bin := filepath.Join(dir, "watchtower-demo")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/demo").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the demo: %v\n%s", err, out)
	}
	return bin, nil
})

func startDemo(t *testing.T) *demoProcess {
	t.Helper()
	tools := harness.MustTools(t)
	bin, err := demoBin()
	if err != nil {
		t.Fatal(err)
	}
	d := &demoProcess{ports: map[string]int{}, state: filepath.Join(t.TempDir(), "demo"), exited: make(chan struct{}), lines: make(chan string, 1024)}
	var args []string
	for _, f := range []string{"jaeger-port", "prometheus-port", "kafka-port", "otlp-grpc-port", "otlp-http-port",
		"collector-prometheus-port", "collector-telemetry-port", "collector-health-port", "operator-metrics-port", "console-port"} {
		d.ports[f] = harness.FreePort(t)
		args = append(args, fmt.Sprintf("-%s=%d", f, d.ports[f]))
	}
	d.cmd = exec.Command(bin, append(args, "-dir", d.state)...)
	d.cmd.Dir = tools.RepoRoot
	// Pdeathsig: if this test dies, the demo dies with it (its watchdog then removes the rest).
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if d.owner, err = harness.OwnerOf(d.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			d.mu.Lock()
			d.printed.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			select {
			case d.lines <- sc.Text():
			default: // nobody is waiting for lines any more
			}
		}
		r.Close()
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		// A test that failed before its own Ctrl-C still stops the demo, and keeps its logs.
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-d.exited:
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
		if t.Failed() {
			t.Logf("the demo printed:\n%s\nits logs and state are kept in %s", d.output(), harness.KeepArtifact(t, d.state))
		}
	})
	return d
}

func (d *demoProcess) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.printed.String()
}

// waitLine waits for a printed line containing s and returns it.
func (d *demoProcess) waitLine(t *testing.T, s string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-d.lines:
			if strings.Contains(l, s) {
				return l
			}
		case <-d.exited:
			t.Fatalf("the demo exited (%v) before printing %q:\n%s", d.err, s, d.output())
		case <-deadline:
			t.Fatalf("the demo did not print %q within %s:\n%s", s, timeout, d.output())
		}
	}
}

// ctrlC sends SIGINT to the demo's whole process group, as a terminal's Ctrl-C does.
func (d *demoProcess) ctrlC(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for the demo to exit and returns its exit code.
func (d *demoProcess) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(timeout):
		t.Fatalf("the demo did not exit within %s:\n%s", timeout, d.output())
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// noLeftovers checks, within a bounded wait, that no process the demo started is alive: every
// component carries the demo's owner marker (their children too), whatever its command line.
func (d *demoProcess) noLeftovers(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []string
		for _, p := range harness.ProcessesOwnedBy(d.owner) {
			left = append(left, p.String())
		}
		left = append(left, processesMentioning(d.state)...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of the demo outlived it by %s:\n%s", within, strings.Join(left, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDemo runs `make demo`'s program the way a user does — on free ports so that it can run
// beside anything — and checks what the README promises, with the queries it prints: a slow
// reconcile whose root span has API-call children and the API server's own spans joined under
// the wire request; the operator's log line of that reconcile carrying its trace ID; failed
// reconciles; reconciles per second by result from Prometheus; and Ctrl-C stopping everything.
func TestDemo(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	d := startDemo(t)
	start := time.Now()
	d.waitLine(t, "] ready", 3*time.Minute)
	t.Logf("demo ready after %s", time.Since(start).Round(time.Millisecond))
	d.waitLine(t, "Ctrl-C stops everything", 10*time.Second)
	queries := printedQueries(d.output())
	if len(queries) != 3 {
		t.Fatalf("want the 3 curl queries of the README, found %d:\n%s", len(queries), d.output())
	}
	jaegerURL := fmt.Sprintf("http://127.0.0.1:%d", d.ports["jaeger-port"])
	promURL := fmt.Sprintf("http://127.0.0.1:%d", d.ports["prometheus-port"])
	for i, q := range queries[:2] {
		if !strings.HasPrefix(q.url, jaegerURL+"/api/traces?") {
			t.Fatalf("printed query %d %q does not use the configured Jaeger port", i, q.url)
		}
	}
	if queries[2].url != promURL+"/api/v1/query" || queries[2].data == "" {
		t.Fatalf("printed Prometheus query %+v does not use the configured port", queries[2])
	}
	ctx := ctxTimeout(t, 2*time.Minute)
	jaeger := &harness.Jaeger{QueryURL: jaegerURL}

	// The slow-reconcile query, as a user pastes it.
	var slow harness.JaegerTrace
	waitFor(t, ctx, "a slow reconcile trace with API-call children and the API server's spans", func() (bool, error) {
		var traces []harness.JaegerTrace
		if err := jaeger.Get(ctx, strings.TrimPrefix(queries[0].url, jaegerURL), &traces); err != nil {
			return false, err
		}
		for _, tr := range traces {
			if slowTraceComplete(tr) {
				slow = tr
				return true, nil
			}
		}
		return false, nil
	})
	if d := rootSpan(slow).Duration; d < 1_500_000 {
		t.Errorf("the slow query returned a %d µs reconcile; the slow sample sleeps 1.5 s", d)
	}
	// The operator's log line of that reconcile carries its trace ID.
	logs, _ := filepath.Glob(filepath.Join(d.state, "*", "workload-operator.log"))
	if len(logs) != 1 {
		t.Fatalf("want one workload-operator.log under %s, found %v", d.state, logs)
	}
	b, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	logLine := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "slowing down on purpose") && strings.Contains(l, slow.TraceID) {
			logLine = l
		}
	}
	if logLine == "" {
		t.Errorf("no 'slowing down on purpose' line in %s carries the slow reconcile's trace ID %s", logs[0], slow.TraceID)
	}

	// The failed-reconcile query: only failed reconciles, of the failing samples.
	waitFor(t, ctx, "failed reconciles of the broken and flaky samples", func() (bool, error) {
		var traces []harness.JaegerTrace
		if err := jaeger.Get(ctx, strings.TrimPrefix(queries[1].url, jaegerURL), &traces); err != nil {
			return false, err
		}
		objects := map[string]bool{}
		for _, tr := range traces {
			root := rootSpan(tr)
			if r, _ := root.Tag("watchtower.reconcile.result"); r != "error" {
				return false, fmt.Errorf("the failed-reconcile query returned a reconcile with result %q", r)
			}
			o, _ := root.Tag("watchtower.object.name")
			objects[fmt.Sprint(o)] = true
		}
		return len(traces) > 0 && !objects["<nil>"] && !objects["fast-nginx"] && !objects["slow-memory"], nil
	})

	// The Prometheus query: reconciles per second by result, both successes and errors.
	prom := &harness.Prometheus{URL: promURL}
	waitFor(t, ctx, "reconcile rates by result in Prometheus", func() (bool, error) {
		promql, _ := strings.CutPrefix(queries[2].data, "query=")
		samples, err := prom.Query(ctx, promql)
		if err != nil {
			return false, err
		}
		rates := map[string]float64{}
		for _, s := range samples {
			rates[s.Metric["watchtower_reconcile_result"]] = s.Value
		}
		return rates["success"] > 0 && rates["error"] > 0, nil
	})

	// The console, in a browser, over the same stack.
	t.Run("console", func(t *testing.T) { checkConsole(t, d, slow, logLine) })

	// Ctrl-C stops everything: the demo exits 0 and leaves no process behind.
	d.ctrlC(t)
	if code := d.waitExit(t, 90*time.Second); code != 0 {
		t.Fatalf("the demo exited %d on Ctrl-C, want 0:\n%s", code, d.output())
	}
	d.noLeftovers(t, 0)
}

// A Ctrl-C while the demo is still starting stops what has started, at once; a second one
// stops it immediately. Either way nothing it started is left.
func TestDemoInterruptedWhileStarting(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	for _, stop := range []string{"1 Ctrl-C", "2 Ctrl-C", "SIGKILL"} {
		t.Run(stop, func(t *testing.T) {
			d := startDemo(t)
			d.waitLine(t, "starting Kafka", 2*time.Minute) // Jaeger runs; Kafka is starting
			start := time.Now()
			if stop == "SIGKILL" {
				// The demo alone, as the OOM killer or `kill -9 <pid>` would: nothing of it can
				// run; its components must go with it.
				if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				_ = d.waitExit(t, 30*time.Second)
			} else {
				d.ctrlC(t)
				if stop == "2 Ctrl-C" {
					time.Sleep(200 * time.Millisecond)
					d.ctrlC(t)
				}
				if code := d.waitExit(t, 30*time.Second); code != 130 {
					t.Errorf("the demo exited %d when interrupted while starting, want 130:\n%s", code, d.output())
				}
				t.Logf("exited %s after the first Ctrl-C", time.Since(start).Round(time.Millisecond))
				if stop == "2 Ctrl-C" && !strings.Contains(d.output(), "second Ctrl-C") {
					t.Errorf("the demo did not say it stops at once:\n%s", d.output())
				}
			}
			// Jaeger and Kafka stopped by the demo, or killed with it and by its watchdog.
			d.noLeftovers(t, 15*time.Second)
			t.Logf("nothing of the demo left %s after the %s", time.Since(start).Round(time.Millisecond), stop)
		})
	}
}

type printedQuery struct{ url, data string }

// printedQueries returns the `curl -s 'URL' [--data-urlencode 'DATA']` commands the demo printed.
func printedQueries(out string) []printedQuery {
	var qs []printedQuery
	for _, l := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(l, "curl -s '")
		if !ok {
			continue
		}
		u, rest, _ := strings.Cut(rest, "'")
		q := printedQuery{url: u}
		if _, data, ok := strings.Cut(rest, "--data-urlencode '"); ok {
			q.data = strings.TrimSuffix(data, "'")
		}
		qs = append(qs, q)
	}
	return qs
}

func rootSpan(tr harness.JaegerTrace) harness.JaegerSpan {
	for _, s := range tr.Spans {
		if s.OperationName == "reconcile workload" && s.ParentSpanID() == "" {
			return s
		}
	}
	return harness.JaegerSpan{}
}

// slowTraceComplete: a reconcile root with an API-call child, and an API server span (service
// apiserver) whose parent is one of the operator's spans: the README's example trace.
func slowTraceComplete(tr harness.JaegerTrace) bool {
	root := rootSpan(tr)
	if root.SpanID == "" {
		return false
	}
	ours, apiChild, joined := map[string]bool{}, false, false
	for _, s := range tr.Spans {
		if tr.Processes[s.ProcessID].ServiceName == "workload-operator" {
			ours[s.SpanID] = true
		}
		if src, ok := s.Tag("watchtower.api.source"); ok && src != "" && s.ParentSpanID() == root.SpanID {
			apiChild = true
		}
	}
	for _, s := range tr.Spans {
		if tr.Processes[s.ProcessID].ServiceName == "apiserver" && ours[s.ParentSpanID()] {
			joined = true
		}
	}
	return apiChild && joined
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
