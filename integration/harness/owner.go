package harness

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Every process the harness starts carries OwnerEnv=<pid>:<start time> of the test binary (or
// demo) that started it, and so do their children, which inherit it. That marker, not the
// parent PID, is how a leftover is recognised: under a subreaper (tini, `systemd --user`) an
// orphan's parent is not 1, and a component's own children (a JVM's, a shell's) have no
// Pdeathsig of their own.
const OwnerEnv = "WATCHTOWER_HARNESS_OWNER"

// watchdogEnv makes a binary that links the harness run the watchdog instead of its main.
const watchdogEnv = "WATCHTOWER_HARNESS_WATCHDOG"

var (
	ownerOnce  sync.Once
	ownerToken string
)

// owner is this process's marker value.
func owner() string {
	ownerOnce.Do(func() {
		var err error
		if ownerToken, err = OwnerOf(os.Getpid()); err != nil {
			ownerToken = fmt.Sprintf("%d:0", os.Getpid())
		}
	})
	return ownerToken
}

// OwnerOf is the OwnerEnv value the harness in process pid gives its components: the pid and
// the process's start time, so that a reused pid never counts. Tests use it to find what a
// child test binary or the demo started (ProcessesOwnedBy).
func OwnerOf(pid int) (string, error) {
	st, err := procStartTime(pid)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d:%s", pid, st), nil
}

// ownerAlive reports whether the process named by a marker value still runs.
func ownerAlive(token string) bool {
	pidStr, start, ok := strings.Cut(token, ":")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil {
		return false
	}
	st, err := procStartTime(pid)
	return err == nil && st == start && !procZombie(pid)
}

func procZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// componentEnv is the environment of a component: the test's own, without what configures
// GoWatchtower or OpenTelemetry (a developer's OTEL_EXPORTER_OTLP_ENDPOINT or
// WATCHTOWER_SLOW_THRESHOLD_MS must not change what a test sees) and without KUBECONFIG (a
// component must never reach the developer's real cluster); then the owner marker, then extra,
// which the caller sets on purpose and so wins.
func componentEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if developerVariable(k) || strings.HasPrefix(k, "WATCHTOWER_HARNESS_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, OwnerEnv+"="+owner())
	return append(env, extra...)
}

// developerVariable reports whether an environment variable is one a developer may have set
// for their own use that would change what a component under test does: OpenTelemetry's and
// GoWatchtower's configuration, and KUBECONFIG (their real cluster). WATCHTOWER_TOOLS_DIR
// (where the harness finds the tools) and the harness' own markers configure nothing.
func developerVariable(k string) bool {
	switch {
	case k == "WATCHTOWER_TOOLS_DIR", strings.HasPrefix(k, "WATCHTOWER_HARNESS_"):
		return false
	case strings.HasPrefix(k, "OTEL_"), strings.HasPrefix(k, "WATCHTOWER_"), k == "KUBECONFIG":
		return true
	}
	return false
}

// IsolateEnvironment removes the developer's variables (developerVariable) from this process's
// own environment, and returns their names. The processes the harness starts get a filtered
// copy anyway (componentEnv); those it does not start itself inherit this process's
// environment: envtest's etcd and kube-apiserver (whose OpenTelemetry exporter reads
// OTEL_EXPORTER_OTLP_*), Kafka's storage tool, a test's own exec.Command, and the
// OpenTelemetry SDK of an operator run in the test process. Call it first in TestMain (or
// main), before any test sets variables of its own with t.Setenv.
func IsolateEnvironment() []string {
	var removed []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); developerVariable(k) {
			_ = os.Unsetenv(k)
			removed = append(removed, k)
		}
	}
	return removed
}

// Orphan is a process the harness marked: one whose owner is gone, for ReapProcesses.
type Orphan struct {
	Pid     int
	Cmdline string
}

func (o Orphan) String() string { return fmt.Sprintf("pid %d: %s", o.Pid, o.Cmdline) }

// ReapProcesses SIGKILLs every process carrying OwnerEnv whose owner is no longer running and
// returns them: what a test binary that died (SIGKILL, panic, timeout) left behind. The
// watchdog calls it when its owner dies; hack/reap.sh after the suite; the harness before it
// starts anything.
func ReapProcesses() []Orphan {
	var out []Orphan
	// A component with a death signal is already on its way out when its owner is gone: give
	// such processes a moment, so that only what would really have outlived its test is killed
	// and reported.
	for deadline := time.Now().Add(time.Second); len(orphans()) > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	// Repeat: a dying shell may have started a child between two scans.
	for round := 0; round < 50; round++ {
		found := orphans()
		if len(found) == 0 {
			break
		}
		for _, o := range found {
			if syscall.Kill(o.Pid, syscall.SIGKILL) == nil && round == 0 {
				out = append(out, o)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

func orphans() []Orphan {
	return markedProcesses(func(token string) bool { return !ownerAlive(token) })
}

// ProcessesOwnedBy lists the live processes carrying OwnerEnv=owner (an OwnerOf value).
func ProcessesOwnedBy(owner string) []Orphan {
	return markedProcesses(func(token string) bool { return token == owner })
}

// markedProcesses lists the live processes (zombies excluded) whose OwnerEnv value match
// accepts.
func markedProcesses(match func(token string) bool) []Orphan {
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	var out []Orphan
	marker := []byte(OwnerEnv + "=")
	for _, p := range procs {
		pid, err := strconv.Atoi(strings.Split(p, "/")[2])
		if err != nil || pid == os.Getpid() || procZombie(pid) {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var token string
		for _, kv := range bytes.Split(b, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, marker); ok {
				token = string(v)
			}
		}
		if token == "" || !match(token) {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, Orphan{Pid: pid, Cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))})
	}
	return out
}

var watchdogOnce sync.Once

// startWatchdog starts, once per test binary, a watchdog process in its own session: it waits
// for this process to end, however it ends, and then reaps what it left behind — processes
// (ReapProcesses) and test clusters (ReapClusters) — so that a killed `go test` leaves nothing
// running even before the next run. It learns of the death from a pipe whose write end only
// this process holds: the kernel closes it when the process dies, SIGKILL included.
func startWatchdog() {
	watchdogOnce.Do(func() {
		r, w, err := os.Pipe()
		if err != nil {
			return
		}
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), watchdogEnv+"="+owner())
		cmd.ExtraFiles = []*os.File{r} // fd 3 in the watchdog
		// Its own session: a terminal's Ctrl-C or a kill of the test's process group must not
		// take the watchdog with it; no stdout/stderr of ours, so `go test` does not wait for it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			r.Close()
			w.Close()
			return
		}
		r.Close()
		go func() { _ = cmd.Wait() }()
		watchdogPipe = w // held, never written, until this process ends
		// Processes the harness does not start itself (envtest's etcd and kube-apiserver, a
		// test's own exec.Command) inherit the marker too.
		_ = os.Setenv(OwnerEnv, owner())
	})
}

// watchdogPipe is the write end of the watchdog's pipe. Only written, never read: it is held so
// that neither a close nor the garbage collector's finalizer ends the watchdog's wait early.
//
//lint:ignore U1000 held open until the process ends; see startWatchdog
var watchdogPipe *os.File

// The watchdog is the test binary itself, re-executed: its harness init runs the watchdog and
// exits before any test or main runs.
func init() {
	token := os.Getenv(watchdogEnv)
	if token == "" {
		return
	}
	_, _ = io.Copy(io.Discard, os.NewFile(3, "owner")) // returns when the owner is gone
	report := ReapProcesses()
	clusterErrs := ReapClusters()
	if len(report) > 0 || len(clusterErrs) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%s the harness watchdog of %s reaped what its test left behind:\n", time.Now().Format(time.RFC3339), token)
		for _, o := range report {
			fmt.Fprintf(&b, "  process %s\n", o)
		}
		for _, e := range clusterErrs {
			fmt.Fprintf(&b, "  %v\n", e)
		}
		// Visible to hack/reap.sh, which prints it and fails the suite.
		_ = os.MkdirAll(WatchdogReportDir, 0o755)
		_ = os.WriteFile(filepath.Join(WatchdogReportDir, strings.ReplaceAll(token, ":", "-")+".log"), []byte(b.String()), 0o644)
	}
	os.Exit(0)
}

// WatchdogReportDir holds what watchdogs reaped; hack/reap.sh reports and removes it.
var WatchdogReportDir = filepath.Join(os.TempDir(), "gowatchtower-reaped")
