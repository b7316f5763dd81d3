package otelctrl

import (
	"fmt"
	"net/http"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// NewManager is ctrl.NewManager with the instrumentation wired in, so that an operator's
// main.go changes in one place:
//
//   - cfg, options.LeaderElectionConfig and the HTTP clients in options.Client and
//     options.Cache get the tracing transport of
//     WrapConfig: a CLIENT span per request, and traceparent for the API server;
//   - the manager's client (options.NewClient's, or controller-runtime's default) gets a span
//     and a measurement per logical call, with reads marked as served from the cache or by the
//     API server; GetAPIReader's reader gets the same;
//   - GetEventRecorder and GetEventRecorderFor return recorders whose Events land on the span
//     of the reconcile of the object they are about (see EventRecorderFor for exact
//     attribution);
//   - GetWebhookServer's handlers get SERVER spans that continue the API server's trace.
//
// Everything else about the manager is unchanged.
func NewManager(cfg *rest.Config, options manager.Options, opts ...Option) (manager.Manager, error) {
	c := newConfig(opts)
	cfg = wrapConfig(cfg, c)
	if options.LeaderElectionConfig != nil {
		options.LeaderElectionConfig = wrapConfig(options.LeaderElectionConfig, c)
	}
	// An HTTP client the user built does not go through cfg's transport wrapper.
	options.Client.HTTPClient = wrapHTTPClient(options.Client.HTTPClient, c)
	options.Cache.HTTPClient = wrapHTTPClient(options.Cache.HTTPClient, c)
	options.NewClient = newClient(options.NewClient, opts)
	mgr, err := manager.New(cfg, options)
	if err != nil {
		return nil, err
	}
	im := &instrumentedManager{
		Manager:   mgr,
		opts:      opts,
		active:    newActiveSet(),
		loops:     &loopRegistry{},
		apiReader: &tracedReader{Reader: mgr.GetAPIReader(), t: newCallTracer(mgr.GetScheme(), false, opts)},
	}
	// The hot-looping and stuck objects, by name, next to the metrics that count them. With the
	// metrics server off (BindAddress "0") the handler is simply not served.
	if err := mgr.AddMetricsServerExtraHandler(DebugPath, im.loops); err != nil {
		return nil, fmt.Errorf("otelctrl: serving %s on the metrics server: %w", DebugPath, err)
	}
	return im, nil
}

// wrapHTTPClient returns a copy of hc whose transport is the tracing transport; nil stays nil
// (controller-runtime then builds one from the wrapped config).
func wrapHTTPClient(hc *http.Client, c config) *http.Client {
	if hc == nil {
		return nil
	}
	if _, ok := hc.Transport.(*transport); ok {
		return hc
	}
	out := *hc
	next := out.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	out.Transport = newTransport(next, c)
	return &out
}

// DebugPath is where NewManager's metrics server lists, per controller, the objects reconciled
// most often within the hot-loop window and the longest-failing ones, as JSON.
const DebugPath = "/debug/watchtower"

type instrumentedManager struct {
	manager.Manager
	opts  []Option
	loops *loopRegistry
	// active is this manager's set of reconciles in flight, for its event recorders.
	active    *activeSet
	apiReader client.Reader
}

func (m *instrumentedManager) GetAPIReader() client.Reader { return m.apiReader }

func (m *instrumentedManager) eventTap() eventTap {
	return eventTap{in: instrumentsFor(newConfig(m.opts).meterProvider), active: m.active, scheme: m.GetScheme()}
}

func (m *instrumentedManager) GetEventRecorderFor(name string) record.EventRecorder {
	return &legacyEventRecorder{EventRecorder: m.Manager.GetEventRecorderFor(name), tap: m.eventTap()} //lint:ignore SA1019 operators still use the core/v1 recorder; it must be instrumented too
}

func (m *instrumentedManager) GetEventRecorder(name string) recorder.EventRecorder {
	return &eventRecorder{EventRecorder: m.Manager.GetEventRecorder(name), tap: m.eventTap()}
}
