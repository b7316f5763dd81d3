package harness

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The cluster's fixed addresses. They live only inside the node's network namespace and on the
// host end of its veth pair, which disappears with the namespace; one cluster runs at a time.
const (
	clusterHostIP   = "10.89.0.1" // the host end of the veth pair
	clusterNodeIP   = "10.89.0.2" // the node, where every component listens
	clusterPodCIDR  = "10.88.0.0/24"
	clusterPodGW    = "10.88.0.1"
	clusterSvcCIDR  = "10.96.0.0/24"
	clusterAPISvcIP = "10.96.0.1"
	clusterDNSIP    = "10.96.0.10"
)

// ClusterNodeIP is the node's IP in every cluster StartCluster starts: where its API server,
// kubelet and hostPorts listen, and components started in its Network(). Known before the
// cluster starts, e.g. for the API server's tracing configuration.
const ClusterNodeIP = clusterNodeIP

// Cluster is a real single-node Kubernetes cluster: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy (iptables) and
// CoreDNS, all in a network namespace of their own, with pods that really run. See
// docs/testing.md ("The cluster tier").
type Cluster struct {
	// Name is the node's name and the cluster's identifier on the host (cgroup, veth, state).
	Name string
	// Dir holds everything the cluster writes: certificates, data, containerd's root and state,
	// the kubelet's root, pod logs. It is removed at cleanup.
	Dir string
	// Kubeconfig is the admin (system:masters) kubeconfig, for kubectl, helm and the test.
	Kubeconfig string
	// Config and Client are the admin's.
	Config *rest.Config
	Client client.Client
	// NodeIP is where the API server, kubelet, hostPorts and components started in Network()
	// listen.
	NodeIP string

	logs       string
	procs      []*Process
	sysctls    map[string]string
	ctrSock    string
	images     []string
	apiFlags   map[string]string
	kubectlBin string // the pinned kubectl
	helm       *Helm
}

// ClusterOption configures StartCluster.
type ClusterOption func(*Cluster)

// WithClusterImages imports OCI image archives (from `make images`) into the node's
// containerd before the kubelet starts.
func WithClusterImages(tars ...string) ClusterOption {
	return func(c *Cluster) { c.images = append(c.images, tars...) }
}

// WithClusterAPIServerFlag sets an extra kube-apiserver flag, e.g. tracing-config-file.
func WithClusterAPIServerFlag(name, value string) ClusterOption {
	return func(c *Cluster) { c.apiFlags[name] = value }
}

// Network is the node's network: components started in it (Kafka, Jaeger, Prometheus) listen on
// the node IP, reachable from pods and from the test.
func (c *Cluster) Network() Network {
	return Network{NetNS: filepath.Join(c.Dir, "netns"), Host: c.NodeIP}
}

// HostIP is the test's end of the node's network: a server the test starts on it is reachable
// from the node's network (its components and pods).
func (c *Cluster) HostIP() string { return clusterHostIP }

// ClusterStateRoot is where every cluster keeps its state; ReapClusters looks there for
// clusters whose test is gone.
const ClusterStateRoot = "/run/gowatchtower/clusters"

// clusterPrereqs are the host programs a cluster needs, with the Debian package of each.
var clusterPrereqs = [][2]string{
	{"containerd", "containerd"}, {"ctr", "containerd"}, {"runc", "runc"},
	{"nsenter", "util-linux"}, {"unshare", "util-linux"}, {"ip", "iproute2"},
	{"iptables", "iptables"}, {"/usr/lib/cni/bridge", "containernetworking-plugins"},
	{"/usr/lib/cni/host-local", "containernetworking-plugins"}, {"/usr/lib/cni/portmap", "containernetworking-plugins"},
	{"/usr/lib/cni/loopback", "containernetworking-plugins"},
}

// heavySlot is the turn of the one heavy test a test process runs at a time (see HeavyTurn).
var heavySlot = make(chan struct{}, 1)

// HeavyTurn waits until no other heavy test of this process runs, and holds the turn until t
// ends. Heavy are a cluster (StartCluster takes the turn: a process has one cluster at a time,
// named after it, on the one ClusterNodeIP) and a test whose figures need the CPU its component
// is promised (the overload test's half CPU): on two cores, a cluster beside it starves it.
func HeavyTurn(t TB, why string) {
	t.Helper()
	waitStart := time.Now()
	heavySlot <- struct{}{}
	t.Cleanup(func() { <-heavySlot })
	if w := time.Since(waitStart); w > time.Second {
		t.Logf("harness: waited %s for this process' previous heavy test (%s)", w.Round(100*time.Millisecond), why)
	}
}

// StartCluster brings up a single-node cluster and registers its complete teardown: processes,
// containers, mounts, cgroups, the network namespace, the host's sysctls. A cluster left by a
// test binary that died is torn down first. A second call in the same process waits until the
// first cluster is removed.
func StartCluster(t TB, opts ...ClusterOption) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("harness: a cluster needs root (network namespaces, cgroups, mounts); run the suite as root")
	}
	for _, p := range clusterPrereqs {
		if _, err := exec.LookPath(p[0]); err != nil {
			t.Fatalf("harness: a cluster needs %s (Debian package %s): install it with the README's apt-get line", p[0], p[1])
		}
	}
	// One cluster at a time in a test process (it is named after the process, and its node has
	// the one ClusterNodeIP): parallel tests that each start one take turns. Released after the
	// teardown (cleanups run last-in first-out).
	HeavyTurn(t, "a cluster")
	for _, err := range ReapClusters() {
		t.Logf("harness: reaping a cluster left behind: %v", err)
	}
	// Before anything of the cluster exists: if this process dies, its watchdog removes it.
	startWatchdog()
	tools := MustTools(t)
	kube := func(bin string) string { return tools.Path(t, "kubernetes", "KUBERNETES_VERSION", bin) }
	etcdBin := tools.Path(t, "etcd", "ETCD_VERSION", "etcd")
	corednsBin := tools.Path(t, "coredns", "COREDNS_VERSION", "coredns")

	name := fmt.Sprintf("gwt%d", os.Getpid())
	c := &Cluster{Name: name, Dir: filepath.Join(ClusterStateRoot, name), NodeIP: clusterNodeIP, apiFlags: map[string]string{},
		kubectlBin: kube("kubectl")}
	c.helm = &Helm{bin: tools.Path(t, "helm", "HELM_VERSION", "helm"), home: filepath.Join(c.Dir, "helm"), dir: tools.RepoRoot}
	for _, o := range opts {
		o(c)
	}
	c.logs = filepath.Join(c.Dir, "logs")
	c.ctrSock = filepath.Join(c.Dir, "containerd", "containerd.sock")
	if err := os.MkdirAll(c.logs, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	start := time.Now()
	t.Cleanup(func() { c.teardown(t) })
	if err := writeClusterOwner(c.Dir); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if err := c.saveSysctls(); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if err := c.setupNetwork(); err != nil {
		t.Fatalf("harness: node network: %v", err)
	}
	pki, err := c.writePKI()
	if err != nil {
		t.Fatalf("harness: certificates: %v", err)
	}
	if err := c.writeConfigs(pki); err != nil {
		t.Fatalf("harness: configuration: %v", err)
	}
	netns := filepath.Join(c.Dir, "netns")
	run := func(name, path string, args ...string) *Process {
		p, err := startProcess(c.logs, ProcessSpec{Name: name, Path: path, Args: args, Dir: c.Dir, NetNS: netns, StopTimeout: 15 * time.Second})
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		c.procs = append(c.procs, p)
		return p
	}
	f := func(name string) string { return filepath.Join(c.Dir, name) }

	etcd := run("etcd", etcdBin, "--data-dir", f("etcd"), "--listen-client-urls", "http://127.0.0.1:2379",
		"--advertise-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", "http://127.0.0.1:2380",
		"--unsafe-no-fsync", "--quota-backend-bytes", "1073741824", "--log-level", "warn")
	etcd.mustReady(t, c, 60*time.Second, func(ctx context.Context) error {
		return nsHTTPGet(ctx, netns, "http://127.0.0.1:2379/health")
	})

	apiArgs := []string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address=" + clusterNodeIP, "--bind-address=0.0.0.0", "--secure-port=6443",
		"--service-cluster-ip-range=" + clusterSvcCIDR,
		"--tls-cert-file=" + f("pki/apiserver.crt"), "--tls-private-key-file=" + f("pki/apiserver.key"),
		"--client-ca-file=" + f("pki/ca.crt"),
		"--kubelet-client-certificate=" + f("pki/apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + f("pki/apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + f("pki/ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f("pki/sa.pub"), "--service-account-signing-key-file=" + f("pki/sa.key"),
		"--allow-privileged=true", "--profiling=false", "--v=1",
	}
	for k, v := range c.apiFlags {
		apiArgs = append(apiArgs, "--"+k+"="+v)
	}
	api := run("kube-apiserver", kube("kube-apiserver"), apiArgs...)

	restCfg, err := clientcmd.BuildConfigFromFlags("", f("admin.kubeconfig"))
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	// Ready means /readyz answers 200 to an authenticated client: a 401 or 403 comes before RBAC
	// is bootstrapped, and kube-controller-manager started then dies.
	api.mustReady(t, c, 90*time.Second, func(ctx context.Context) error { return restGet(ctx, restCfg, "/readyz") })
	c.Config, c.Kubeconfig = restCfg, f("admin.kubeconfig")
	c.Client, err = client.New(restCfg, client.Options{})
	if err != nil {
		t.Fatalf("harness: client: %v", err)
	}

	run("kube-controller-manager", kube("kube-controller-manager"),
		"--kubeconfig="+f("admin.kubeconfig"), "--leader-elect=false", "--use-service-account-credentials=false",
		"--service-account-private-key-file="+f("pki/sa.key"), "--root-ca-file="+f("pki/ca.crt"),
		"--cluster-signing-cert-file="+f("pki/ca.crt"), "--cluster-signing-key-file="+f("pki/ca.key"),
		// The cloud controllers live in cloud-controller-manager since 1.31; naming them fails.
		"--controllers=*",
		"--bind-address=127.0.0.1", "--profiling=false", "--v=1")
	run("kube-scheduler", kube("kube-scheduler"), "--kubeconfig="+f("admin.kubeconfig"),
		"--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false", "--v=1")

	ctrd := run("containerd", "containerd", "--config", f("containerd/config.toml"))
	ctrd.mustReady(t, c, 30*time.Second, func(ctx context.Context) error {
		return exec.CommandContext(ctx, "ctr", "--address", c.ctrSock, "version").Run()
	})
	for _, tar := range c.images {
		out, err := exec.Command("ctr", "--address", c.ctrSock, "-n", "k8s.io", "images", "import", "--no-unpack=false", tar).CombinedOutput()
		if err != nil {
			t.Fatalf("harness: import image %s into the node (run `make images` first?): %v\n%s", tar, err, out)
		}
	}

	kubelet := run("kubelet", kube("kubelet"), "--config="+f("kubelet/config.yaml"),
		"--kubeconfig="+f("kubelet/kubeconfig"), "--container-runtime-endpoint=unix://"+c.ctrSock,
		"--hostname-override="+name, "--node-ip="+clusterNodeIP, "--root-dir="+f("kubelet/root"), "--v=1")
	run("kube-proxy", kube("kube-proxy"), "--config="+f("kube-proxy.yaml"), "--hostname-override="+name, "--v=1")
	run("coredns", corednsBin, "-conf", f("Corefile"))

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := c.waitNodeReady(ctx); err != nil {
		t.Fatalf("harness: node %s not Ready: %v%s\n--- kubelet log tail ---\n%s", name, err, c.exited(), kubelet.LogTail(16<<10))
	}
	if err := c.createDNSService(ctx); err != nil {
		t.Fatalf("harness: cluster DNS service: %v%s", err, c.exited())
	}
	if err := c.waitServiceAccount(ctx, "default"); err != nil {
		t.Fatalf("harness: %v%s", err, c.exited())
	}
	t.Logf("harness: cluster %s Ready in %s (kubeconfig %s)", name, time.Since(start).Round(100*time.Millisecond), c.Kubeconfig)
	return c
}

// exited names the components that are no longer running, with their logs' last lines: a
// component that died explains a cluster that never became usable.
func (c *Cluster) exited() string {
	var b strings.Builder
	for _, p := range c.procs {
		select {
		case <-p.Done():
			fmt.Fprintf(&b, "\n--- %s exited; its log's tail ---\n%s", p.Name(), p.LogTail(4<<10))
		default:
		}
	}
	return b.String()
}

// mustReady is MustWaitReady that also stops the cluster's other components on failure.
func (p *Process) mustReady(t TB, c *Cluster, timeout time.Duration, check func(ctx context.Context) error) {
	t.Helper()
	if err := p.WaitReady(timeout, check); err != nil {
		t.Fatalf("harness: cluster: %v\n--- %s log tail ---\n%s", err, p.Name(), p.LogTail(16<<10))
	}
}

// restGet GETs path on the API server with cfg's credentials and wants 200.
func restGet(ctx context.Context, cfg *rest.Config, path string) error {
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+path, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// PodMetricSum sums metric name (samples whose labels include labels) over what each pod
// matching selector in ns serves on port's /metrics, read through the API server's pod proxy:
// pods' addresses are reachable from the node only.
func (c *Cluster) PodMetricSum(ctx context.Context, ns, selector string, port int, name string, labels map[string]string) (float64, error) {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return 0, err
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return 0, err
	}
	if len(pods.Items) == 0 {
		return 0, fmt.Errorf("no pod in %s matches %s", ns, selector)
	}
	var total float64
	for _, p := range pods.Items {
		body, err := cs.CoreV1().Pods(ns).ProxyGet("http", p.Name, strconv.Itoa(port), "metrics", nil).DoRaw(ctx)
		if err != nil {
			return 0, fmt.Errorf("pod %s/%s port %d /metrics: %w", ns, p.Name, port, err)
		}
		sum, _, err := SumSamples(bytes.NewReader(body), name, labels)
		if err != nil {
			return 0, fmt.Errorf("pod %s/%s port %d /metrics: %w", ns, p.Name, port, err)
		}
		total += sum
	}
	return total, nil
}

// nsHTTPGet GETs url from inside the node's network namespace (for what listens on the node's
// loopback only, like etcd).
func nsHTTPGet(ctx context.Context, netns, url string) error {
	out, err := exec.CommandContext(ctx, "nsenter", "--net="+netns, "--", "curl", "-fsS", "-m", "2", url).CombinedOutput()
	if err != nil {
		return fmt.Errorf("GET %s: %v: %s", url, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (c *Cluster) waitNodeReady(ctx context.Context) error {
	var last string
	for {
		var n corev1.Node
		err := c.Client.Get(ctx, client.ObjectKey{Name: c.Name}, &n)
		if err == nil {
			last = "no Ready condition"
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					if cond.Status == corev1.ConditionTrue {
						return nil
					}
					last = cond.Reason + ": " + cond.Message
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *Cluster) waitServiceAccount(ctx context.Context, ns string) error {
	for {
		var sa corev1.ServiceAccount
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &sa)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ServiceAccount %s/default never appeared: %v", ns, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// createDNSService publishes CoreDNS, which runs as a process on the node (not a pod: its
// image would be one more to build), as the kube-dns Service pods find through clusterDNS.
func (c *Cluster) createDNSService(ctx context.Context) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{ClusterIP: clusterDNSIP, Ports: []corev1.ServicePort{
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
			{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
		}},
	}
	if err := c.Client.Create(ctx, svc); err != nil {
		return err
	}
	eps := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-node", Labels: map[string]string{
			discoveryv1.LabelServiceName: "kube-dns", discoveryv1.LabelManagedBy: "gowatchtower-harness",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{clusterNodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)},
			{Name: ptr.To("dns-tcp"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolTCP)},
		},
	}
	return c.Client.Create(ctx, eps)
}

// Kubectl runs kubectl against the cluster as the admin and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.kubectlBin, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Env = componentEnv(nil)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// LogPath is the log file of a node component ("kubelet", "containerd", "kube-apiserver", ...).
func (c *Cluster) LogPath(component string) string { return filepath.Join(c.logs, component+".log") }

// teardown stops everything and removes every trace of the cluster from the host. On failure
// the components' logs are copied where the test keeps its artifacts first.
func (c *Cluster) teardown(t TB) {
	if t.Failed() {
		c.keepLogs(t)
	}
	// The kubelet first, so it does not restart what is being stopped; then the containers, by
	// cgroup; then the rest in reverse start order.
	for i := len(c.procs) - 1; i >= 0; i-- {
		if c.procs[i].Name() == "kubelet" {
			_ = c.procs[i].Stop()
		}
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		_ = c.procs[i].Stop()
	}
	for _, err := range removeCluster(c.Dir, c.sysctls) {
		t.Errorf("harness: cluster teardown: %v", err)
	}
}

// keepLogs copies the components' logs to the test's artifact directory (KeepArtifact) and
// prints the tails that usually say why.
func (c *Cluster) keepLogs(t TB) {
	if kept := KeepArtifact(t, c.logs); kept != c.logs {
		t.Logf("harness: the cluster's component logs are in %s", kept)
	}
	for _, name := range []string{"kubelet.log", "containerd.log", "kube-apiserver.log"} {
		if p := filepath.Join(c.logs, name); statOK(p) {
			t.Logf("harness: cluster %s tail:\n%s", name, tailLines(fileTail(p, 64<<10), 60))
		}
	}
}

func statOK(path string) bool { _, err := os.Stat(path); return err == nil }

func fileTail(path string, max int64) string {
	p := &Process{logPath: path}
	return p.LogTail(max)
}
