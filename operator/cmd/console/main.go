// Command watchtower-console serves the Watchtower console (docs/console.md): the operators'
// controllers, their slow and failed reconciles, each reconcile's trace, the pipeline's health
// and its configuration, in a browser, on one port.
package main

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
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/operator/internal/console"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to serve the console on (in a pod: :8090)")
	jaegerURL := flag.String("jaeger-url", "", "base URL of Jaeger's query API, or of Tempo's Jaeger-compatible query frontend, e.g. http://jaeger-query:16686")
	promURL := flag.String("prometheus-url", "", "base URL of the Prometheus HTTP API, e.g. http://prometheus:9090")
	// -kubeconfig is controller-runtime's flag: the cluster whose Watchtower resources the
	// Configure page edits; unset: in-cluster, $KUBECONFIG or ~/.kube/config, and none when
	// none of them is there.
	selector := flag.String("metrics-selector", "", `label matchers added to every query of the operators' metrics, e.g. job="my-operator"`)
	slow := flag.Duration("slow-threshold", time.Second, "duration from which the Reconciles page lists a reconcile as slow")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	opts := []console.Option{
		console.WithJaeger(*jaegerURL), console.WithPrometheus(*promURL),
		console.WithMetricsSelector(*selector), console.WithSlowThreshold(*slow), console.WithLogger(log),
	}
	kube, err := kubernetes(flag.Lookup("kubeconfig").Value.String())
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "watchtower-console:", err)
		os.Exit(2)
	case kube == nil:
		log.Info("no Kubernetes configuration: the Configure page shows Helm values")
	default:
		opts = append(opts, console.WithKubernetes(kube.client, kube.discovery))
	}
	con, err := console.New(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "watchtower-console:", err)
		os.Exit(2)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "watchtower-console: -listen %s: %v\n", *listen, err)
		os.Exit(2)
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
		fmt.Fprintln(os.Stderr, "watchtower-console:", err)
		os.Exit(1)
	}
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
	cfg, err := ctrlconfig.GetConfig()
	switch {
	case err != nil && path != "":
		return nil, fmt.Errorf("-kubeconfig %s: %w", path, err)
	case err != nil:
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
