package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Prometheus is a real Prometheus server with a query client.
type Prometheus struct {
	// URL is the server's base URL, e.g. "http://127.0.0.1:9090".
	URL  string
	proc *Process
}

type promConfig struct {
	port         int
	interval     time.Duration
	targets      []promTarget
	ruleFiles    []string
	alertmanager string
	net          Network
}

type promTarget struct{ job, hostport, path string }

// PrometheusOption configures StartPrometheus.
type PrometheusOption func(*promConfig)

// WithScrapeTarget adds a scrape job for hostport (e.g. "127.0.0.1:8080") at path.
func WithScrapeTarget(job, hostport, path string) PrometheusOption {
	return func(c *promConfig) { c.targets = append(c.targets, promTarget{job, hostport, path}) }
}

// WithPrometheusPort makes Prometheus listen on 127.0.0.1:port instead of a free port.
func WithPrometheusPort(port int) PrometheusOption {
	return func(c *promConfig) { c.port = port }
}

// WithScrapeInterval sets the global scrape and rule evaluation interval (default 1s).
func WithScrapeInterval(d time.Duration) PrometheusOption {
	return func(c *promConfig) { c.interval = d }
}

// WithRuleFiles loads alerting and recording rule files.
func WithRuleFiles(paths ...string) PrometheusOption {
	return func(c *promConfig) { c.ruleFiles = append(c.ruleFiles, paths...) }
}

// WithAlertmanager sends alerts to the Alertmanager at hostport.
func WithAlertmanager(hostport string) PrometheusOption {
	return func(c *promConfig) { c.alertmanager = hostport }
}

// WithPrometheusNetwork runs Prometheus in n (e.g. a Cluster's node network, where it reaches
// pods).
func WithPrometheusNetwork(n Network) PrometheusOption {
	return func(c *promConfig) { c.net = n }
}

// StartPrometheus writes a configuration from opts, starts Prometheus and waits for /-/ready.
func StartPrometheus(t TB, opts ...PrometheusOption) *Prometheus {
	t.Helper()
	cfg := promConfig{interval: time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	tools := MustTools(t)
	bin := tools.Path(t, "prometheus", "PROMETHEUS_VERSION", "prometheus")
	dir := t.TempDir()

	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", cfg.interval, cfg.interval)
	if len(cfg.ruleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range cfg.ruleFiles {
			fmt.Fprintf(&b, "  - %q\n", f)
		}
	}
	if cfg.alertmanager != "" {
		fmt.Fprintf(&b, "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [%q]\n", cfg.alertmanager)
	}
	b.WriteString("scrape_configs:\n")
	for _, tg := range cfg.targets {
		fmt.Fprintf(&b, "  - job_name: %q\n    metrics_path: %q\n    static_configs:\n      - targets: [%q]\n", tg.job, tg.path, tg.hostport)
	}
	if len(cfg.targets) == 0 {
		b.WriteString("  []\n")
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	port := cfg.port
	if port == 0 {
		port = FreePort(t)
	}
	addr := cfg.net.Addr(port)
	p := &Prometheus{URL: "http://" + addr}
	p.proc = StartProcess(t, ProcessSpec{
		Name: "prometheus",
		Path: bin,
		Args: []string{
			"--config.file=" + cfgPath,
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr,
			"--web.enable-lifecycle",
			"--log.level=info",
			// Exemplars (trace IDs next to histogram buckets) are kept only with this feature.
			"--enable-feature=exemplar-storage",
		},
		Dir:   dir,
		NetNS: cfg.net.NetNS,
	})
	p.proc.MustWaitReady(t, 60*time.Second, HTTPStatusOK(p.URL+"/-/ready"))
	return p
}

// Process is the server's process.
func (p *Prometheus) Process() *Process { return p.proc }

// Sample is one element of an instant-vector result.
type Sample struct {
	Metric map[string]string
	Value  float64
	Time   time.Time
}

// Query evaluates an instant PromQL query now and returns its vector (or scalar, as one
// sample without labels).
func (p *Prometheus) Query(ctx context.Context, promql string) ([]Sample, error) {
	u := p.URL + "/api/v1/query?" + url.Values{"query": {promql}}.Encode()
	var body struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if _, err := getJSON(ctx, u, &body); err != nil {
		return nil, fmt.Errorf("query %q: %w", promql, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s: %s", promql, body.ErrorType, body.Error)
	}
	switch body.Data.ResultType {
	case "vector":
		var raw []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(body.Data.Result, &raw); err != nil {
			return nil, err
		}
		out := make([]Sample, 0, len(raw))
		for _, r := range raw {
			s, err := parsePoint(r.Value)
			if err != nil {
				return nil, fmt.Errorf("query %q: %w", promql, err)
			}
			s.Metric = r.Metric
			out = append(out, s)
		}
		return out, nil
	case "scalar":
		var raw [2]any
		if err := json.Unmarshal(body.Data.Result, &raw); err != nil {
			return nil, err
		}
		s, err := parsePoint(raw)
		return []Sample{s}, err
	default:
		return nil, fmt.Errorf("query %q: result type %q is not an instant vector or scalar", promql, body.Data.ResultType)
	}
}

// WaitForQuery polls promql every 500ms until accept returns true for its result, and returns
// that result; on timeout the error carries the last result.
func (p *Prometheus) WaitForQuery(ctx context.Context, promql string, accept func([]Sample) bool) ([]Sample, error) {
	var last []Sample
	var lastErr error
	for {
		last, lastErr = p.Query(ctx, promql)
		if lastErr == nil && accept(last) {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("query %q: no acceptable result before %v (last result %v, last error %v)", promql, ctx.Err(), last, lastErr)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func parsePoint(v [2]any) (Sample, error) {
	ts, ok := v[0].(float64)
	if !ok {
		return Sample{}, fmt.Errorf("bad sample timestamp %v", v[0])
	}
	str, ok := v[1].(string)
	if !ok {
		return Sample{}, fmt.Errorf("bad sample value %v", v[1])
	}
	f, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return Sample{}, err
	}
	sec := int64(ts)
	return Sample{Value: f, Time: time.Unix(sec, int64((ts-float64(sec))*1e9))}, nil
}

// Exemplar is one exemplar of a series, as /api/v1/query_exemplars returns it.
type Exemplar struct {
	Series map[string]string // the series' labels
	Labels map[string]string // the exemplar's own, e.g. trace_id and span_id
	Value  float64
	Time   time.Time
}

// QueryExemplars returns the exemplars of the series promql selects, between start and end.
func (p *Prometheus) QueryExemplars(ctx context.Context, promql string, start, end time.Time) ([]Exemplar, error) {
	u := p.URL + "/api/v1/query_exemplars?" + url.Values{
		"query": {promql},
		"start": {strconv.FormatFloat(float64(start.UnixNano())/1e9, 'f', 3, 64)},
		"end":   {strconv.FormatFloat(float64(end.UnixNano())/1e9, 'f', 3, 64)},
	}.Encode()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   []struct {
			SeriesLabels map[string]string `json:"seriesLabels"`
			Exemplars    []struct {
				Labels    map[string]string `json:"labels"`
				Value     string            `json:"value"`
				Timestamp float64           `json:"timestamp"`
			} `json:"exemplars"`
		} `json:"data"`
	}
	if _, err := getJSON(ctx, u, &body); err != nil {
		return nil, fmt.Errorf("query_exemplars %q: %w", promql, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query_exemplars %q: %s", promql, body.Error)
	}
	var out []Exemplar
	for _, d := range body.Data {
		for _, e := range d.Exemplars {
			v, _ := strconv.ParseFloat(e.Value, 64)
			sec := int64(e.Timestamp)
			out = append(out, Exemplar{Series: d.SeriesLabels, Labels: e.Labels, Value: v,
				Time: time.Unix(sec, int64((e.Timestamp-float64(sec))*1e9))})
		}
	}
	return out, nil
}
