package harness

import (
	"time"
)

// Console is a running watchtower-console (operator/cmd/console).
type Console struct {
	// URL is its base URL, e.g. "http://127.0.0.1:8090".
	URL  string
	proc *Process
}

// ConsoleConfig is what the console reads.
type ConsoleConfig struct {
	// Port to listen on, on 127.0.0.1; zero means a free port.
	Port int
	// JaegerURL and PrometheusURL are the backends' base URLs; empty leaves one unconfigured.
	JaegerURL, PrometheusURL string
	// Kubeconfig, when set, lets the console read and write Watchtower resources.
	Kubeconfig string
	// MetricsSelector is passed as -metrics-selector.
	MetricsSelector string
	// Binary is a console built earlier (BuildBinary(t, "./operator/cmd/console")); empty builds it.
	Binary string
}

// StartConsole starts the console and waits for it to serve.
func StartConsole(t TB, cfg ConsoleConfig) *Console {
	t.Helper()
	bin := cfg.Binary
	if bin == "" {
		bin = BuildBinary(t, "./operator/cmd/console")
	}
	port := cfg.Port
	if port == 0 {
		port = FreePort(t)
	}
	args := []string{"-listen", Loopback(port), "-jaeger-url", cfg.JaegerURL, "-prometheus-url", cfg.PrometheusURL, "-metrics-selector", cfg.MetricsSelector}
	env := []string{"KUBECONFIG=/dev/null/none"} // never a developer's cluster
	if cfg.Kubeconfig != "" {
		args = append(args, "-kubeconfig", cfg.Kubeconfig)
	}
	c := &Console{URL: "http://" + Loopback(port)}
	c.proc = StartProcess(t, ProcessSpec{Name: "watchtower-console", Path: bin, Args: args, Env: env})
	c.proc.MustWaitReady(t, 30*time.Second, HTTPStatusOK(c.URL+"/healthz"))
	return c
}

// Process is the console's process.
func (c *Console) Process() *Process { return c.proc }
