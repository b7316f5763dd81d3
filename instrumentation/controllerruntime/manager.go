package otelctrl

import (
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// NewManager is ctrl.NewManager with the instrumentation wired in, so that an operator's
// main.go changes in one place:
//
//   - cfg (and options.LeaderElectionConfig) get the tracing transport of WrapConfig;
//   - the manager's client is built by NewClient (or, if options.NewClient is set, that client
//     wrapped by WrapClient, with the cache reader still marked);
//   - GetEventRecorderFor and GetEventRecorder return recorders wrapped by
//     WrapLegacyEventRecorder and WrapEventRecorder.
//
// Everything else about the manager is unchanged.
func NewManager(cfg *rest.Config, options manager.Options, opts ...Option) (manager.Manager, error) {
	cfg = WrapConfig(cfg, opts...)
	if options.LeaderElectionConfig != nil {
		options.LeaderElectionConfig = WrapConfig(options.LeaderElectionConfig, opts...)
	}
	if userNewClient := options.NewClient; userNewClient != nil {
		options.NewClient = func(cfg *rest.Config, o client.Options) (client.Client, error) {
			if o.Cache != nil && o.Cache.Reader != nil {
				cacheOpts := *o.Cache
				cacheOpts.Reader = &cacheMarker{Reader: o.Cache.Reader}
				o.Cache = &cacheOpts
			}
			c, err := userNewClient(cfg, o)
			if err != nil {
				return nil, err
			}
			if ww, ok := c.(client.WithWatch); ok {
				return wrapClient(ww, o.Cache != nil && o.Cache.Reader != nil, opts), nil
			}
			return c, nil
		}
	} else {
		options.NewClient = NewClient(opts...)
	}
	mgr, err := manager.New(cfg, options)
	if err != nil {
		return nil, err
	}
	return &instrumentedManager{Manager: mgr, opts: opts}, nil
}

type instrumentedManager struct {
	manager.Manager
	opts []Option
}

func (m *instrumentedManager) GetEventRecorderFor(name string) record.EventRecorder {
	return WrapLegacyEventRecorder(m.Manager.GetEventRecorderFor(name), m.opts...) //lint:ignore SA1019 operators still use the core/v1 recorder; it must be instrumented too
}

func (m *instrumentedManager) GetEventRecorder(name string) recorder.EventRecorder {
	return WrapEventRecorder(m.Manager.GetEventRecorder(name), m.opts...)
}
