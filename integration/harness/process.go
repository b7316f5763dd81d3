package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultStopTimeout is how long Stop waits after SIGTERM before it sends SIGKILL.
const DefaultStopTimeout = 10 * time.Second

// ProcessSpec describes a subprocess to start.
type ProcessSpec struct {
	// Name identifies the process in logs and errors, e.g. "kafka".
	Name string
	// Path is the executable; Args are its arguments (without argv[0]).
	Path string
	Args []string
	// Env is appended to the test process's environment.
	Env []string
	// Dir is the working directory; empty means a fresh temporary directory.
	Dir string
	// StopTimeout bounds the wait between SIGTERM and SIGKILL; zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// NetNS, when set, is a network namespace file (e.g. a Cluster's Network().NetNS): the
	// process runs inside it, entered with nsenter, which execs the program in place, so the
	// process group, the death signal and Stop work as without it.
	NetNS string
}

// Process is a running subprocess whose output is captured in a log file.
type Process struct {
	spec    ProcessSpec
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error

	stopOnce sync.Once
	stopErr  error
}

// StartProcess starts spec and registers a cleanup that stops it and, when the test failed,
// prints the tail of its log.
func StartProcess(t TB, spec ProcessSpec) *Process {
	t.Helper()
	p, err := startProcess(t.TempDir(), spec)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("harness: %v", err)
		}
		if t.Failed() {
			t.Logf("harness: last lines of the %s log (%s):\n%s", p.spec.Name, KeepArtifact(t, p.logPath), p.LogTail(64<<10))
		}
	})
	return p
}

func startProcess(tmp string, spec ProcessSpec) (*Process, error) {
	if spec.StopTimeout == 0 {
		spec.StopTimeout = DefaultStopTimeout
	}
	if spec.Dir == "" {
		spec.Dir = filepath.Join(tmp, spec.Name)
		if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(tmp, spec.Name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	path, args := spec.Path, spec.Args
	if spec.NetNS != "" {
		// nsenter, not `ip netns exec`: the latter remounts /sys, which hides the cgroup
		// hierarchy the kubelet and containerd need.
		path, args = "nsenter", append([]string{"--net=" + spec.NetNS, "--", spec.Path}, spec.Args...)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = spec.Dir
	cmd.Env = componentEnv(spec.Env)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	startWatchdog()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", spec.Name, spec.Path, err)
	}
	p := &Process{spec: spec, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Name is the spec's name.
func (p *Process) Name() string { return p.spec.Name }

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath is the file holding the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// LogTail returns up to the last max bytes of the log.
func (p *Process) LogTail(max int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if st.Size() > max {
		if _, err := f.Seek(st.Size()-max, io.SeekStart); err != nil {
			return err.Error()
		}
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// WaitReady polls check every 100ms until it returns nil, the process exits, or timeout passes.
// The error names the process and carries the last check error.
func (p *Process) WaitReady(timeout time.Duration, check func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v); last readiness error: %v", p.spec.Name, p.waitErr, last)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v", p.spec.Name, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// MustWaitReady is WaitReady that fails the test, printing the log tail.
func (p *Process) MustWaitReady(t TB, timeout time.Duration, check func(ctx context.Context) error) {
	t.Helper()
	if err := p.WaitReady(timeout, check); err != nil {
		t.Fatalf("harness: %v\n--- %s log tail ---\n%s", err, p.spec.Name, p.LogTail(16<<10))
	}
}

// Stop sends SIGTERM to the process group, waits up to StopTimeout, then sends SIGKILL. It is
// safe to call more than once. A process that needed SIGKILL is not an error: that is what
// the timeout is for; the log says so.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		pgid := -p.cmd.Process.Pid
		if err := syscall.Kill(pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			p.stopErr = fmt.Errorf("stop %s: SIGTERM: %w", p.spec.Name, err)
		}
		select {
		case <-p.done:
			return
		case <-time.After(p.spec.StopTimeout):
		}
		appendLog(p.logPath, fmt.Sprintf("harness: %s did not exit %s after SIGTERM; sending SIGKILL\n", p.spec.Name, p.spec.StopTimeout))
		if err := syscall.Kill(pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			p.stopErr = fmt.Errorf("stop %s: SIGKILL: %w", p.spec.Name, err)
			return
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.stopErr = fmt.Errorf("stop %s: still running 10s after SIGKILL (pid %d)", p.spec.Name, p.cmd.Process.Pid)
		}
	})
	return p.stopErr
}

// ExitCode waits for the process to exit and returns its exit status (-1 when a signal ended it).
func (p *Process) ExitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// Killed reports whether the process ended by SIGKILL.
func (p *Process) Killed() bool {
	<-p.done
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func appendLog(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(line)
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// KeepArtifact copies a file or folder (a component's log, a demo's state) into the test's
// artifact directory — Go 1.26's t.ArtifactDir, which `go test -artifacts -outputdir D` keeps
// under D/_artifacts and `make test` sets to bin/test-output — and returns where it is now, or
// path itself when the test has no artifact directory or the copy failed. Tests call it when
// they have failed, so a passing run keeps nothing.
func KeepArtifact(t TB, path string) string {
	st, err := os.Stat(path)
	dst := artifactPath(t, filepath.Base(path))
	if err != nil || dst == "" || strings.HasPrefix(path, filepath.Dir(dst)+string(filepath.Separator)) {
		return path // nothing to keep, nowhere to keep it, or kept there already (the demo's state)
	}
	if st.IsDir() {
		err = os.CopyFS(dst, os.DirFS(path))
	} else {
		var b []byte
		if b, err = os.ReadFile(path); err == nil {
			err = os.WriteFile(dst, b, 0o644)
		}
	}
	if err != nil {
		return path
	}
	return dst
}

// keepText writes content as name into the test's artifact directory (see KeepArtifact).
func keepText(t TB, name, content string) string {
	dst := artifactPath(t, name)
	if dst == "" {
		return "not kept: the test has no artifact directory"
	}
	if err := os.WriteFile(dst, []byte(content), 0o644); err != nil {
		return "not kept: " + err.Error()
	}
	return dst
}

// artifactPath is a free path for name in the test's artifact directory, or "" when the test
// has none (a TB without ArtifactDir).
func artifactPath(t TB, name string) string {
	a, ok := t.(interface{ ArtifactDir() string })
	if !ok {
		return ""
	}
	dst := filepath.Join(a.ArtifactDir(), name)
	for i := 2; ; i++ { // two collectors of one test both log to otelcol-watchtower.log
		if _, err := os.Lstat(dst); os.IsNotExist(err) {
			return dst
		}
		dst = filepath.Join(a.ArtifactDir(), fmt.Sprintf("%d-%s", i, name))
	}
}
