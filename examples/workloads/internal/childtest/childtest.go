// Package childtest runs a workload program's real main in a child process — the test binary
// re-executed — and stops it the way the kubelet does, for the workloads' own tests.
package childtest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Child is a running copy of the test binary whose output is being collected.
type Child struct {
	cmd *exec.Cmd
	out lockedBuffer
}

// Start re-executes the test binary running only test (a test function that calls main() when
// env, a NAME=1 assignment, is set).
func Start(t *testing.T, test, env string) *Child {
	t.Helper()
	c := &Child{cmd: exec.Command(os.Args[0], "-test.run=^"+test+"$")}
	c.cmd.Env = append(os.Environ(), env)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.cmd.Process.Kill() })
	return c
}

// WaitForLine waits until the child wrote a line containing want (e.g. once its signal handler
// is in place) and returns that line.
func (c *Child) WaitForLine(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(c.out.String(), "\n") {
			if strings.Contains(line, want) {
				return line
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the child never wrote %q; output: %s", want, c.out.String())
	return ""
}

// StopWithSIGTERM sends SIGTERM, as the kubelet does, and fails unless the child exits with
// status 0 within 10 seconds.
func (c *Child) StopWithSIGTERM(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, c.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10s after SIGTERM\n%s", c.out.String())
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
