package console

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// Main runs the console as a command named name with its arguments (the flags below), until
// SIGINT or SIGTERM, and returns the exit code: watchtower-console's main, and the Watchtower
// operator's `console` mode, which lets one image serve both in a cluster.
func Main(name string, args []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8090", "address to serve the console on (in a pod: :8090)")
	jaegerURL := fs.String("jaeger-url", "", "base URL of Jaeger's query API, or of Tempo's Jaeger-compatible query frontend, e.g. http://jaeger-query:16686")
	promURL := fs.String("prometheus-url", "", "base URL of the Prometheus HTTP API, e.g. http://prometheus:9090")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the cluster whose Watchtower resources the Configure page edits; unset: in-cluster, $KUBECONFIG or ~/.kube/config, and none when none of them is there")
	selector := fs.String("metrics-selector", "", `label matchers added to every query of the operators' metrics, e.g. job="my-operator"`)
	slow := fs.Duration("slow-threshold", time.Second, "duration from which the Reconciles page lists a reconcile as slow")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	opts := []Option{
		WithJaeger(*jaegerURL), WithPrometheus(*promURL),
		WithMetricsSelector(*selector), WithSlowThreshold(*slow), WithLogger(log),
	}
	kube, err := kubernetes(*kubeconfig)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	case kube == nil:
		log.Info("no Kubernetes configuration: the Configure page shows Helm values")
	default:
		opts = append(opts, WithKubernetes(kube.client, kube.discovery))
	}
	con, err := New(opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: -listen %s: %v\n", name, *listen, err)
		return 2
	}
	fmt.Printf("Watchtower console: http://%s\n", displayAddr(l.Addr()))
	srv := &http.Server{Handler: con, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

// displayAddr is the address to print: a wildcard listener is reached on loopback.
func displayAddr(a net.Addr) string {
	t, ok := a.(*net.TCPAddr)
	if ok && t.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(t.Port))
	}
	return a.String()
}

type kubeClients struct {
	client    client.Client
	discovery discovery.DiscoveryInterface
}

// kubernetes connects to the cluster given, or found in-cluster or in $KUBECONFIG; nil when
// there is none to find.
func kubernetes(path string) (*kubeClients, error) {
	var cfg *rest.Config
	var err error
	if path != "" {
		if cfg, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
			return nil, fmt.Errorf("-kubeconfig %s: %w", path, err)
		}
	} else if cfg, err = ctrlconfig.GetConfig(); err != nil {
		return nil, nil
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to Kubernetes at %s: %w", cfg.Host, err)
	}
	d, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &kubeClients{client: c, discovery: d}, nil
}
