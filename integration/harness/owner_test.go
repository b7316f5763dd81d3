package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A developer's own OpenTelemetry and GoWatchtower settings, and their kubeconfig, never reach
// a component; what the test sets on purpose does, and so does the owner marker.
func TestComponentEnvironmentIsTheTestsOwn(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://developer-laptop:4318")
	t.Setenv("OTEL_SERVICE_NAME", "developer")
	t.Setenv("WATCHTOWER_SLOW_THRESHOLD_MS", "1")
	t.Setenv("KUBECONFIG", "/home/dev/.kube/production")
	t.Setenv("WATCHTOWER_TOOLS_DIR", "/cache/tools")
	p := StartProcess(t, ProcessSpec{Name: "env", Path: "/bin/sleep", Args: []string{"60"},
		Env: []string{"OTEL_SERVICE_NAME=the-test", "WATCHTOWER_QUEUE_DIR=/q"}})
	env := environOf(t, p.Pid())
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "WATCHTOWER_SLOW_THRESHOLD_MS", "KUBECONFIG"} {
		if v, ok := env[k]; ok {
			t.Errorf("the developer's %s=%s leaked into the component", k, v)
		}
	}
	for k, want := range map[string]string{"OTEL_SERVICE_NAME": "the-test", "WATCHTOWER_QUEUE_DIR": "/q",
		"WATCHTOWER_TOOLS_DIR": "/cache/tools", OwnerEnv: owner(), "PATH": os.Getenv("PATH")} {
		if env[k] != want {
			t.Errorf("component's %s = %q, want %q", k, env[k], want)
		}
	}
}

const killedChildEnv = "WATCHTOWER_HARNESS_TEST_KILLED_CHILD"

// TestNothingOutlivesAKilledTestBinary SIGKILLs a test binary that started a component and a
// component whose own child has no death signal (a shell's background job, like a JVM's
// helper), while the parent test is a subreaper as under tini or `systemd --user` — so the
// orphan's parent is not 1. Within seconds nothing is left: the direct children die with their
// test (Pdeathsig), the grandchild is reaped by the test's watchdog, which found it by the
// owner marker and says so in its report.
func TestNothingOutlivesAKilledTestBinary(t *testing.T) {
	if os.Getenv(killedChildEnv) != "" {
		killedChild(t)
		return
	}
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", errno)
	}
	defer syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0)

	cmd := exec.Command(os.Args[0], "-test.run=^TestNothingOutlivesAKilledTestBinary$", "-test.v")
	cmd.Env = append(os.Environ(), killedChildEnv+"=1")
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	var log strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if f, ok := strings.CutPrefix(sc.Text(), "PIDS "); ok {
			for _, s := range strings.Fields(f) {
				n, _ := strconv.Atoi(s)
				pids = append(pids, n)
			}
			break
		}
	}
	if len(pids) != 3 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the child test did not report its components' pids:\n%s", log.String())
	}
	childOwner, err := OwnerOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if got := environOf(t, pid)[OwnerEnv]; got != childOwner {
			t.Fatalf("pid %d carries %s=%q, want the child test's %q", pid, OwnerEnv, got, childOwner)
		}
	}
	report := filepath.Join(WatchdogReportDir, strings.ReplaceAll(childOwner, ":", "-")+".log")
	t.Cleanup(func() { os.Remove(report) }) // hack/reap.sh would otherwise report it

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	grandchild := pids[2]
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for !procZombie(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d (%s) still runs 15s after its test binary was killed", pid, cmdlineOf(pid))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The orphans were ours (the subreaper's) to collect, not init's.
	var ws syscall.WaitStatus
	for _, pid := range pids[:2] {
		_, _ = syscall.Wait4(pid, nil, 0, nil)
	}
	if wpid, err := syscall.Wait4(grandchild, &ws, 0, nil); err != nil || wpid != grandchild {
		t.Errorf("the grandchild %d was not reparented to the subreaper: wait4 = %d, %v", grandchild, wpid, err)
	} else if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the grandchild ended with %v, want SIGKILL from the watchdog", ws)
	}
	var b []byte
	for time.Now().Before(deadline) {
		if b, err = os.ReadFile(report); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(string(b), fmt.Sprintf("pid %d: sleep 601", grandchild)) {
		t.Errorf("the watchdog's report %s should name the grandchild %d; got %q (%v)", report, grandchild, b, err)
	}
}

// killedChild is the killed side of TestNothingOutlivesAKilledTestBinary.
func killedChild(t *testing.T) {
	direct := StartProcess(t, ProcessSpec{Name: "direct", Path: "/bin/sleep", Args: []string{"600"}})
	wrapper := StartProcess(t, ProcessSpec{Name: "wrapper", Path: "/bin/sh",
		Args: []string{"-c", `sleep 601 & echo grandchild=$!; wait`}})
	waitLog(t, wrapper, "grandchild=")
	fmt.Printf("PIDS %d %d %d\n", direct.Pid(), wrapper.Pid(), pidFromLog(t, wrapper, "grandchild="))
	time.Sleep(time.Minute) // killed long before
	t.Fatal("the parent test should have killed this one")
}

func environOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	// Right after exec (exec.Cmd.Start returns once the close-on-exec pipe closed, and a
	// shell's `cmd &` returns at fork) the kernel may not have set up the new image's
	// environment yet, and the file reads empty: none of our processes has an empty one.
	var b []byte
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err = os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 0 || time.Now().After(deadline) {
			break
		}
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

func cmdlineOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// IsolateEnvironment takes the developer's variables out of the test process itself, for what
// the harness does not start (envtest's etcd and kube-apiserver), and keeps the rest.
func TestIsolateEnvironment(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=secret")
	t.Setenv("WATCHTOWER_SLOW_THRESHOLD_MS", "1")
	t.Setenv("KUBECONFIG", "/home/dev/.kube/production")
	t.Setenv("WATCHTOWER_TOOLS_DIR", "/cache/tools")
	t.Setenv(OwnerEnv, "1:2")
	t.Setenv("HOME", "/home/dev")
	removed := IsolateEnvironment()
	for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "WATCHTOWER_SLOW_THRESHOLD_MS", "KUBECONFIG"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%s is still in the environment", k, v)
		}
		if !strings.Contains(" "+strings.Join(removed, " ")+" ", " "+k+" ") {
			t.Errorf("IsolateEnvironment returned %v, without %s", removed, k)
		}
	}
	for k, want := range map[string]string{"WATCHTOWER_TOOLS_DIR": "/cache/tools", OwnerEnv: "1:2", "HOME": "/home/dev"} {
		if got := os.Getenv(k); got != want {
			t.Errorf("%s = %q after IsolateEnvironment, want %q", k, got, want)
		}
	}
}
