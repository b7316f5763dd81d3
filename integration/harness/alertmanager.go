package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Alertmanager is a real Alertmanager whose only receiver is a webhook.
type Alertmanager struct {
	// URL is the base URL, e.g. "http://127.0.0.1:9093"; Addr is its "127.0.0.1:port".
	URL, Addr string
	proc      *Process
}

// StartAlertmanager starts Alertmanager routing every alert to webhookURL (see NewWebhookSink)
// with short group waits, clustering off, and waits for /-/ready.
func StartAlertmanager(t TB, webhookURL string) *Alertmanager {
	t.Helper()
	return StartAlertmanagerWithConfig(t, []byte(fmt.Sprintf(`route:
  receiver: webhook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: %q
        send_resolved: true
`, webhookURL)))
}

// AlertmanagerOption configures StartAlertmanagerWithConfig.
type AlertmanagerOption func(*alertmanagerConfig)

type alertmanagerConfig struct{ net Network }

// WithAlertmanagerNetwork runs Alertmanager in n (e.g. a Cluster's node network).
func WithAlertmanagerNetwork(n Network) AlertmanagerOption {
	return func(c *alertmanagerConfig) { c.net = n }
}

// StartAlertmanagerWithConfig starts Alertmanager with the configuration cfg (alertmanager.yml),
// clustering off, and waits for /-/ready: Alertmanager refuses to start on a configuration it
// cannot load.
func StartAlertmanagerWithConfig(t TB, cfg []byte, opts ...AlertmanagerOption) *Alertmanager {
	t.Helper()
	var ac alertmanagerConfig
	for _, o := range opts {
		o(&ac)
	}
	tools := MustTools(t)
	bin := tools.Path(t, "alertmanager", "ALERTMANAGER_VERSION", "alertmanager")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := ac.net.Addr(FreePort(t))
	am := &Alertmanager{URL: "http://" + addr, Addr: addr}
	am.proc = StartProcess(t, ProcessSpec{
		Name: "alertmanager",
		Path: bin,
		Args: []string{
			"--config.file=" + cfgPath,
			"--storage.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr,
			"--cluster.listen-address=", // no gossip: a single test instance
		},
		Dir:   dir,
		NetNS: ac.net.NetNS,
	})
	am.proc.MustWaitReady(t, 30*time.Second, HTTPStatusOK(am.URL+"/-/ready"))
	return am
}

// Process is the server's process.
func (a *Alertmanager) Process() *Process { return a.proc }

// PostAlert sends one firing alert through the v2 API, as Prometheus does.
func (a *Alertmanager) PostAlert(ctx context.Context, labels, annotations map[string]string) error {
	body, _ := json.Marshal([]map[string]any{{
		"labels":      labels,
		"annotations": annotations,
		"startsAt":    time.Now().UTC().Format(time.RFC3339),
	}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL+"/api/v2/alerts", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST /api/v2/alerts: %s: %s", resp.Status, b)
	}
	return nil
}

// AlertReceivers returns the receivers Alertmanager routed the alerts named alertname to (its
// v2 API's receivers of each alert), sorted and without duplicates.
func (a *Alertmanager) AlertReceivers(ctx context.Context, alertname string) ([]string, error) {
	u := a.URL + "/api/v2/alerts?" + url.Values{"filter": {fmt.Sprintf("alertname=%q", alertname)}}.Encode()
	var alerts []struct {
		Receivers []struct {
			Name string `json:"name"`
		} `json:"receivers"`
	}
	if resp, err := getJSON(ctx, u, &alerts); err != nil {
		return nil, err
	} else if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v2/alerts: %s", resp.Status)
	}
	seen := map[string]bool{}
	var names []string
	for _, al := range alerts {
		for _, r := range al.Receivers {
			if !seen[r.Name] {
				seen[r.Name] = true
				names = append(names, r.Name)
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

// WebhookMessage is Alertmanager's webhook payload (version 4).
type WebhookMessage struct {
	Version      string            `json:"version"`
	Status       string            `json:"status"`
	Receiver     string            `json:"receiver"`
	GroupLabels  map[string]string `json:"groupLabels"`
	CommonLabels map[string]string `json:"commonLabels"`
	Alerts       []WebhookAlert    `json:"alerts"`
}

// WebhookAlert is one alert of a WebhookMessage.
type WebhookAlert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
}

// WebhookSink is an HTTP endpoint that records every Alertmanager webhook it receives — the
// stand-in for Slack, Teams or a pager in tests.
type WebhookSink struct {
	URL string
	srv *httptest.Server

	mu       sync.Mutex
	messages []WebhookMessage
	changed  chan struct{}
}

// NewWebhookSink starts a sink on a loopback port, closed when the test ends.
func NewWebhookSink(t TB) *WebhookSink {
	t.Helper()
	return NewWebhookSinkOn(t, "127.0.0.1")
}

// NewWebhookSinkOn starts a sink listening on ip (e.g. a Cluster's HostIP, which its node's
// network reaches), closed when the test ends.
func NewWebhookSinkOn(t TB, ip string) *WebhookSink {
	t.Helper()
	s := &WebhookSink{changed: make(chan struct{})}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m WebhookMessage
		if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.messages = append(s.messages, m)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}))
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("harness: webhook sink: %v", err)
	}
	s.srv.Listener.Close() // the default one, on 127.0.0.1
	s.srv.Listener = l
	s.srv.Start()
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// Messages returns a copy of what the sink received so far.
func (s *WebhookSink) Messages() []WebhookMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]WebhookMessage(nil), s.messages...)
}

// WaitFor blocks until match accepts one received alert, and returns it.
func (s *WebhookSink) WaitFor(ctx context.Context, match func(WebhookMessage, WebhookAlert) bool) (WebhookAlert, error) {
	for {
		s.mu.Lock()
		msgs, changed := s.messages, s.changed
		s.mu.Unlock()
		for _, m := range msgs {
			for _, a := range m.Alerts {
				if match(m, a) {
					return a, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return WebhookAlert{}, fmt.Errorf("no matching alert arrived at the webhook (%d messages received): %w", len(msgs), ctx.Err())
		case <-changed:
		}
	}
}
