package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gowatchtower/watchtower/examples/workloads/internal/childtest"
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
	child := childtest.Start(t, "TestExitsZeroOnSIGTERM", "STRESS_CPU_MAIN=1")
	child.WaitForLine(t, "stress-cpu: burning")
	child.StopWithSIGTERM(t)
}
