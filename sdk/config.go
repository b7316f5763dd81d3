package sdk

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	otelsemconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Protocols accepted by WithProtocol and the OTEL_EXPORTER_OTLP_*PROTOCOL variables.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Defaults. The protocol is the specification's, http/protobuf (port 4318 on
// otelcol-watchtower). Metrics are pushed every 10s (not the SDK's 60s) so that a dashboard
// follows a rollout. Shutdown gives up after 5s when its ctx has no deadline: kubebuilder's
// manager Deployment has terminationGracePeriodSeconds: 10, and the manager needs part of it
// to stop too, so a black-holing collector must not be able to turn a rollout into SIGKILLs.
const (
	defaultProtocol        = ProtocolHTTPProtobuf
	defaultMetricInterval  = 10 * time.Second
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

// Environment variables read by Start. The OTLP exporters also read the ones they own
// (certificates, compression, timeouts) themselves; Start validates those listed here first so
// that a typo fails the process at startup instead of silently falling back to a default.
const (
	envSDKDisabled        = "OTEL_SDK_DISABLED"
	envServiceName        = "OTEL_SERVICE_NAME"
	envResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"
	envTracesSampler      = "OTEL_TRACES_SAMPLER"
	envTracesSamplerArg   = "OTEL_TRACES_SAMPLER_ARG"
	envMetricInterval     = "OTEL_METRIC_EXPORT_INTERVAL"
	envOTLPPrefix         = "OTEL_EXPORTER_OTLP_"

	// Downward API variables (see docs/sdk.md for the manifest snippet).
	envPodName      = "POD_NAME"
	envPodNamespace = "POD_NAMESPACE"
	envPodUID       = "POD_UID"
	envNodeName     = "NODE_NAME"
)

// Option configures Start. Options always win over the corresponding environment variable.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is what the options set. Zero values mean "not set by an option".
type config struct {
	serviceName    string
	serviceVersion string
	resourceAttrs  []attribute.KeyValue

	endpoint string
	protocol string
	insecure bool
	headers  map[string]string
	sampler  sdktrace.Sampler

	promRegisterer    prometheus.Registerer
	promRegistererSet bool
	promGatherer      prometheus.Gatherer
	promGathererSet   bool

	metricInterval  time.Duration
	queueSize       int
	noGlobal        bool
	shutdownTimeout time.Duration
	logger          *logr.Logger

	spanExporter   sdktrace.SpanExporter
	metricExporter sdkmetric.Exporter

	// Unexported hooks for this package's tests: a small batch timeout, an extra reader.
	batchTimeout  time.Duration
	exportTimeout time.Duration
	extraReaders  []sdkmetric.Reader

	// errs collects invalid option values; Start reports them all at once.
	errs []error
}

// WithServiceName sets service.name. It wins over OTEL_SERVICE_NAME, which wins over
// service.name in OTEL_RESOURCE_ATTRIBUTES; the default is the executable's name.
func WithServiceName(name string) Option {
	return optionFunc(func(c *config) {
		if strings.TrimSpace(name) == "" {
			c.errs = append(c.errs, errors.New(`WithServiceName(""): must not be empty`))
			return
		}
		c.serviceName = name
	})
}

// WithServiceVersion sets service.version, typically to the operator's build version.
func WithServiceVersion(version string) Option {
	return optionFunc(func(c *config) { c.serviceVersion = version })
}

// WithResourceAttributes adds resource attributes. They win over OTEL_RESOURCE_ATTRIBUTES and
// the Downward API variables; WithServiceName and WithServiceVersion win over them.
func WithResourceAttributes(attrs ...attribute.KeyValue) Option {
	return optionFunc(func(c *config) { c.resourceAttrs = append(c.resourceAttrs, attrs...) })
}

// WithEndpoint sets the OTLP endpoint of both signals as a base URL such as
// "http://otelcol-watchtower.observability:4318" (http/protobuf, the default protocol; the
// /v1/traces and /v1/metrics paths are appended) or "http://otelcol-watchtower.observability:4317"
// (with WithProtocol("grpc")). An http scheme means no TLS. It replaces
// OTEL_EXPORTER_OTLP_ENDPOINT and the per-signal OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT.
func WithEndpoint(endpoint string) Option {
	return optionFunc(func(c *config) {
		if err := checkEndpoint(endpoint); err != nil {
			c.errs = append(c.errs, fmt.Errorf("WithEndpoint(%q): %w", endpoint, err))
			return
		}
		c.endpoint = endpoint
	})
}

// WithProtocol sets the OTLP protocol of both signals: "grpc" (ProtocolGRPC) or
// "http/protobuf" (ProtocolHTTPProtobuf). It replaces OTEL_EXPORTER_OTLP_PROTOCOL and the
// per-signal variables; the default is "http/protobuf", the specification's, which a collector
// receives on port 4318 (gRPC is on 4317). Start logs a warning when the endpoint's port is the
// other protocol's.
func WithProtocol(protocol string) Option {
	return optionFunc(func(c *config) {
		if err := checkProtocol(protocol); err != nil {
			c.errs = append(c.errs, fmt.Errorf("WithProtocol(%q): %w", protocol, err))
			return
		}
		c.protocol = protocol
	})
}

// WithInsecure disables TLS towards the OTLP endpoint, like OTEL_EXPORTER_OTLP_INSECURE=true.
// An endpoint URL with the http scheme already implies it.
func WithInsecure() Option {
	return optionFunc(func(c *config) { c.insecure = true })
}

// WithHeaders sets the headers (gRPC metadata) sent with every OTLP export, e.g. an
// authorization token. They replace OTEL_EXPORTER_OTLP_HEADERS and the per-signal variables.
func WithHeaders(headers map[string]string) Option {
	return optionFunc(func(c *config) {
		c.headers = make(map[string]string, len(headers))
		for k, v := range headers {
			c.headers[k] = v
		}
	})
}

// WithSampler sets the trace sampler, replacing OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
// The default is parentbased_always_on: every reconcile is traced and the collector's tail
// sampling decides what to keep.
func WithSampler(s sdktrace.Sampler) Option {
	return optionFunc(func(c *config) {
		if s == nil {
			c.errs = append(c.errs, errors.New("WithSampler(nil): a sampler is required"))
			return
		}
		c.sampler = s
	})
}

// WithPrometheusRegisterer sets where the Prometheus exporter registers, so that the
// OpenTelemetry metrics are served on that registry's /metrics. The default is
// controller-runtime's metrics.Registry, which the manager's metrics server already serves.
// nil disables the Prometheus exporter. Tests should pass prometheus.NewRegistry(): one
// registerer serves one live Telemetry at a time.
func WithPrometheusRegisterer(r prometheus.Registerer) Option {
	return optionFunc(func(c *config) { c.promRegisterer, c.promRegistererSet = r, true })
}

// WithPrometheusGatherer sets the Prometheus metrics that are bridged into the OTLP metric
// export. The default is controller-runtime's metrics.Registry (reconcile, workqueue and REST
// client metrics). Families produced by an OpenTelemetry Prometheus exporter (those labelled
// otel_scope_name, and target_info) are skipped, because they are already exported over OTLP.
// nil disables the bridge.
func WithPrometheusGatherer(g prometheus.Gatherer) Option {
	return optionFunc(func(c *config) { c.promGatherer, c.promGathererSet = g, true })
}

// WithMetricExportInterval sets how often metrics are pushed over OTLP, replacing
// OTEL_METRIC_EXPORT_INTERVAL. The default is 10s.
func WithMetricExportInterval(d time.Duration) Option {
	return positive("WithMetricExportInterval", d, func(c *config) { c.metricInterval = d })
}

// WithQueueSize bounds the number of ended spans waiting for export (default 2048). When the
// queue is full, further spans are dropped and counted in watchtower.telemetry.dropped
// instead of blocking the reconcile that ended them.
func WithQueueSize(n int) Option {
	return positive("WithQueueSize", n, func(c *config) { c.queueSize = n })
}

// WithoutGlobal keeps Start from installing its providers, the W3C tracecontext+baggage
// propagator and its error handler as OpenTelemetry's globals (otel.SetTracerProvider,
// otel.SetMeterProvider, otel.SetTextMapPropagator, otel.SetErrorHandler). Use the Telemetry's
// providers explicitly then. Span export failures still go to WithLogger's logger; the
// OpenTelemetry SDK's own errors (a failed metric push among them) go to whatever error
// handler the process installed, stderr unless it installed one.
func WithoutGlobal() Option {
	return optionFunc(func(c *config) { c.noGlobal = true })
}

// WithLogger sets where the SDK reports on itself: the warning Start logs when an endpoint's
// port belongs to the other OTLP protocol, and failed exports, at most one line per distinct
// error per 30s with the number of repeats left out. A collector that is down for an hour must
// not flood the operator's log, nor write unstructured lines to stderr next to it (the
// OpenTelemetry default). Start installs the error handler as OpenTelemetry's global one
// (otel.SetErrorHandler) unless WithoutGlobal is given. The default is controller-runtime's
// log.Log, the logger that ctrl.SetLogger sets in a kubebuilder main.go.
func WithLogger(l logr.Logger) Option {
	return optionFunc(func(c *config) { c.logger = &l })
}

// WithShutdownTimeout bounds Telemetry.Shutdown when its ctx has no deadline (default 5s, well
// within kubebuilder's 10s termination grace period). The bound is what keeps an unreachable or
// unresponsive collector from holding the process after the manager has stopped; what is not
// sent by then is counted as dropped. A ctx with a deadline is used as it is.
func WithShutdownTimeout(d time.Duration) Option {
	return positive("WithShutdownTimeout", d, func(c *config) { c.shutdownTimeout = d })
}

// positive is an option that applies set when v > 0 and otherwise reports "name(v): must be
// positive".
func positive[T int | time.Duration](name string, v T, set func(*config)) Option {
	return optionFunc(func(c *config) {
		if v <= 0 {
			c.errs = append(c.errs, fmt.Errorf("%s(%v): must be positive", name, v))
			return
		}
		set(c)
	})
}

// WithSpanExporter replaces the OTLP span exporter, e.g. with an in-memory exporter in tests or
// another backend's exporter. Spans still go through the bounded queue and are counted.
// The OTLP trace variables are then neither read nor validated.
func WithSpanExporter(e sdktrace.SpanExporter) Option {
	return optionFunc(func(c *config) {
		if e == nil {
			c.errs = append(c.errs, errors.New("WithSpanExporter(nil): an exporter is required"))
			return
		}
		c.spanExporter = e
	})
}

// WithMetricExporter replaces the OTLP metric exporter of the periodic push. Exports are still
// counted, and the Prometheus bridge still feeds it. The OTLP metric variables are then
// neither read nor validated.
func WithMetricExporter(e sdkmetric.Exporter) Option {
	return optionFunc(func(c *config) {
		if e == nil {
			c.errs = append(c.errs, errors.New("WithMetricExporter(nil): an exporter is required"))
			return
		}
		c.metricExporter = e
	})
}

// settings is the effective configuration: options merged over the environment, validated.
type settings struct {
	disabled bool

	serviceName    string // empty: the executable name
	serviceVersion string
	k8sAttrs       []attribute.KeyValue // from the Downward API variables
	envAttrs       []attribute.KeyValue // OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME
	optAttrs       []attribute.KeyValue

	sampler sdktrace.Sampler
	traces  otlpSettings // unused when spanExporter is set
	metrics otlpSettings // unused when metricExporter is set

	metricInterval time.Duration
	queueSize      int
	maxBatch       int
	batchTimeout   time.Duration
	exportTimeout  time.Duration

	promRegisterer  prometheus.Registerer
	promGatherer    prometheus.Gatherer
	noGlobal        bool
	logger          *logr.Logger // nil: controller-runtime's, see log
	shutdownTimeout time.Duration
	spanExporter    sdktrace.SpanExporter
	metricExporter  sdkmetric.Exporter
	extraReaders    []sdkmetric.Reader
}

// otlpSettings is what Start passes to an OTLP exporter explicitly. What is left empty the
// exporter reads from the (already validated) environment itself, including the per-signal
// endpoint path rules of the specification.
type otlpSettings struct {
	protocol string
	endpoint string // base URL from WithEndpoint; empty: from the environment
	insecure bool
	headers  map[string]string // nil: from the environment

	// Only for the warnings: the endpoint the exporter will use, and where it and the
	// protocol came from ("WithEndpoint", a variable's name, or "default").
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

	s.serviceName = c.serviceName
	s.serviceVersion = c.serviceVersion
	s.optAttrs = c.resourceAttrs
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
	if err != nil {
		errs = append(errs, err)
	}
	if name := env(envServiceName); name != "" {
		attrs = append(attrs, otelsemconv.ServiceName(name))
	}
	s.envAttrs = attrs

	s.sampler = c.sampler
	if s.sampler == nil {
		if s.sampler, err = samplerFromEnv(env(envTracesSampler), env(envTracesSamplerArg)); err != nil {
			errs = append(errs, err)
		}
	}

	s.spanExporter = c.spanExporter
	if s.spanExporter == nil {
		if s.traces, err = otlpFromEnv(env, "TRACES", c); err != nil {
			errs = append(errs, err)
		}
	}
	s.metricExporter = c.metricExporter
	if s.metricExporter == nil {
		if s.metrics, err = otlpFromEnv(env, "METRICS", c); err != nil {
			errs = append(errs, err)
		}
	}

	s.metricInterval = c.metricInterval
	if s.metricInterval == 0 {
		s.metricInterval = defaultMetricInterval
		if v := env(envMetricInterval); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ms <= 0 {
				errs = append(errs, envError(envMetricInterval, v, "must be a positive integer number of milliseconds"))
			} else {
				s.metricInterval = time.Duration(ms) * time.Millisecond
			}
		}
	}

	s.queueSize = c.queueSize
	if s.queueSize == 0 {
		s.queueSize = defaultQueueSize
	}
	// A batch larger than the queue could never fill; cap it like the OpenTelemetry SDK does.
	s.maxBatch = min(defaultMaxBatch, s.queueSize)
	s.batchTimeout = cmpOr(c.batchTimeout, defaultBatchTimeout)
	s.exportTimeout = cmpOr(c.exportTimeout, defaultExportTimeout)

	s.promRegisterer = metrics.Registry
	if c.promRegistererSet {
		s.promRegisterer = c.promRegisterer
	}
	s.promGatherer = metrics.Registry
	if c.promGathererSet {
		s.promGatherer = c.promGatherer
	}
	s.noGlobal = c.noGlobal
	s.extraReaders = c.extraReaders
	s.shutdownTimeout = cmpOr(c.shutdownTimeout, defaultShutdownTimeout)
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

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// envError formats a bad environment variable the same way everywhere:
// NAME="value": what is wrong.
func envError(name, value, problem string) error {
	return fmt.Errorf("%s=%q: %s", name, value, problem)
}

// otlpFromEnv resolves one signal's OTLP settings: the option if set, else the per-signal
// variable, else the general one. Only variables that take effect are validated.
func otlpFromEnv(env func(string) string, signal string, c config) (otlpSettings, error) {
	var errs []error
	o := otlpSettings{protocol: c.protocol, endpoint: c.endpoint, insecure: c.insecure, headers: c.headers}

	// lookup returns the per-signal variable if set, else the general one, with its name.
	lookup := func(suffix string) (name, value string) {
		name = envOTLPPrefix + signal + "_" + suffix
		if v := env(name); v != "" {
			return name, v
		}
		name = envOTLPPrefix + suffix
		return name, env(name)
	}

	o.protocolFrom = "WithProtocol"
	if o.protocol == "" {
		o.protocol, o.protocolFrom = defaultProtocol, "default"
		if name, v := lookup("PROTOCOL"); v != "" {
			if err := checkProtocol(v); err != nil {
				errs = append(errs, envError(name, v, err.Error()))
			} else {
				o.protocol, o.protocolFrom = v, name
			}
		}
	}
	o.effectiveEndpoint, o.endpointFrom = o.endpoint, "WithEndpoint"
	if o.endpoint == "" {
		// Only the variable in effect is checked: when the per-signal one is set, the
		// exporter never reads the general one for this signal.
		if name, v := lookup("ENDPOINT"); v != "" {
			if err := checkEndpoint(v); err != nil {
				errs = append(errs, envError(name, v, err.Error()))
			}
			o.effectiveEndpoint, o.endpointFrom = v, name
		}
	}
	if o.endpoint == "" {
		if _, v := lookup("ENDPOINT"); v == "" {
			// The specification's defaults; the Go exporters' own would use TLS on localhost.
			o.endpoint = "http://localhost:" + portHTTP
			if o.protocol == ProtocolGRPC {
				o.endpoint = "http://localhost:" + portGRPC
			}
			o.effectiveEndpoint, o.endpointFrom = o.endpoint, "default"
		}
	}
	if o.headers == nil {
		if name, v := lookup("HEADERS"); v != "" {
			if _, err := parseHeaders(v); err != nil {
				// The value is not echoed: headers usually carry credentials.
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	return o, errors.Join(errs...)
}

func checkProtocol(p string) error {
	switch p {
	case ProtocolGRPC, ProtocolHTTPProtobuf:
		return nil
	case "http/json":
		return errors.New(`http/json is not supported; use "grpc" or "http/protobuf"`)
	default:
		return errors.New(`must be "grpc" or "http/protobuf"`)
	}
}

// checkEndpoint accepts what the OTLP specification calls an endpoint: an absolute URL with
// the http or https scheme. A bare "host:port" parses as a URL with scheme "host", which is
// why the scheme is checked and not only the parse.
func checkEndpoint(e string) error {
	const want = "must be a URL with scheme http or https, e.g. http://otelcol-watchtower:4318 " +
		"(http/protobuf, the default) or http://otelcol-watchtower:4317 (grpc)"
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New(want)
	}
	return nil
}

// parseHeaders parses the OTLP headers format "k=v,k2=v2" with URL-encoded values. Errors
// name the entry and key but never a value.
func parseHeaders(s string) (map[string]string, error) {
	h := map[string]string{}
	entries := strings.Split(s, ",")
	for i, entry := range entries {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		k, v, ok := strings.Cut(entry, "=")
		k = strings.TrimSpace(k)
		switch {
		case !ok:
			return nil, fmt.Errorf("entry %d of %d has no '=': want key=value,key2=value2 (values are not shown: they may be secrets)", i+1, len(entries))
		case !validHeaderKey(k):
			return nil, fmt.Errorf("entry %d of %d: key %q is not a valid header name", i+1, len(entries), k)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("entry %d of %d: the value of %q is not valid URL encoding (values are not shown: they may be secrets)", i+1, len(entries), k)
		}
		h[k] = strings.TrimSpace(dv)
	}
	return h, nil
}

// validHeaderKey reports whether k is an HTTP token (RFC 9110), the rule the OTLP exporters
// apply before silently dropping a header.
func validHeaderKey(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", c):
		default:
			return false
		}
	}
	return true
}

// parseResourceAttributes parses OTEL_RESOURCE_ATTRIBUTES ("k=v,k2=v2", values URL-encoded)
// with the semantics of resource.WithFromEnv, but reports a malformed entry instead of
// dropping it. Empty entries (a trailing comma) are ignored.
func parseResourceAttributes(s string) ([]attribute.KeyValue, error) {
	if s == "" {
		return nil, nil
	}
	var attrs []attribute.KeyValue
	for entry := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		k, v, ok := strings.Cut(entry, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, envError(envResourceAttributes, s, fmt.Sprintf("entry %q is not key=value", entry))
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, envError(envResourceAttributes, s, fmt.Sprintf("the value of %q is not valid URL encoding", k))
		}
		attrs = append(attrs, attribute.String(k, dv))
	}
	return attrs, nil
}

// Sampler names of the OpenTelemetry specification.
const (
	samplerAlwaysOn                = "always_on"
	samplerAlwaysOff               = "always_off"
	samplerTraceIDRatio            = "traceidratio"
	samplerParentBasedAlwaysOn     = "parentbased_always_on"
	samplerParentBasedAlwaysOff    = "parentbased_always_off"
	samplerParentBasedTraceIDRatio = "parentbased_traceidratio"
)

// samplerFromEnv implements OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. The argument is
// only read by the ratio samplers (a missing one means 1.0), as the specification says.
func samplerFromEnv(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, envError(envTracesSamplerArg, arg, "must be a number between 0 and 1")
		}
		return r, nil
	}
	switch strings.ToLower(name) {
	case "", samplerParentBasedAlwaysOn:
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case samplerAlwaysOn:
		return sdktrace.AlwaysSample(), nil
	case samplerAlwaysOff:
		return sdktrace.NeverSample(), nil
	case samplerParentBasedAlwaysOff:
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case samplerTraceIDRatio:
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.TraceIDRatioBased(r), nil
	case samplerParentBasedTraceIDRatio:
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	default:
		return nil, envError(envTracesSampler, name, "must be one of always_on, always_off, traceidratio, "+
			"parentbased_always_on, parentbased_always_off, parentbased_traceidratio")
	}
}

// executableName is the default service.name, as the specification defines it:
// "unknown_service:" and the executable's name, e.g. "unknown_service:manager" in a kubebuilder
// image. Set WithServiceName or OTEL_SERVICE_NAME to name the operator.
func executableName() string {
	if p, err := os.Executable(); err == nil {
		return "unknown_service:" + filepath.Base(p)
	}
	if len(os.Args) > 0 && os.Args[0] != "" {
		return "unknown_service:" + filepath.Base(os.Args[0])
	}
	return "unknown_service"
}
