package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestClusterNode checks the harness' node as a user of a cluster would: the node is Ready,
// cluster DNS answers, and the host keeps no trace of the cluster once it is gone.
func TestClusterNode(t *testing.T) {
	before := hostSnapshot(t)
	t.Run("cluster", func(t *testing.T) {
		c := harness.StartCluster(t, harness.WithClusterImages(harness.ImageArchives(t)...))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := c.Kubectl(ctx, "get", "nodes", "-o", "wide")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, c.Name) || !strings.Contains(out, " Ready ") {
			t.Fatalf("kubectl get nodes: want %s Ready:\n%s", c.Name, out)
		}
		// CoreDNS resolves the API server's Service to its ClusterIP.
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(c.NodeIP, "53"))
		}}
		addrs, err := r.LookupHost(ctx, "kubernetes.default.svc.cluster.local")
		if err != nil || len(addrs) != 1 || addrs[0] != "10.96.0.1" {
			t.Fatalf("cluster DNS: kubernetes.default.svc.cluster.local = %v, %v; want [10.96.0.1]", addrs, err)
		}
	})
	sameHost(t, "across a cluster's life", before, hostSnapshot(t))
}

// clusterChildEnv makes the test binary, run by TestClusterReapedAfterKill, start a cluster
// with a running pod, print its kubeconfig and wait to be killed.
const clusterChildEnv = "WATCHTOWER_HARNESS_CLUSTER_CHILD" // kept by harness.IsolateEnvironment

// TestClusterReapedAfterKill kills a test process with SIGKILL while its cluster runs a pod,
// as CI's timeout or a user's kill -9 would, and checks that the killed test's watchdog leaves
// the host as it was, with no later run needed: no containers, shims, mounts, cgroups, veth,
// iptables rules or changed sysctls.
func TestClusterReapedAfterKill(t *testing.T) {
	if os.Getenv(clusterChildEnv) != "" {
		clusterChild(t)
		return
	}
	harness.ImageArchives(t) // fail here, not in the child, when they are missing
	before := hostSnapshot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestClusterReapedAfterKill$", "-test.v")
	cmd.Env = append(os.Environ(), clusterChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with this test
	// One pipe for stdout and stderr, read by one goroutine: it reports the cluster's folder when
	// the child prints it, and the whole output once the child is gone (killed, or by ctx).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	ready, childLog := make(chan string, 1), make(chan string, 1)
	go func() {
		defer r.Close()
		var log strings.Builder
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if dir, ok := strings.CutPrefix(sc.Text(), "CLUSTER-READY "); ok {
				ready <- dir
			}
		}
		close(ready)
		childLog <- log.String()
	}()
	dir, ok := <-ready
	if !ok {
		_ = cmd.Wait()
		t.Fatalf("the child test ended (or ran out of time) before its cluster was ready:\n%s", <-childLog)
	}
	shims := 0
	for _, p := range clusterProcesses() {
		if strings.Contains(p, "containerd-shim") {
			shims++
		}
	}
	if shims == 0 {
		t.Fatalf("the child's cluster runs no container shim: the test would prove nothing\n%s", strings.Join(clusterProcesses(), "\n"))
	}
	childOwner, err := harness.OwnerOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The killed test's watchdog removes the cluster on its own, with no later run needed, and
	// says so in its report (which hack/reap.sh would print and fail on: this test consumes it).
	report := filepath.Join(harness.WatchdogReportDir, strings.ReplaceAll(childOwner, ":", "-")+".log")
	defer os.Remove(report)
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, errDir := os.Stat(dir)
		b, errReport := os.ReadFile(report)
		if os.IsNotExist(errDir) && errReport == nil {
			if !strings.Contains(string(b), "cluster "+filepath.Base(dir)+" outlived its test") {
				t.Errorf("the watchdog's report should name the cluster %s:\n%s", filepath.Base(dir), b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("90s after SIGKILL the killed test's cluster folder %s is still there (%v) or its watchdog wrote no report (%v)", dir, errDir, errReport)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if errs := harness.ReapClusters(); len(errs) > 0 {
		t.Errorf("the watchdog left work for the next reaper: %v", errs)
	}
	sameHost(t, "after SIGKILL and the reaper", before, hostSnapshot(t))
}

// clusterChild is the killed side of TestClusterReapedAfterKill.
func clusterChild(t *testing.T) {
	c := harness.StartCluster(t, harness.WithClusterImages(harness.ImageArchives(t)...))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Kubectl(ctx, "run", "sleeper", "--image=gowatchtower/pause:0.1.0", "--image-pull-policy=Never", "--restart=Never"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=90s"); err != nil {
		t.Fatal(err)
	}
	fmt.Println("CLUSTER-READY " + c.Dir)
	<-ctx.Done()
	t.Fatal("not killed within 2 minutes")
}

// sameHost fails for every part of the host snapshot that differs.
func sameHost(t *testing.T, when string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s, the host's %s differs:\nbefore: %s\nafter:  %s", when, k, v, after[k])
		}
	}
}

// hostSnapshot is what a cluster must leave as it found it: mounts, network links and routes,
// iptables rules, the kubelet's global sysctls, the cgroup hierarchies' top level, the state
// folder.
func hostSnapshot(t *testing.T) map[string]string {
	t.Helper()
	s := map[string]string{}
	read := func(key, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			s[key] = "error: " + err.Error()
			return
		}
		s[key] = strings.TrimSpace(string(b))
	}
	for _, k := range []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"} {
		read("sysctl "+k, "/proc/sys/"+k)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var points []string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			points = append(points, f[4])
		}
	}
	s["mounts"] = strings.Join(points, "\n")
	links, _ := os.ReadDir("/sys/class/net")
	var names []string
	for _, l := range links {
		names = append(names, l.Name())
	}
	s["links"] = strings.Join(names, " ")
	for _, h := range []string{"cpu", "memory", "pids", "cpuset", "freezer", "devices", "blkio"} {
		entries, _ := os.ReadDir("/sys/fs/cgroup/" + h)
		var dirs []string
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, e.Name())
			}
		}
		s["cgroups "+h] = strings.Join(dirs, " ")
	}
	for key, cmd := range map[string][]string{"iptables": {"iptables-save"}, "routes": {"ip", "route", "show", "table", "all"}} {
		out, err := exec.Command(cmd[0], cmd[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(cmd, " "), err)
		}
		// iptables-save's comment lines carry a timestamp.
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
		s[key] = strings.Join(lines, "\n")
	}
	_, err := os.Stat(harness.ClusterStateRoot)
	s["state root exists"] = map[bool]string{true: "yes", false: "no"}[err == nil]
	s["processes"] = strings.Join(clusterProcesses(), "\n")
	return s
}

// clusterProcesses lists processes that belong to a node: containerd, its shims, the kubelet.
func clusterProcesses() []string {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, harness.ClusterStateRoot) {
			out = append(out, cmd)
		}
	}
	return out
}
