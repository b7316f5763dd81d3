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

// teeRegisterer registers the OpenTelemetry Prometheus exporter's collector on the user's
// registerer, which serves it, and on a private registry, which tells the bridge what it
// serves. The collector describes nothing ("unchecked"), so both registries accept it.
type teeRegisterer struct {
	prometheus.Registerer
	own *prometheus.Registry
}

func (t teeRegisterer) Register(c prometheus.Collector) error {
	if err := t.Registerer.Register(c); err != nil {
		return err
	}
	if err := t.own.Register(c); err != nil {
		t.Registerer.Unregister(c)
		return err
	}
	return nil
}

func (t teeRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err)
		}
	}
}

func (t teeRegisterer) Unregister(c prometheus.Collector) bool {
	t.own.Unregister(c)
	return t.Registerer.Unregister(c)
}

// Names of the metadata families an OpenTelemetry Prometheus exporter emits.
const (
	promTargetInfo = "target_info"
	promScopeInfo  = "otel_scope_info" // older exporters
)

// bridgeGatherer is what the Prometheus→OTLP bridge reads. It hides the families that our
// own Prometheus exporter serves: it is registered on the same registry (controller-runtime's),
// so without this every OpenTelemetry metric would reach the collector twice, once natively
// and once round-tripped through Prometheus.
//
// A family is recognised by its name: own gathers the exporter alone, so its names are
// exactly ours, whatever meter created them and whether or not the series carry the
// otel_scope_* labels (by default they do not, and then nothing else tells them apart from
// controller-runtime's). own is gathered after g: an instrument created in between is then
// still recognised, as instruments are never removed.
type bridgeGatherer struct {
	g   prometheus.Gatherer
	own prometheus.Gatherer // nil: no exporter of ours on g
}

func (b bridgeGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := b.g.Gather()
	if err != nil {
		// A registry returns what it could gather along with the error. The bridge would drop
		// everything on error, so report it and bridge the rest.
		otel.Handle(fmt.Errorf("sdk: gathering Prometheus metrics for the OTLP bridge: %w", err))
	}
	ours := map[string]bool{promTargetInfo: true, promScopeInfo: true}
	if b.own != nil {
		// A family that failed to gather is still returned with the others.
		own, _ := b.own.Gather()
		for _, mf := range own {
			ours[mf.GetName()] = true
		}
	}
	out := mfs[:0]
	for _, mf := range mfs {
		if !ours[mf.GetName()] {
			out = append(out, mf)
		}
	}
	return out, nil
}
