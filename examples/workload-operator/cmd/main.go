// Command workload-operator is GoWatchtower's example operator: it runs Workloads (a CPU
// burner, a memory hog or nginx) as Deployments, and is instrumented with GoWatchtower in the
// three lines marked "GoWatchtower" below plus one in its controller's SetupWithManager.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/sdk"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/examples/workload-operator/internal/controller"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(demov1alpha1.AddToScheme(scheme))
}

func main() {
	var metricsAddr, probeAddr string
	var enableLeaderElection, secureMetrics, enableHTTP2 bool
	var imagePrefix, imageTag string
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "The address the metrics endpoint binds to. "+
		"Use :8443 for HTTPS or :8080 for HTTP, or leave as 0 to disable the metrics service.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the probe endpoint binds to.")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false,
		"Enable leader election for controller manager. "+
			"Enabling this will ensure there is only one active controller manager.")
	flag.BoolVar(&secureMetrics, "metrics-secure", true,
		"If set, the metrics endpoint is served securely via HTTPS. Use --metrics-secure=false to use HTTP instead.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false,
		"If set, HTTP/2 will be enabled for the metrics server")
	flag.StringVar(&imagePrefix, "workload-image-prefix", controller.DefaultImagePrefix,
		"Repository prefix of the workload images: a Workload of type T runs <prefix>T:<tag>.")
	flag.StringVar(&imageTag, "workload-image-tag", controller.DefaultImageTag, "Tag of the workload images.")
	var hotLoopReconciles int
	var hotLoopWindow, stuckAfter time.Duration
	flag.IntVar(&hotLoopReconciles, "hot-loop-reconciles", 20, "An object reconciled this many times within --hot-loop-window at one generation is hot-looping.")
	flag.DurationVar(&hotLoopWindow, "hot-loop-window", time.Minute, "The window of --hot-loop-reconciles.")
	flag.DurationVar(&stuckAfter, "stuck-after", 10*time.Minute, "An object whose reconciles keep failing without a success for this long is stuck.")
	opts := zap.Options{Development: true}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	// Configured by the OTEL_* variables of config/manager/manager.yaml.
	tel, err := sdk.Start(context.Background()) // GoWatchtower
	if err != nil {
		setupLog.Error(err, "unable to set up OpenTelemetry")
		os.Exit(1)
	}

	// As in kubebuilder's scaffold: HTTP/2 stays off unless asked for, because of the HTTP/2
	// Stream Cancellation and Rapid Reset CVEs (GHSA-qppj-fm5r-hxr3, GHSA-4374-p667-p6c8).
	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	// The metrics endpoint is served over HTTPS (a self-signed certificate unless one is mounted
	// in the metrics server's CertDir) and only to callers that the API server authenticates
	// (TokenReview) and authorizes for GET /metrics (SubjectAccessReview): config/rbac's
	// metrics_auth_role grants the manager those reviews, metrics_reader_role grants a scraper
	// the GET. The local demo and the integration tests pass --metrics-secure=false.
	metricsServerOptions := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if secureMetrics {
		metricsServerOptions.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	mgr, err := otelctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{ // GoWatchtower
		Scheme:                 scheme,
		Metrics:                metricsServerOptions,
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         enableLeaderElection,
		LeaderElectionID:       "workload-operator.demo.gowatchtower.io",
	})
	if err != nil {
		setupLog.Error(err, "unable to start manager")
		os.Exit(1)
	}

	// Both controllers' hot-loop and stuck thresholds. // GoWatchtower
	instrumentation := []otelctrl.Option{
		otelctrl.WithHotLoopThreshold(hotLoopReconciles, hotLoopWindow),
		otelctrl.WithStuckAfter(stuckAfter),
	}
	if err := (&controller.WorkloadReconciler{
		Client:          mgr.GetClient(),
		Scheme:          mgr.GetScheme(),
		Recorder:        mgr.GetEventRecorder("workload-operator"),
		ImagePrefix:     imagePrefix,
		ImageTag:        imageTag,
		Instrumentation: instrumentation,
	}).SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "unable to create controller", "controller", "Workload")
		os.Exit(1)
	}

	if err := (&controller.RolloutReconciler{Client: mgr.GetClient(), Instrumentation: instrumentation}).SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "unable to create controller", "controller", "Deployment")
		os.Exit(1)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up ready check")
		os.Exit(1)
	}

	setupLog.Info("starting manager")
	runErr := mgr.Start(ctrl.SetupSignalHandler())
	// Not deferred: os.Exit skips deferred calls. Shutdown is bounded (5s by default), within
	// the pod's termination grace period, whatever the collector does.
	if err := tel.Shutdown(context.Background()); err != nil { // GoWatchtower
		setupLog.Error(err, "unable to flush telemetry")
	}
	if runErr != nil {
		setupLog.Error(runErr, "problem running manager")
		os.Exit(1)
	}
}
