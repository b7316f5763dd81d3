package harness

import (
	"bytes"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Kube is a real kube-apiserver backed by a real etcd, started by controller-runtime's envtest
// from the cached binaries.
type Kube struct {
	Env    *envtest.Environment
	Config *rest.Config
	Client client.Client
}

type kubeConfig struct {
	apiserverFlags map[string]string
	crdPaths       []string
	// envHooks adjust the envtest environment before it starts (see WithValidatingWebhooks).
	envHooks []func(TB, *envtest.Environment)
}

// KubeOption configures StartKube.
type KubeOption func(*kubeConfig)

// WithAPIServerFlag sets an extra kube-apiserver flag, e.g.
// WithAPIServerFlag("tracing-config-file", path).
func WithAPIServerFlag(name, value string) KubeOption {
	return func(c *kubeConfig) { c.apiserverFlags[name] = value }
}

// WithCRDs installs the CustomResourceDefinitions found at paths (files or directories).
func WithCRDs(paths ...string) KubeOption {
	return func(c *kubeConfig) { c.crdPaths = append(c.crdPaths, paths...) }
}

// lockedBuffer collects a control-plane component's output for printing on failure.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Bounded: keep the last 1 MiB, enough to see why a start failed.
	if b.buf.Len() > 1<<20 {
		rest := b.buf.Bytes()[b.buf.Len()-(512<<10):]
		b.buf = *bytes.NewBuffer(append([]byte(nil), rest...))
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartKube starts etcd and kube-apiserver and registers their shutdown.
func StartKube(t TB, opts ...KubeOption) *Kube {
	t.Helper()
	cfg := kubeConfig{apiserverFlags: map[string]string{}}
	for _, o := range opts {
		o(&cfg)
	}
	tools := MustTools(t)
	startWatchdog() // envtest starts etcd and kube-apiserver itself, with no death signal
	assets := tools.KubebuilderAssets(t)
	var (
		env             *envtest.Environment
		apiLog, etcdLog *lockedBuffer
		restCfg         *rest.Config
		err             error
	)
	// envtest picks etcd's and kube-apiserver's ports by listening on port 0 and closing the
	// listener, to be bound again by the process it starts: another process may take one in
	// between. Such a clash is retried with new ports; any other failure is not.
	for attempt := 1; ; attempt++ {
		env = &envtest.Environment{
			BinaryAssetsDirectory:    assets,
			CRDDirectoryPaths:        cfg.crdPaths,
			ErrorIfCRDPathMissing:    true,
			ControlPlaneStartTimeout: 90 * time.Second,
			ControlPlaneStopTimeout:  DefaultStopTimeout,
		}
		apiLog, etcdLog = &lockedBuffer{}, &lockedBuffer{}
		api := env.ControlPlane.GetAPIServer()
		api.Out, api.Err = apiLog, apiLog
		for k, v := range cfg.apiserverFlags {
			api.Configure().Set(k, v)
		}
		env.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog}
		for _, hook := range cfg.envHooks {
			hook(t, env)
		}
		if restCfg, err = env.Start(); err == nil {
			break
		}
		_ = env.Stop()
		logs := apiLog.String() + etcdLog.String()
		if attempt < 3 && strings.Contains(logs, "address already in use") {
			t.Logf("harness: kube-apiserver or etcd lost its port to another process (attempt %d): starting again on new ports", attempt)
			continue
		}
		t.Fatalf("harness: start kube-apiserver and etcd: %v\n--- kube-apiserver log tail ---\n%s\n--- etcd log tail ---\n%s",
			err, tailLines(apiLog.String(), 60), tailLines(etcdLog.String(), 30))
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("harness: stop kube-apiserver and etcd: %v", err)
		}
		if t.Failed() {
			t.Logf("harness: kube-apiserver log tail (whole log: %s):\n%s", keepText(t, "kube-apiserver.log", apiLog.String()), tailLines(apiLog.String(), 100))
			t.Logf("harness: etcd log tail (whole log: %s):\n%s", keepText(t, "etcd.log", etcdLog.String()), tailLines(etcdLog.String(), 40))
		}
	})
	c, err := client.New(restCfg, client.Options{})
	if err != nil {
		t.Fatalf("harness: client for the test API server: %v", err)
	}
	return &Kube{Env: env, Config: restCfg, Client: c}
}

// WriteKubeconfig writes a kubeconfig for the API server's admin user (in system:masters) to
// path, for kubectl and for operators run as separate processes.
func (k *Kube) WriteKubeconfig(path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["gowatchtower"] = &clientcmdapi.Cluster{Server: k.Config.Host, CertificateAuthorityData: k.Config.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: k.Config.CertData, ClientKeyData: k.Config.KeyData, Token: k.Config.BearerToken}
	cfg.Contexts["gowatchtower"] = &clientcmdapi.Context{Cluster: "gowatchtower", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "gowatchtower"
	return clientcmd.WriteToFile(*cfg, path)
}
