package harness

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// hostSysctls are the global (not per network namespace) settings the kubelet changes at start;
// they are saved before and restored after, so a test leaves the host as it found it.
var hostSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

// cgroupName is the cluster's cgroup under every v1 hierarchy: the kubelet's cgroupRoot, so
// that every pod and container is inside it and teardown finds them all.
func cgroupName(name string) string { return "gowatchtower-" + name }

// vethName is the host end of the node's veth pair (at most 15 characters).
func vethName(name string) string { return name + "h" }

// cniNetwork is the CNI network's name; libcni keeps its result cache under it.
func cniNetwork(name string) string { return "gowatchtower-" + name }

// writeClusterOwner records which test process owns the cluster (its owner marker value, pid
// and start time), for ReapClusters.
func writeClusterOwner(dir string) error {
	return os.WriteFile(filepath.Join(dir, "owner"), []byte(owner()+"\n"), 0o644)
}

func procStartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces; fields after its ")" are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	return f[19], nil // field 22: starttime
}

func (c *Cluster) saveSysctls() error {
	c.sysctls = map[string]string{}
	var b strings.Builder
	for _, k := range hostSysctls {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return err
		}
		c.sysctls[k] = strings.TrimSpace(string(v))
		fmt.Fprintf(&b, "%s=%s\n", k, c.sysctls[k])
	}
	return os.WriteFile(filepath.Join(c.Dir, "sysctls"), []byte(b.String()), 0o644)
}

func readSysctls(dir string) map[string]string {
	b, err := os.ReadFile(filepath.Join(dir, "sysctls"))
	if err != nil {
		return nil
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupNetwork creates the node's network namespace (bind-mounted at <dir>/netns, not under
// /run/netns, so that everything the cluster mounts is under its own folder), the veth pair
// that joins it to the test (host 10.89.0.1, node 10.89.0.2), and the cluster's cgroups.
func (c *Cluster) setupNetwork() error {
	ns := filepath.Join(c.Dir, "netns")
	if err := os.WriteFile(ns, nil, 0o644); err != nil {
		return err
	}
	in := func(args ...string) error { return run("nsenter", append([]string{"--net=" + ns, "--"}, args...)...) }
	steps := []func() error{
		func() error { return run("unshare", "--net="+ns, "true") },
		func() error { return in("ip", "link", "set", "lo", "up") },
		func() error {
			return in("ip", "link", "add", "eth0", "type", "veth", "peer", "name", vethName(c.Name), "netns", strconv.Itoa(os.Getpid()))
		},
		func() error { return run("ip", "addr", "add", clusterHostIP+"/24", "dev", vethName(c.Name)) },
		func() error { return run("ip", "link", "set", vethName(c.Name), "up") },
		func() error { return in("ip", "addr", "add", clusterNodeIP+"/24", "dev", "eth0") },
		func() error { return in("ip", "link", "set", "eth0", "up") },
		// The node has no default route (nothing leaves it but through the veth to the test), so
		// its own connections to a ClusterIP (kube-proxy's OUTPUT rules, e.g. Prometheus scraping a
		// Service) need a route to the Service range to reach the NAT table at all.
		func() error { return in("ip", "route", "add", clusterSvcCIDR, "dev", "eth0") },
		// Per network namespace: routing between the pods' bridge and the node.
		func() error { return in("sysctl", "-q", "-w", "net.ipv4.ip_forward=1") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return c.createCgroups()
}

// createCgroups creates the kubelet's cgroupRoot in every v1 hierarchy (the kubelet refuses a
// cgroupRoot that does not exist), with the parent's cpuset so that tasks may join it.
func (c *Cluster) createCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		d := filepath.Join(h, cgroupName(c.Name))
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(d, f), err)
				}
			}
		}
	}
	return nil
}

// cgroupHierarchies are the mount points of the host's cgroup hierarchies.
func cgroupHierarchies() ([]string, error) {
	mounts, err := mountPoints()
	if err != nil {
		return nil, err
	}
	var hs []string
	for _, m := range mounts {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && strings.HasPrefix(m.point, "/sys/fs/cgroup/") {
			hs = append(hs, m.point)
		}
	}
	return hs, nil
}

type mountPoint struct{ point, fstype string }

func mountPoints() ([]mountPoint, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mountPoint
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		ms = append(ms, mountPoint{point: unescapeMount(fields[4]), fstype: fields[sep+1]})
	}
	return ms, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ReapClusters tears down every cluster under ClusterStateRoot whose owning test process is
// gone (killed, panicked, timed out), and returns what it found and what failed. StartCluster
// calls it; so does hack/reap.sh after the suite.
func ReapClusters() []error {
	entries, err := os.ReadDir(ClusterStateRoot)
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(ClusterStateRoot, e.Name())
		if clusterOwnerAlive(dir) {
			continue
		}
		errs = append(errs, fmt.Errorf("cluster %s outlived its test", e.Name()))
		errs = append(errs, removeCluster(dir, nil)...)
	}
	return errs
}

func clusterOwnerAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "owner"))
	return err == nil && ownerAlive(strings.TrimSpace(string(b)))
}

// removeCluster removes every trace of the cluster in dir from the host, whether its test
// stopped it or died: the containers (by cgroup), the processes that name dir in their command
// line (containerd's shims included, which daemonize out of any process group), every mount
// under dir (containerd's overlays and pod network namespaces, the kubelet's volumes, the node's
// network namespace), the cgroups, the veth, CNI's result cache, and the saved sysctls are put
// back. sysctls nil means read them from dir.
func removeCluster(dir string, sysctls map[string]string) []error {
	name := filepath.Base(dir)
	if sysctls == nil {
		sysctls = readSysctls(dir)
	}
	var errs []error
	add := func(step string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step, err))
		}
	}
	hs, err := cgroupHierarchies()
	add("cgroups", err)
	var cgroups []string
	for _, h := range hs {
		root := filepath.Join(h, cgroupName(name))
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				cgroups = append(cgroups, p)
			}
			return nil
		})
	}
	// Containers first, then the node's own processes; repeat while anything is left (a shim
	// may start a process while we kill).
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := killCgroups(cgroups) + killByCmdline(dir)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("processes of cluster %s still alive after 20s of SIGKILL", name))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	add("unmount", unmountUnder(dir))
	// Deepest first: a cgroup with children cannot be removed.
	sort.Slice(cgroups, func(i, j int) bool { return len(cgroups[i]) > len(cgroups[j]) })
	for _, cg := range cgroups {
		var err error
		for i := 0; i < 50; i++ {
			if err = os.Remove(cg); err == nil || os.IsNotExist(err) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		add("remove cgroup", err)
	}
	// The veth usually goes with the node's network namespace, which the kernel frees
	// asynchronously once it is unmounted: it may vanish between the check and the delete.
	if _, err := os.Stat("/sys/class/net/" + vethName(name)); err == nil {
		if err := run("ip", "link", "del", vethName(name)); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			add("veth", err)
		}
	}
	for _, k := range hostSysctls {
		if v, ok := sysctls[k]; ok {
			add("restore sysctl "+k, os.WriteFile("/proc/sys/"+k, []byte(v), 0o644))
		}
	}
	results, _ := filepath.Glob("/var/lib/cni/results/" + cniNetwork(name) + "-*")
	for _, r := range results {
		add("CNI cache", os.Remove(r))
	}
	add("state", os.RemoveAll(dir))
	_ = os.Remove(ClusterStateRoot)               // only when empty
	_ = os.Remove(filepath.Dir(ClusterStateRoot)) // likewise
	_ = os.Remove("/var/lib/cni/results")         // likewise: libcni creates them
	_ = os.Remove("/var/lib/cni")
	return errs
}

// killCgroups SIGKILLs every process in cgroups and returns how many it signalled.
func killCgroups(cgroups []string) int {
	n := 0
	for _, cg := range cgroups {
		b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					n++
				}
			}
		}
	}
	return n
}

// killByCmdline SIGKILLs every process whose command line names dir and returns how many.
func killByCmdline(dir string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	n := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(strings.Split(p, "/")[2])
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), dir+"/") {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	var last error
	for round := 0; round < 5; round++ {
		ms, err := mountPoints()
		if err != nil {
			return err
		}
		var under []string
		for _, m := range ms {
			if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
				under = append(under, m.point)
			}
		}
		if len(under) == 0 {
			return nil
		}
		sort.Slice(under, func(i, j int) bool { return len(under[i]) > len(under[j]) })
		for _, p := range under {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				last = fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	return last
}
