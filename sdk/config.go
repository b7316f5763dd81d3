package sdk

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	otelsemconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// OTLP protocols, as OTEL_EXPORTER_OTLP_*PROTOCOL spells them.
const (
	protocolGRPC         = "grpc"
	protocolHTTPProtobuf = "http/protobuf"
)

// Defaults. The protocol is the specification's, http/protobuf (port 4318 on
// otelcol-watchtower). Metrics are pushed every 10s (not the specification's 60s) so that a
// dashboard follows a rollout, and spans every second (not 5s) so that a trace is in Jaeger by
// the time someone looks for it. Shutdown gives up after 5s when its ctx has no deadline:
// kubebuilder's manager Deployment has terminationGracePeriodSeconds: 10, and the manager needs
// part of it to stop too, so a black-holing collector must not be able to turn a rollout into
// SIGKILLs.
const (
	defaultProtocol        = protocolHTTPProtobuf
	defaultMetricInterval  = 10 * time.Second
	defaultMetricTimeout   = 30 * time.Second
	defaultQueueSize       = 2048
	defaultMaxBatch        = 512
	defaultBatchTimeout    = time.Second
	defaultExportTimeout   = 10 * time.Second
	defaultShutdownTimeout = 5 * time.Second
)

// The collector's well-known OTLP ports, used to spot an endpoint that does not match its
// protocol (see warnEndpointPorts).
const (
	portGRPC = "4317"
	portHTTP = "4318"
)

// Environment variables read by Start (docs/sdk.md has the table). The OTLP exporters, the
// tracer provider and the periodic metric reader read some of them a second time themselves;
// Start validates them first because those readers fall back to a default on a bad value, and
// a typo must fail the process at startup instead of silently sending telemetry nowhere.
const (
	envSDKDisabled        = "OTEL_SDK_DISABLED"
	envServiceName        = "OTEL_SERVICE_NAME"
	envResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"
	envTracesExporter     = "OTEL_TRACES_EXPORTER"
	envMetricsExporter    = "OTEL_METRICS_EXPORTER"
	envPropagators        = "OTEL_PROPAGATORS"
	envTracesSampler      = "OTEL_TRACES_SAMPLER"
	envTracesSamplerArg   = "OTEL_TRACES_SAMPLER_ARG"
	envBSPScheduleDelay   = "OTEL_BSP_SCHEDULE_DELAY"
	envBSPExportTimeout   = "OTEL_BSP_EXPORT_TIMEOUT"
	envBSPMaxQueueSize    = "OTEL_BSP_MAX_QUEUE_SIZE"
	envBSPMaxExportBatch  = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
	envMetricInterval     = "OTEL_METRIC_EXPORT_INTERVAL"
	envMetricTimeout      = "OTEL_METRIC_EXPORT_TIMEOUT"
	envExemplarFilter     = "OTEL_METRICS_EXEMPLAR_FILTER"
	envOTLPPrefix         = "OTEL_EXPORTER_OTLP_"

	// Downward API variables (see docs/sdk.md for the manifest snippet).
	envPodName      = "POD_NAME"
	envPodNamespace = "POD_NAMESPACE"
	envPodUID       = "POD_UID"
	envNodeName     = "NODE_NAME"
)

// spanLimitVariables are read by the tracer provider itself (sdktrace.NewSpanLimits); Start
// only validates them.
var spanLimitVariables = []string{
	"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
	"OTEL_ATTRIBUTE_COUNT_LIMIT",
	"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
	"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
	"OTEL_SPAN_EVENT_COUNT_LIMIT",
	"OTEL_SPAN_LINK_COUNT_LIMIT",
	"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
	"OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
}

// Option configures Start. What the OTEL_* environment variables configure (endpoint,
// protocol, headers, TLS, sampler, batching, intervals, resource) has no option: a Deployment
// sets it, as for any OpenTelemetry SDK. The options are what a variable cannot say. An option
// always wins over the environment.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is what the options set. Zero values mean "not set by an option".
type config struct {
	promRegisterer    prometheus.Registerer
	promRegistererSet bool
	scopeLabels       bool

	noGlobal         bool
	noLinkedSampling bool
	shutdownTimeout  time.Duration
	logger           *logr.Logger

	spanExporter   sdktrace.SpanExporter
	metricExporter sdkmetric.Exporter

	// Unexported hooks for this package's tests: a sampler the environment cannot name, an
	// extra reader.
	sampler      sdktrace.Sampler
	extraReaders []sdkmetric.Reader

	// errs collects invalid option values; Start reports them all at once.
	errs []error
}

// WithPrometheusRegisterer sets the Prometheus registry that serves the OpenTelemetry metrics
// and that the OTLP push bridges controller-runtime's metrics from. The default is
// controller-runtime's metrics.Registry, which the manager's metrics server already serves, so
// the operator's /metrics shows both without a second port. The bridge reads r when r is also
// a prometheus.Gatherer (a *prometheus.Registry is), skipping the families this Telemetry
// serves so that nothing is pushed twice.
//
// nil keeps the OpenTelemetry metrics off /metrics; controller-runtime's metrics are still
// bridged from metrics.Registry. Tests pass prometheus.NewRegistry(): one registry serves one
// live Telemetry at a time.
func WithPrometheusRegisterer(r prometheus.Registerer) Option {
	return optionFunc(func(c *config) { c.promRegisterer, c.promRegistererSet = r, true })
}

// WithPrometheusScopeLabels keeps the otel_scope_name, otel_scope_version and
// otel_scope_schema_url labels that the OpenTelemetry Prometheus exporter puts on every series
// it serves. They are dropped by default so that the watchtower_* series look like the
// controller-runtime series next to them on /metrics. Keep them to tell instruments of the
// same name apart when two instrumentation libraries in the process record one with the same
// attributes: without the labels, their series collide and the scrape fails.
func WithPrometheusScopeLabels() Option {
	return optionFunc(func(c *config) { c.scopeLabels = true })
}

// WithoutGlobal keeps Start from installing its providers, the propagators of OTEL_PROPAGATORS
// and its error handler as OpenTelemetry's globals (otel.SetTracerProvider,
// otel.SetMeterProvider, otel.SetTextMapPropagator, otel.SetErrorHandler). Use the Telemetry's
// providers explicitly then; OTEL_PROPAGATORS is not read. Span export failures still go to
// WithLogger's logger; the OpenTelemetry SDK's own errors (a failed metric push among them) go
// to whatever error handler the process installed, stderr unless it installed one.
func WithoutGlobal() Option {
	return optionFunc(func(c *config) { c.noGlobal = true })
}

// WithLogger sets where the SDK reports on itself: the warnings Start logs (an endpoint whose
// port belongs to the other OTLP protocol, an unsupported propagator), and failed exports, at
// most one line per distinct error per 30s with the number of repeats left out. A collector
// that is down for an hour must not flood the operator's log, nor write unstructured lines to
// stderr next to it (the OpenTelemetry default). Start installs the error handler as
// OpenTelemetry's global one (otel.SetErrorHandler) unless WithoutGlobal is given. The default
// is controller-runtime's log.Log, the logger that ctrl.SetLogger sets in a kubebuilder
// main.go.
func WithLogger(l logr.Logger) Option {
	return optionFunc(func(c *config) { c.logger = &l })
}

// WithShutdownTimeout bounds Telemetry.Shutdown when its ctx has no deadline (default 5s, well
// within kubebuilder's 10s termination grace period). The bound is what keeps an unreachable or
// unresponsive collector from holding the process after the manager has stopped; what is not
// sent by then is counted as dropped. A ctx with a deadline is used as it is. The OpenTelemetry
// specification has no variable for it.
func WithShutdownTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d <= 0 {
			c.errs = append(c.errs, errors.New("WithShutdownTimeout("+d.String()+"): must be positive"))
			return
		}
		c.shutdownTimeout = d
	})
}

// WithSpanExporter replaces the span exporter that OTEL_TRACES_EXPORTER selects (OTLP by
// default), e.g. with an in-memory exporter in tests. Spans still go through the bounded queue
// and are counted. OTEL_TRACES_EXPORTER and the OTLP trace variables are then neither read nor
// validated.
func WithSpanExporter(e sdktrace.SpanExporter) Option {
	return optionFunc(func(c *config) {
		if e == nil {
			c.errs = append(c.errs, errors.New("WithSpanExporter(nil): an exporter is required"))
			return
		}
		c.spanExporter = e
	})
}

// WithMetricExporter replaces the push exporter that OTEL_METRICS_EXPORTER selects (OTLP by
// default), e.g. with an in-memory exporter in tests. Exports are still counted, and the
// Prometheus bridge still feeds it. OTEL_METRICS_EXPORTER and the OTLP metric variables are
// then neither read nor validated.
func WithMetricExporter(e sdkmetric.Exporter) Option {
	return optionFunc(func(c *config) {
		if e == nil {
			c.errs = append(c.errs, errors.New("WithMetricExporter(nil): an exporter is required"))
			return
		}
		c.metricExporter = e
	})
}

// Exporter names of OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER.
const (
	exporterOTLP       = "otlp"
	exporterConsole    = "console"
	exporterNone       = "none"
	exporterPrometheus = "prometheus"
)

// settings is the effective configuration: options merged over the environment, validated.
type settings struct {
	disabled bool

	k8sAttrs []attribute.KeyValue // from the Downward API variables
	envAttrs []attribute.KeyValue // OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME

	sampler sdktrace.Sampler

	// tracesExporter and metricsExporter are exporterOTLP, exporterConsole or exporterNone;
	// unused when spanExporter or metricExporter is set.
	tracesExporter  string
	metricsExporter string
	traces          otlpSettings // used when tracesExporter is exporterOTLP
	metrics         otlpSettings // used when metricsExporter is exporterOTLP

	// propagators are installed as the global propagator unless noGlobal.
	propagators []propagation.TextMapPropagator

	queueSize     int
	maxBatch      int
	batchTimeout  time.Duration
	exportTimeout time.Duration

	metricInterval time.Duration
	metricTimeout  time.Duration

	promRegisterer prometheus.Registerer // nil: no Prometheus exporter
	promGatherer   prometheus.Gatherer   // what the bridge reads; nil: no bridge
	scopeLabels    bool

	noGlobal        bool
	logger          *logr.Logger // nil: controller-runtime's, see log
	shutdownTimeout time.Duration
	spanExporter    sdktrace.SpanExporter
	metricExporter  sdkmetric.Exporter
	extraReaders    []sdkmetric.Reader

	// warnings are logged by Start: configuration that is accepted but does not do all it
	// asks for.
	warnings []warning
}

type warning struct {
	msg string
	kvs []any
}

// otlpSettings is what Start decides for one signal's OTLP exporter. Everything else (headers,
// TLS, compression, timeout, the per-signal endpoint path rules) the exporter reads from the
// environment itself, after newSettings has validated it.
type otlpSettings struct {
	protocol string
	// defaultEndpoint is set when no variable names an endpoint: the specification's
	// http://localhost:4318 or :4317, which Start passes explicitly because the Go exporters'
	// own default would use TLS.
	defaultEndpoint string

	// Only for the warnings: the endpoint the exporter will use, and where it and the
	// protocol came from (a variable's name, or "default").
	effectiveEndpoint string
	endpointFrom      string
	protocolFrom      string
}

// newSettings applies the options over the environment read through getenv and returns every
// problem found, each naming the option or variable and its bad value.
func newSettings(getenv func(string) string, opts []Option) (*settings, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	env := func(name string) string { return strings.TrimSpace(getenv(name)) }
	errs := c.errs

	s := &settings{}
	if v := env(envSDKDisabled); v != "" {
		switch strings.ToLower(v) {
		case "true":
			s.disabled = true
		case "false":
		default:
			errs = append(errs, envError(envSDKDisabled, v, "must be true or false"))
		}
	}
	if s.disabled {
		// A disabled SDK reads nothing else: a bad variable must not break an operator whose
		// telemetry was switched off, possibly because that variable is bad.
		return s, nil
	}
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	for _, d := range []struct {
		env string
		kv  func(string) attribute.KeyValue
	}{
		{envPodName, otelsemconv.K8SPodName},
		{envPodNamespace, otelsemconv.K8SNamespaceName},
		{envPodUID, otelsemconv.K8SPodUID},
		{envNodeName, otelsemconv.K8SNodeName},
	} {
		if v := env(d.env); v != "" {
			s.k8sAttrs = append(s.k8sAttrs, d.kv(v))
		}
	}
	attrs, err := parseResourceAttributes(env(envResourceAttributes))
	collect(err)
	if name := env(envServiceName); name != "" {
		attrs = append(attrs, otelsemconv.ServiceName(name))
	}
	s.envAttrs = attrs

	s.sampler = c.sampler
	if s.sampler == nil {
		s.sampler, err = samplerFromEnv(env(envTracesSampler), env(envTracesSamplerArg))
		collect(err)
	}
	if s.sampler != nil && !c.noLinkedSampling {
		s.sampler = SampleLinked(s.sampler)
	}
	for _, name := range spanLimitVariables {
		_, err := envInt(env, name, 0, 0)
		collect(err)
	}

	s.spanExporter = c.spanExporter
	if s.spanExporter == nil {
		s.tracesExporter, err = tracesExporterFromEnv(env(envTracesExporter))
		collect(err)
		if s.tracesExporter == exporterOTLP {
			s.traces, err = otlpFromEnv(env, "TRACES")
			collect(err)
		}
	}
	s.metricExporter = c.metricExporter
	if s.metricExporter == nil {
		s.metricsExporter, err = metricsExporterFromEnv(env(envMetricsExporter))
		collect(err)
		if s.metricsExporter == exporterOTLP {
			s.metrics, err = otlpFromEnv(env, "METRICS")
			collect(err)
		}
	}

	s.noGlobal = c.noGlobal
	if !s.noGlobal {
		var w *warning
		s.propagators, w = propagatorsFromEnv(env(envPropagators))
		if w != nil {
			s.warnings = append(s.warnings, *w)
		}
	}

	s.queueSize, err = envInt(env, envBSPMaxQueueSize, defaultQueueSize, 1)
	collect(err)
	// A batch larger than the queue could never fill; the default is capped to the queue like
	// the OpenTelemetry SDK does, an explicit value is a mistake.
	s.maxBatch = min(defaultMaxBatch, s.queueSize)
	if v := env(envBSPMaxExportBatch); v != "" {
		n, err := envInt(env, envBSPMaxExportBatch, defaultMaxBatch, 1)
		collect(err)
		if err == nil && n > s.queueSize {
			collect(envError(envBSPMaxExportBatch, v, fmt.Sprintf("must not exceed %s (%d)", envBSPMaxQueueSize, s.queueSize)))
		} else if err == nil {
			s.maxBatch = n
		}
	}
	s.batchTimeout, err = envMillis(env, envBSPScheduleDelay, defaultBatchTimeout)
	collect(err)
	s.exportTimeout, err = envMillis(env, envBSPExportTimeout, defaultExportTimeout)
	collect(err)
	s.metricInterval, err = envMillis(env, envMetricInterval, defaultMetricInterval)
	collect(err)
	s.metricTimeout, err = envMillis(env, envMetricTimeout, defaultMetricTimeout)
	collect(err)
	collect(checkExemplarFilter(env(envExemplarFilter)))

	s.promRegisterer = metrics.Registry
	if c.promRegistererSet {
		s.promRegisterer = c.promRegisterer
	}
	switch g, ok := s.promRegisterer.(prometheus.Gatherer); {
	case s.promRegisterer == nil:
		s.promGatherer = metrics.Registry
	case ok:
		s.promGatherer = g
	}
	s.scopeLabels = c.scopeLabels

	s.extraReaders = c.extraReaders
	s.shutdownTimeout = defaultShutdownTimeout
	if c.shutdownTimeout > 0 {
		s.shutdownTimeout = c.shutdownTimeout
	}
	s.logger = c.logger

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// log is where the SDK reports on itself: WithLogger's logger, else controller-runtime's root
// logger, which delegates to whatever ctrl.SetLogger installs (even later), so that the
// operator's own logger is the default without an option. The default is only touched when
// there is something to log: controller-runtime prints a notice to stderr when its logger is
// used in a process that never called ctrl.SetLogger.
func (s *settings) log() logr.Logger {
	if s.logger != nil {
		return *s.logger
	}
	return ctrllog.Log.WithName("telemetry")
}
