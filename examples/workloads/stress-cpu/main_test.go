package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestPlanSpreadsCPUsOverWorkers(t *testing.T) {
	for _, tc := range []struct {
		cpus    float64
		workers int
		duty    float64
	}{
		{0.1, 1, 0.1},
		{0.5, 1, 0.5},
		{1, 1, 1},
		{1.5, 2, 0.75},
		{2, 2, 1},
	} {
		p, err := newPlan(tc.cpus)
		if err != nil {
			t.Fatalf("newPlan(%g): %v", tc.cpus, err)
		}
		if p.workers != tc.workers || p.duty != tc.duty {
			t.Errorf("newPlan(%g) = %d workers at %g, want %d at %g", tc.cpus, p.workers, p.duty, tc.workers, tc.duty)
		}
	}
	for _, bad := range []string{"0", "-1", "NaN", "1000"} {
		if err := run(context.Background(), []string{"-cpus=" + bad}, &bytes.Buffer{}); err == nil {
			t.Errorf("-cpus=%s was accepted", bad)
		}
	}
}

// TestRunSaysWhatItDoesAndStops: one start line, and run returns once its context is done.
func TestRunSaysWhatItDoesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-cpus=1.5"}, &out) }()
	time.Sleep(150 * time.Millisecond) // at least one full period of both workers
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
	if first := strings.SplitN(out.String(), "\n", 2)[0]; !strings.Contains(first, "burning 1.5 CPU as 2 worker(s) busy 75%") {
		t.Errorf("start line %q does not say what it does", first)
	}
	if sink.Load() == 0 {
		t.Error("the workers did no work")
	}
}

// TestExitsZeroOnSIGTERM runs the real main in a child process (this test binary, re-executed)
// and stops it the way the kubelet does.
func TestExitsZeroOnSIGTERM(t *testing.T) {
	if os.Getenv("STRESS_CPU_MAIN") == "1" {
		os.Args = []string{"stress-cpu", "-cpus=0.2"}
		main()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestExitsZeroOnSIGTERM$")
	cmd.Env = append(os.Environ(), "STRESS_CPU_MAIN=1")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForOutput(t, &out, "stress-cpu: burning")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("still running 10s after SIGTERM\n%s", out.String())
	}
}

// lockedBuffer is written by exec's copying goroutine while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitForOutput waits until the child wrote want, i.e. it has installed its signal handler.
func waitForOutput(t *testing.T, out *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(out.String(), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the child never wrote %q; output: %s", want, out.String())
}
