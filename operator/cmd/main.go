// Command watchtower-operator runs the Watchtower operator: a Watchtower resource installs,
// wires and watches one GoWatchtower pipeline (docs/operator.md). It is instrumented with
// GoWatchtower itself, as any operator would be.
package main

import (
	"context"
	"flag"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/sdk"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/operator/internal/console"
	"github.com/gowatchtower/watchtower/operator/internal/controller"
	"github.com/gowatchtower/watchtower/operator/internal/render"
)

// version is the operator's version, set at build time (-X main.version=...); the collectors
// it deploys default to the otelcol-watchtower image of the same version.
var version = ""

func main() {
	// `manager console ...` serves the Watchtower console (docs/console.md): one image for both.
	if len(os.Args) > 1 && os.Args[1] == "console" {
		os.Exit(console.Main("watchtower-operator console", os.Args[2:]))
	}
	var metricsAddr, probeAddr, imageRepo, imageTag string
	var leaderElect bool
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the /metrics endpoint (Prometheus); 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Run one active replica at a time (leader election).")
	flag.StringVar(&imageRepo, "collector-image-repository", "gowatchtower/otelcol-watchtower", "Repository of the otelcol-watchtower image the collectors run.")
	flag.StringVar(&imageTag, "collector-image-tag", version, "Tag of the otelcol-watchtower image; empty: the chart's appVersion.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	// The operator's own traces and metrics, configured by the OTEL_* variables (an unset
	// endpoint exports nothing over OTLP; /metrics still serves the metrics).
	tel, err := sdk.Start(context.Background())
	if err != nil {
		log.Error(err, "unable to set up OpenTelemetry")
		os.Exit(1)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	cfg := ctrl.GetConfigOrDie()
	mgr, err := otelctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "watchtower-operator.observability.gowatchtower.io",
		// The process exits once the manager stops: handing the lease over at once lets a
		// rollout's new pod lead without waiting for the lease to expire.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		log.Error(err, "unable to create the manager")
		os.Exit(1)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		log.Error(err, "unable to create the discovery client")
		os.Exit(1)
	}
	if err := (&controller.WatchtowerReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Discovery: dc,
		Render:    render.Options{ImageRepository: imageRepo, ImageTag: imageTag},
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "unable to create the controller")
		os.Exit(1)
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))

	log.Info("starting", "version", version)
	runErr := mgr.Start(ctrl.SetupSignalHandler())
	if err := tel.Shutdown(context.Background()); err != nil {
		log.Error(err, "unable to flush telemetry")
	}
	if runErr != nil {
		log.Error(runErr, "the manager stopped")
		os.Exit(1)
	}
}
