package harness

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func shell(t *testing.T, name, script string, stop time.Duration) *Process {
	t.Helper()
	return StartProcess(t, ProcessSpec{Name: name, Path: "/bin/sh", Args: []string{"-c", script}, StopTimeout: stop})
}

func TestStopSendsSIGKILLAfterTimeout(t *testing.T) {
	p := shell(t, "stubborn", `trap "" TERM; echo started; while :; do sleep 0.1; done`, 300*time.Millisecond)
	waitLog(t, p, "started")
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if !p.Killed() {
		t.Fatalf("a process that ignores SIGTERM should have been SIGKILLed; state %v", p.cmd.ProcessState)
	}
	if !strings.Contains(p.LogTail(4096), "sending SIGKILL") {
		t.Errorf("the log should say the process needed SIGKILL, got:\n%s", p.LogTail(4096))
	}
}

func TestStopIsGracefulWhenSIGTERMWorks(t *testing.T) {
	p := shell(t, "polite", `echo started; exec sleep 60`, 10*time.Second)
	waitLog(t, p, "started")
	start := time.Now()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.Killed() {
		t.Fatal("a process that exits on SIGTERM must not be SIGKILLed")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop waited %s for a process that exits on SIGTERM", d)
	}
	// Stop again is a no-op.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestStopSignalsTheWholeProcessGroup(t *testing.T) {
	// A wrapper script whose child would otherwise outlive it.
	p := shell(t, "wrapper", `sleep 300 & echo child=$!; wait`, 2*time.Second)
	waitLog(t, p, "child=")
	pid := pidFromLog(t, p, "child=")
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
}

func TestWaitReadyReportsEarlyExit(t *testing.T) {
	p := shell(t, "crasher", `echo "unknown flag --foo" >&2; exit 3`, time.Second)
	start := time.Now()
	err := p.WaitReady(30*time.Second, func(context.Context) error { return errors.New("connection refused") })
	if err == nil {
		t.Fatal("WaitReady succeeded for a process that exited")
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("WaitReady took %s to notice the exit", time.Since(start))
	}
	for _, want := range []string{"crasher exited before it was ready", "exit status 3", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q should contain %q", err, want)
		}
	}
	if !strings.Contains(p.LogTail(1024), "unknown flag --foo") {
		t.Errorf("the log should hold the process's stderr, got %q", p.LogTail(1024))
	}
}

// The child half of TestNoProcessOutlivesADeadTest: started by the parent with
// HARNESS_CHILD_MODE set, it starts a long sleep, reports its PID, and then dies the way the
// mode says.
func TestHelperChildDies(t *testing.T) {
	mode := os.Getenv("HARNESS_CHILD_MODE")
	if mode == "" {
		return // only meaningful as the parent's subprocess
	}
	p := StartProcess(t, ProcessSpec{Name: "orphan-candidate", Path: "/bin/sleep", Args: []string{"300"}})
	if err := os.WriteFile(os.Getenv("HARNESS_CHILD_PIDFILE"), []byte(strconv.Itoa(p.Pid())), 0o644); err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "panic":
		panic("test panics with a component running")
	case "sigkill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	}
}

// TestNoProcessOutlivesADeadTest runs a test binary that starts a component and then panics, or
// is SIGKILLed (as `go test -timeout` or an impatient CI would), and checks that the component
// did not outlive it.
func TestNoProcessOutlivesADeadTest(t *testing.T) {
	for _, mode := range []string{"panic", "sigkill"} {
		t.Run(mode, func(t *testing.T) {
			pidfile := t.TempDir() + "/pid"
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChildDies$", "-test.count=1")
			cmd.Env = append(os.Environ(), "HARNESS_CHILD_MODE="+mode, "HARNESS_CHILD_PIDFILE="+pidfile)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the child test should have died, it passed:\n%s", out)
			}
			b, rerr := os.ReadFile(pidfile)
			if rerr != nil {
				t.Fatalf("the child did not report its component's PID (%v):\n%s", rerr, out)
			}
			pid, _ := strconv.Atoi(string(b))
			waitGone(t, pid)
		})
	}
}

func waitLog(t *testing.T, p *Process, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.LogTail(4096), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged %q; log:\n%s", p.Name(), s, p.LogTail(4096))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pidFromLog(t *testing.T, p *Process, prefix string) int {
	t.Helper()
	for _, line := range strings.Split(p.LogTail(4096), "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(rest))
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no %q line in the log of %s", prefix, p.Name())
	return 0
}

// waitGone waits until pid no longer exists (a zombie counts as gone: it no longer runs).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d outlived the test that started it", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const failingChildEnv = "WATCHTOWER_HARNESS_TEST_FAILING_CHILD"

// A failing test keeps each component's whole log in its artifact directory (go test
// -artifacts -outputdir D, as `make test` runs) and names it, instead of losing it with
// t.TempDir; a passing test keeps nothing.
func TestFailingTestKeepsComponentLogs(t *testing.T) {
	if v := os.Getenv(failingChildEnv); v != "" {
		p := shell(t, "chatty", `echo "line one of the component log"; echo "the line that says why"; exec sleep 60`, time.Second)
		waitLog(t, p, "says why")
		if v == "fail" {
			t.Error("the child test fails on purpose")
		}
		return
	}
	for _, fail := range []bool{true, false} {
		out := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestFailingTestKeepsComponentLogs$", "-test.v", "-test.artifacts", "-test.outputdir="+out)
		cmd.Env = append(os.Environ(), failingChildEnv+"="+map[bool]string{true: "fail", false: "pass"}[fail])
		cmd.SysProcAttr = sysProcAttr()
		b, err := cmd.CombinedOutput()
		var kept []string
		_ = filepath.WalkDir(filepath.Join(out, "_artifacts"), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "chatty.log" {
				kept = append(kept, p)
			}
			return nil
		})
		if !fail {
			if err != nil || len(kept) != 0 {
				t.Errorf("a passing test: exit %v, kept %v; want success and nothing kept\n%s", err, kept, b)
			}
			continue
		}
		if err == nil {
			t.Fatalf("the child test should have failed:\n%s", b)
		}
		if len(kept) != 1 {
			t.Fatalf("want the component's log kept once under %s/_artifacts, found %v\n%s", out, kept, b)
		}
		log, _ := os.ReadFile(kept[0])
		if !strings.Contains(string(log), "line one of the component log\nthe line that says why\n") {
			t.Errorf("kept log %s holds %q, want the whole log", kept[0], log)
		}
		if !strings.Contains(string(b), "log ("+kept[0]+")") {
			t.Errorf("the test output should name where the log is kept (%s):\n%s", kept[0], b)
		}
	}
}
