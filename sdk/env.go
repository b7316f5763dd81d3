package sdk

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// envError formats a bad environment variable the same way everywhere:
// NAME="value": what is wrong.
func envError(name, value, problem string) error {
	return fmt.Errorf("%s=%q: %s", name, value, problem)
}

// envInt reads an integer variable that must be at least minimum; def when unset.
func envInt(env func(string) string, name string, def, minimum int) (int, error) {
	v := env(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < minimum {
		want := "a non-negative integer"
		if minimum > 0 {
			want = "a positive integer"
		}
		return def, envError(name, v, "must be "+want)
	}
	return n, nil
}

// envMillis reads a duration in milliseconds, the unit of every OTEL_* duration; def when unset.
func envMillis(env func(string) string, name string, def time.Duration) (time.Duration, error) {
	v := env(name)
	if v == "" {
		return def, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		return def, envError(name, v, "must be a positive integer number of milliseconds")
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// exporterList splits an OTEL_*_EXPORTER value: comma-separated, case-insensitive, repeats
// ignored.
func exporterList(v string) []string {
	var names []string
	for n := range strings.SplitSeq(v, ",") {
		n = strings.ToLower(strings.TrimSpace(n))
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// unsupportedExporter explains the exporter names of the specification that this SDK lacks.
func unsupportedExporter(name string) (string, bool) {
	switch name {
	case "zipkin", "jaeger":
		return name + " is not supported", true
	case "logging":
		return "logging is not supported (the specification deprecated it for console)", true
	}
	return "", false
}

// tracesExporterFromEnv implements OTEL_TRACES_EXPORTER: otlp (the default), console (JSON
// lines on stdout) or none. Spans go through one bounded queue, so one exporter at most.
func tracesExporterFromEnv(v string) (string, error) {
	const want = "use otlp, console or none"
	names := exporterList(v)
	for _, n := range names {
		switch n {
		case exporterOTLP, exporterConsole, exporterNone:
		default:
			if why, ok := unsupportedExporter(n); ok {
				return "", envError(envTracesExporter, v, why+"; "+want)
			}
			return "", envError(envTracesExporter, v, "must be otlp, console or none")
		}
	}
	switch len(names) {
	case 0:
		return exporterOTLP, nil
	case 1:
		return names[0], nil
	}
	return "", envError(envTracesExporter, v, "only one exporter is supported; "+want)
}

// metricsExporterFromEnv implements OTEL_METRICS_EXPORTER and returns the push exporter: otlp
// (the default), console or none. The Prometheus exporter serves the manager's /metrics
// whatever this says (WithPrometheusRegisterer turns it off), because an explicit "otlp", the
// specification's default, must not take the operator's watchtower_* series off /metrics;
// "prometheus" is accepted and means that exporter, so "prometheus" alone means no push.
func metricsExporterFromEnv(v string) (string, error) {
	const want = "use otlp, console, prometheus or none"
	names := exporterList(v)
	var push []string
	for _, n := range names {
		switch n {
		case exporterOTLP, exporterConsole:
			push = append(push, n)
		case exporterPrometheus:
		case exporterNone:
			if len(names) > 1 {
				return "", envError(envMetricsExporter, v, "none cannot be combined with another exporter")
			}
		default:
			if why, ok := unsupportedExporter(n); ok {
				return "", envError(envMetricsExporter, v, why+"; "+want)
			}
			return "", envError(envMetricsExporter, v, "must be otlp, console, prometheus or none")
		}
	}
	switch {
	case len(names) == 0:
		return exporterOTLP, nil
	case len(push) == 0:
		return exporterNone, nil
	case len(push) == 1:
		return push[0], nil
	}
	return "", envError(envMetricsExporter, v, "only one of otlp and console is supported (prometheus may be listed beside it)")
}

// Propagator names of the specification.
const (
	propagatorTraceContext = "tracecontext"
	propagatorBaggage      = "baggage"
	propagatorNone         = "none"
)

// propagatorsFromEnv implements OTEL_PROPAGATORS: tracecontext and baggage (the default, both)
// in the order given, or none. Other names of the specification (b3, b3multi, jaeger, xray,
// ottrace) need propagators this module does not depend on; as the specification asks, they
// are ignored with a warning instead of failing the operator. The W3C traceparent is what the
// Kubernetes API server reads, so dropping it is the user's explicit choice, never a fallback.
func propagatorsFromEnv(v string) ([]propagation.TextMapPropagator, *warning) {
	if v == "" {
		return []propagation.TextMapPropagator{propagation.TraceContext{}, propagation.Baggage{}}, nil
	}
	var (
		props       []propagation.TextMapPropagator
		used        []string
		unsupported []string
	)
	for n := range strings.SplitSeq(v, ",") {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" || slices.Contains(used, n) {
			continue
		}
		switch n {
		case propagatorTraceContext:
			props = append(props, propagation.TraceContext{})
		case propagatorBaggage:
			props = append(props, propagation.Baggage{})
		case propagatorNone:
			continue
		default:
			unsupported = append(unsupported, n)
			continue
		}
		used = append(used, n)
	}
	if len(unsupported) == 0 {
		return props, nil
	}
	propagating := strings.Join(used, ",")
	if propagating == "" {
		propagating = "nothing"
	}
	return props, &warning{
		msg: "unsupported propagators in " + envPropagators + " are ignored",
		kvs: []any{"variable", envPropagators, "value", v, "unsupported", strings.Join(unsupported, ","),
			"supported", "tracecontext,baggage,none", "propagating", propagating},
	}
}

// otlpFromEnv resolves and validates one signal's OTLP variables: the per-signal variable if
// set, else the general one, as the exporters read them. Only variables that take effect are
// validated.
func otlpFromEnv(env func(string) string, signal string) (otlpSettings, error) {
	var errs []error
	fail := func(err error) { errs = append(errs, err) }
	perSignal := func(suffix string) string { return envOTLPPrefix + signal + "_" + suffix }
	// lookup returns the per-signal variable if set, else the general one, with its name.
	lookup := func(suffix string) (name, value string) {
		name = perSignal(suffix)
		if v := env(name); v != "" {
			return name, v
		}
		name = envOTLPPrefix + suffix
		return name, env(name)
	}

	var o otlpSettings
	o.protocol, o.protocolFrom = defaultProtocol, "default"
	if name, v := lookup("PROTOCOL"); v != "" {
		if err := checkProtocol(v); err != nil {
			fail(envError(name, v, err.Error()))
		} else {
			o.protocol, o.protocolFrom = v, name
		}
	}
	if name, v := lookup("ENDPOINT"); v != "" {
		if err := checkEndpoint(v); err != nil {
			fail(envError(name, v, err.Error()))
		}
		o.effectiveEndpoint, o.endpointFrom = v, name
	} else {
		// The specification's defaults; the Go exporters' own would use TLS on localhost.
		o.defaultEndpoint = "http://localhost:" + portHTTP
		if o.protocol == protocolGRPC {
			o.defaultEndpoint = "http://localhost:" + portGRPC
		}
		o.effectiveEndpoint, o.endpointFrom = o.defaultEndpoint, "default"
	}
	if name, v := lookup("HEADERS"); v != "" {
		if _, err := parseHeaders(v); err != nil {
			// The value is not echoed: headers usually carry credentials.
			fail(fmt.Errorf("%s: %w", name, err))
		}
	}
	if name, v := lookup("TIMEOUT"); v != "" {
		if _, err := envMillis(env, name, 0); err != nil {
			fail(err)
		}
	}
	if name, v := lookup("COMPRESSION"); v != "" && v != "gzip" && v != "none" {
		// The exporters compare case-sensitively and treat anything but gzip as none.
		fail(envError(name, v, "must be gzip or none"))
	}
	// The endpoint's scheme says whether to use TLS. The specification gives INSECURE a say
	// only for an endpoint without a scheme, which Start does not accept; the Go exporters let
	// it override the scheme instead, so a value that disagrees is a mistake either way.
	plaintext := strings.HasPrefix(o.effectiveEndpoint, "http:")
	if name, v := lookup("INSECURE"); v != "" {
		switch {
		case !strings.EqualFold(v, "true") && !strings.EqualFold(v, "false"):
			// The exporters take anything but true as false, i.e. TLS.
			fail(envError(name, v, "must be true or false"))
		case strings.EqualFold(v, "true") != plaintext:
			fail(envError(name, v, fmt.Sprintf("contradicts the endpoint %s (%s), whose scheme says whether to use TLS: "+
				"use http:// for none, https:// for TLS", redactURL(o.effectiveEndpoint), o.endpointFrom)))
		}
	}
	var tlsVars []string // the TLS file variables in effect, which need an https endpoint
	if name, v := lookup("CERTIFICATE"); v != "" {
		tlsVars = append(tlsVars, name)
		if err := checkCertificate(v); err != nil {
			fail(envError(name, v, err.Error()))
		}
	}
	certVar, keyVar := perSignal("CLIENT_CERTIFICATE"), perSignal("CLIENT_KEY")
	if err := checkClientCertificate(env, certVar, keyVar); err != nil {
		fail(err)
	}
	if env(certVar) == "" || env(keyVar) == "" {
		// The exporters read the general pair first and let a complete per-signal pair replace it.
		certVar, keyVar = envOTLPPrefix+"CLIENT_CERTIFICATE", envOTLPPrefix+"CLIENT_KEY"
		if err := checkClientCertificate(env, certVar, keyVar); err != nil {
			fail(err)
		}
	}
	if env(certVar) != "" && env(keyVar) != "" {
		tlsVars = append(tlsVars, certVar, keyVar)
	}
	if plaintext && len(tlsVars) > 0 {
		// The HTTP exporters refuse to start then, the gRPC ones send in plaintext.
		fail(fmt.Errorf("%s: set, but the endpoint %s (%s) has no TLS: use https://", strings.Join(tlsVars, ", "),
			redactURL(o.effectiveEndpoint), o.endpointFrom))
	}
	if signal == "METRICS" {
		name := perSignal("TEMPORALITY_PREFERENCE")
		if v := env(name); v != "" && !slices.Contains([]string{"cumulative", "delta", "lowmemory"}, strings.ToLower(v)) {
			fail(envError(name, v, "must be cumulative, delta or lowmemory"))
		}
		name = perSignal("DEFAULT_HISTOGRAM_AGGREGATION")
		if v := env(name); v != "" && !slices.Contains([]string{"explicit_bucket_histogram", "base2_exponential_bucket_histogram"}, strings.ToLower(v)) {
			fail(envError(name, v, "must be explicit_bucket_histogram or base2_exponential_bucket_histogram"))
		}
	}
	return o, errors.Join(errs...)
}

func checkProtocol(p string) error {
	switch p {
	case protocolGRPC, protocolHTTPProtobuf:
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

// checkCertificate checks what the exporters would otherwise only log before falling back to
// the system's CAs: that the file is readable and holds a PEM certificate.
func checkCertificate(path string) error {
	b, err := readPEMFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return errors.New("holds no PEM certificate")
	}
	return nil
}

// checkClientCertificate checks one pair of client certificate and key variables. The
// exporters use a pair only when both are set, and silently send no client certificate when
// one is missing or they do not match.
func checkClientCertificate(env func(string) string, certVar, keyVar string) error {
	cert, key := env(certVar), env(keyVar)
	switch {
	case cert == "" && key == "":
		return nil
	case key == "":
		return envError(certVar, cert, keyVar+" must be set too")
	case cert == "":
		return envError(keyVar, key, certVar+" must be set too")
	}
	certPEM, err := readPEMFile(cert)
	if err != nil {
		return envError(certVar, cert, err.Error())
	}
	keyPEM, err := readPEMFile(key)
	if err != nil {
		return envError(keyVar, key, err.Error())
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("%s=%q and %s=%q: not a certificate and its private key: %w", certVar, cert, keyVar, key, err)
	}
	return nil
}

// maxPEMFile bounds what is read of a certificate or key file: a chain of a few certificates is
// a few KiB.
const maxPEMFile = 1 << 20

// readPEMFile reads a certificate or key file named by a variable. Only a regular file (or a
// symlink to one, as a mounted Secret is), and at most maxPEMFile of it: a variable pointing at
// /dev/stdin, a FIFO or /dev/zero must not block or exhaust the operator at start.
func readPEMFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It changes
	// nothing for a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, errors.New("cannot be read: " + pathError(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, errors.New("cannot be read: " + pathError(err))
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("is not a regular file")
	}
	if st.Size() > maxPEMFile {
		return nil, fmt.Errorf("is %d bytes, more than a certificate file can be (%d)", st.Size(), maxPEMFile)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, errors.New("cannot be read: " + pathError(err))
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("is more than a certificate file can be (%d bytes)", maxPEMFile)
	}
	return b, nil
}

// pathError is what went wrong with a file, without the path that the message already names.
func pathError(err error) string {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err.Error()
	}
	return err.Error()
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

// checkExemplarFilter validates OTEL_METRICS_EXEMPLAR_FILTER, which the meter provider reads
// itself and ignores when it does not know the value.
func checkExemplarFilter(v string) error {
	switch strings.ToLower(v) {
	case "", "always_on", "always_off", "trace_based":
		return nil
	}
	return envError(envExemplarFilter, v, "must be always_on, always_off or trace_based")
}

// executableName is the default service.name, as the specification defines it:
// "unknown_service:" and the executable's name, e.g. "unknown_service:manager" in a kubebuilder
// image. Set OTEL_SERVICE_NAME to name the operator.
func executableName() string {
	if p, err := os.Executable(); err == nil {
		return "unknown_service:" + filepath.Base(p)
	}
	if len(os.Args) > 0 && os.Args[0] != "" {
		return "unknown_service:" + filepath.Base(os.Args[0])
	}
	return "unknown_service"
}
