package sdk

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel"
)

// registrationGuard marks a Prometheus registerer as serving a live Telemetry.
//
// The OpenTelemetry Prometheus exporter registers an "unchecked" collector (it describes
// nothing), which a registry accepts any number of times and can never unregister; two live
// exporters on one registry then make every scrape fail with duplicate series. The guard
// describes one fixed descriptor, so a second registration fails with AlreadyRegisteredError
// that Start turns into a clear error, and Shutdown unregisters it so that a later Start may
// use the registry again. It never collects anything, so scrapes and pedantic registries are
// unaffected. (The exporter's own collector stays registered after Shutdown but collects
// nothing once its reader is shut down.)
type registrationGuard struct{ desc *prometheus.Desc }

func newRegistrationGuard() registrationGuard {
	return registrationGuard{desc: prometheus.NewDesc(
		"watchtower_sdk_registration",
		"Marks a registry as serving a live github.com/gowatchtower/watchtower/sdk.Telemetry; never collected.",
		nil, nil)}
}

func (g registrationGuard) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }
func (registrationGuard) Collect(chan<- prometheus.Metric)      {}

func registerGuard(reg prometheus.Registerer) (registrationGuard, error) {
	g := newRegistrationGuard()
	if err := reg.Register(g); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			return g, errors.New("sdk: the Prometheus registerer already serves the metrics of another live Telemetry " +
				"(Start called twice without Shutdown?); shut the first one down, or pass " +
				"WithPrometheusRegisterer(prometheus.NewRegistry()) in tests")
		}
		return g, fmt.Errorf("sdk: registering on the Prometheus registerer: %w", err)
	}
	return g, nil
}

// Names of the metadata families an OpenTelemetry Prometheus exporter emits.
const (
	promTargetInfo    = "target_info"
	promScopeInfo     = "otel_scope_info" // older exporters
	promScopeNameAttr = "otel_scope_name"
)

// bridgeGatherer is what the Prometheus→OTLP bridge reads. It hides the families that an
// OpenTelemetry Prometheus exporter produced: our own exporter is registered on the same
// registry (controller-runtime's), so without this every OpenTelemetry metric would reach the
// collector twice, once natively and once round-tripped through Prometheus.
//
// A family is recognised by what the exporter stamps on it, not by its name: every series it
// writes carries the otel_scope_name label, and the resource becomes target_info. That covers
// metrics of any meter, not only watchtower_*; controller-runtime's metrics never carry it.
type bridgeGatherer struct{ g prometheus.Gatherer }

func (b bridgeGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := b.g.Gather()
	if err != nil {
		// A registry returns what it could gather along with the error. The bridge would drop
		// everything on error, so report it and bridge the rest.
		otel.Handle(fmt.Errorf("sdk: gathering Prometheus metrics for the OTLP bridge: %w", err))
	}
	out := mfs[:0]
	for _, mf := range mfs {
		if !fromOTelExporter(mf) {
			out = append(out, mf)
		}
	}
	return out, nil
}

func fromOTelExporter(mf *dto.MetricFamily) bool {
	if name := mf.GetName(); name == promTargetInfo || name == promScopeInfo {
		return true
	}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == promScopeNameAttr {
				return true
			}
		}
	}
	return false
}
