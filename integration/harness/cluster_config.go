package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ClusterPauseImage is containerd's sandbox image in the cluster: `make images` builds it from
// integration/cmd/pause (no public image can be pulled here). containerd normalizes the name.
const ClusterPauseImage = "gowatchtower/pause:0.1.0"

// writeConfigs writes the configuration of containerd, CNI, the kubelet, kube-proxy and
// CoreDNS. Every path is under the cluster's folder.
func (c *Cluster) writeConfigs(_ *clusterPKI) error {
	d := c.Dir
	files := map[string]string{
		// restrict_oom_score_adj: this machine kind lacks CAP_SYS_RESOURCE, so the sandbox's
		// default -998 fails in runc. netns_mounts_under_state_dir: pod network namespaces are
		// mounted under the cluster's folder, not /run/netns, so teardown finds them all.
		"containerd/config.toml": fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
    max_conf_num = 1
`, filepath.Join(d, "containerd/root"), filepath.Join(d, "containerd/state"), c.ctrSock, c.ctrSock+".ttrpc",
			filepath.Join(d, "containerd/opt"), ClusterPauseImage, filepath.Join(d, "cni/net.d")),

		"cni/net.d/10-gowatchtower.conflist": fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %[1]q,
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": %[2]q,
        "ranges": [[{"subnet": %[3]q, "gateway": %[4]q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, cniNetwork(c.Name), filepath.Join(d, "cni/ipam"), clusterPodCIDR, clusterPodGW),

		// failCgroupV1: the kubelet refuses cgroup v1 hosts unless told. protectKernelDefaults
		// stays false: the kubelet then sets three global sysctls, which teardown restores.
		"kubelet/config.yaml": fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[2]q
authorization:
  mode: Webhook
tlsCertFile: %[3]q
tlsPrivateKeyFile: %[4]q
cgroupDriver: cgroupfs
cgroupRoot: /%[5]s
failCgroupV1: false
failSwapOn: false
clusterDNS: [%[6]s]
clusterDomain: cluster.local
resolvConf: %[7]q
podLogsDir: %[8]q
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
`, clusterNodeIP, filepath.Join(d, "pki/ca.crt"), filepath.Join(d, "pki/kubelet-serving.crt"), filepath.Join(d, "pki/kubelet-serving.key"),
			cgroupName(c.Name), clusterDNSIP, filepath.Join(d, "resolv.conf"), filepath.Join(d, "pod-logs")),

		"resolv.conf": "nameserver " + clusterDNSIP + "\n",

		// Conntrack settings are global: zero leaves the host's as they are. masqueradeAll lets
		// a pod reach a Service backed by a pod on the same bridge without br_netfilter.
		"kube-proxy.yaml": fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %[1]q
mode: iptables
clusterCIDR: %[2]s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  masqueradeAll: true
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, filepath.Join(d, "admin.kubeconfig"), clusterPodCIDR),

		// CoreDNS serves the cluster zone only: the node has no way out, so no forwarder.
		"Corefile": fmt.Sprintf(`.:53 {
    errors
    health 127.0.0.1:8180
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %[1]s gowatchtower
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
`, filepath.Join(d, "admin.kubeconfig")),
	}
	for name, content := range files {
		p := filepath.Join(d, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(strings.TrimLeft(content, "\n")), 0o644); err != nil {
			return err
		}
	}
	for _, sub := range []string{"pod-logs", "kubelet/root", "cni/ipam", "containerd/opt"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	return nil
}
