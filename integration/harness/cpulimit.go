package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

// cpuLimitSeq names each limit's cgroup apart within one test binary.
var cpuLimitSeq atomic.Int64

// LimitCPU puts process p in a cgroup of its own that may use at most cpus CPUs (the CFS
// quota, as a Kubernetes CPU limit does), until the test ends. It needs root and the cpu
// controller (cgroup v1's cpu hierarchy, or cgroup v2 with cpu in the root's subtree_control).
//
// Why: a test that overloads a component must know that component's capacity, and on a
// shared two-core machine that capacity is whatever the other tests leave; a limit makes it
// a property of the test, as it is of a pod.
func LimitCPU(t TB, p *Process, cpus float64) {
	t.Helper()
	if cpus <= 0 {
		t.Fatalf("harness: LimitCPU(%s, %v): the limit must be positive", p.Name(), cpus)
	}
	const period = 100_000 // µs, the kernel's default CFS period
	quota := int(cpus * period)
	name := fmt.Sprintf("%s-test-%d-%d", cgroupName(p.Name()), os.Getpid(), cpuLimitSeq.Add(1))
	pid := strconv.Itoa(p.Pid())

	var dir, parentProcs string
	var files [][2]string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		// cgroup v2: the root must delegate the cpu controller to its children.
		ctl, _ := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control")
		if !strings.Contains(" "+strings.TrimSpace(string(ctl))+" ", " cpu ") {
			if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+cpu"), 0o644); err != nil {
				t.Fatalf("harness: LimitCPU: enabling the cpu controller in /sys/fs/cgroup: %v", err)
			}
		}
		dir, parentProcs = filepath.Join("/sys/fs/cgroup", name), "/sys/fs/cgroup/cgroup.procs"
		files = [][2]string{{"cpu.max", fmt.Sprintf("%d %d", quota, period)}}
	} else {
		root := "/sys/fs/cgroup/cpu"
		if _, err := os.Stat(filepath.Join(root, "cpu.cfs_quota_us")); err != nil {
			t.Fatalf("harness: LimitCPU needs the cgroup cpu controller (%v)", err)
		}
		dir, parentProcs = filepath.Join(root, name), filepath.Join(root, "cgroup.procs")
		files = [][2]string{{"cpu.cfs_period_us", strconv.Itoa(period)}, {"cpu.cfs_quota_us", strconv.Itoa(quota)}}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("harness: LimitCPU: %v (it needs root)", err)
	}
	t.Cleanup(func() {
		// Back to the root cgroup if still running, so that the directory can go.
		_ = os.WriteFile(parentProcs, []byte(pid), 0o644)
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Logf("harness: removing cgroup %s: %v", dir, err)
		}
	})
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0o644); err != nil {
			t.Fatalf("harness: LimitCPU: writing %s: %v", f[0], err)
		}
	}
	// cgroup.procs moves every thread of the process.
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pid), 0o644); err != nil {
		t.Fatalf("harness: LimitCPU: moving %s (pid %s): %v", p.Name(), pid, err)
	}
}

// ReapCPULimits removes the cgroups LimitCPU made for test binaries that are gone (a binary
// SIGKILLed before its cleanup ran), after ReapProcesses has killed what was in them, and
// returns one error per cgroup it found.
func ReapCPULimits() []error {
	var found []error
	for _, root := range []string{"/sys/fs/cgroup/cpu", "/sys/fs/cgroup"} {
		dirs, _ := filepath.Glob(filepath.Join(root, "gowatchtower-*-test-*-*"))
		for _, dir := range dirs {
			rest := filepath.Base(dir)
			rest = rest[strings.LastIndex(rest, "-test-")+len("-test-"):]
			pidS, _, _ := strings.Cut(rest, "-")
			if pid, err := strconv.Atoi(pidS); err != nil || processAlive(pid) {
				continue
			}
			err := os.Remove(dir)
			found = append(found, fmt.Errorf("a CPU-limit cgroup outlived its test binary: %s (removed: %v)", dir, err == nil))
		}
	}
	return found
}

func processAlive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}
