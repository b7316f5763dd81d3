// The alerting rules and the Alertmanager example in deploy/alerts, checked with the pinned
// promtool and amtool and run in a real Alertmanager. The rules firing in a live Prometheus on
// a live operator and collector is TestDashboardsAndAlertsLive (dashboards_test.go).
package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/integration/harness"
)

const (
	alertsDir      = "deploy/alerts"
	rulesFile      = "deploy/alerts/watchtower-rules.yaml"
	rulesTestFile  = "deploy/alerts/tests/watchtower-rules.test.yaml"
	amExampleFile  = "deploy/alerts/alertmanager.yaml"
	amTemplateFile = "deploy/alerts/watchtower.tmpl"
	// runbookBase is where every rule's runbook_url points: the published docs/alerts.md.
	runbookBase = "https://github.com/gowatchtower/watchtower/blob/main/docs/alerts.md"
)

func promtool(t *testing.T) string {
	return harness.MustTools(t).Path(t, "prometheus", "PROMETHEUS_VERSION", "promtool")
}

func amtool(t *testing.T) string {
	return harness.MustTools(t).Path(t, "alertmanager", "ALERTMANAGER_VERSION", "amtool")
}

// runTool runs a tool from the repository root and fails the test with its output on error.
func runTool(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = harness.MustTools(t).RepoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ruleFile is the part of a Prometheus rule file the tests look at.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.MustTools(t).RepoRoot, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// TestAlertRulesCheck: promtool accepts the rule file (syntax, PromQL, templates) with its
// linter on, and every rule has a severity, a summary, a description and a runbook that exists
// in docs/alerts.md.
func TestAlertRulesCheck(t *testing.T) {
	out := runTool(t, promtool(t), "check", "rules", "--lint=all", "--lint-fatal", rulesFile)
	t.Logf("promtool check rules: %s", strings.TrimSpace(out))

	doc, err := os.ReadFile(filepath.Join(harness.MustTools(t).RepoRoot, "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(doc), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	n := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			n++
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical (the Alertmanager example routes on it)", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			path, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "#")
			if path != runbookBase || !anchors[anchor] {
				t.Errorf("%s: runbook_url %q does not point at a heading of docs/alerts.md", r.Alert, r.Annotations["runbook_url"])
			}
		}
	}
	if n != 13 {
		t.Errorf("%s has %d rules, want the 13 documented in docs/alerts.md", rulesFile, n)
	}

	// The PrometheusRule manifest carries exactly the rule file's groups.
	var manifest struct {
		APIVersion string          `json:"apiVersion"`
		Kind       string          `json:"kind"`
		Spec       json.RawMessage `json:"spec"`
	}
	b, err := os.ReadFile(filepath.Join(harness.MustTools(t).RepoRoot, alertsDir, "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &manifest); err != nil {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	plain, err := os.ReadFile(filepath.Join(harness.MustTools(t).RepoRoot, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	want, err := yaml.YAMLToJSON(plain)
	if err != nil {
		t.Fatal(err)
	}
	if manifest.APIVersion != "monitoring.coreos.com/v1" || manifest.Kind != "PrometheusRule" || !jsonEqual(t, manifest.Spec, want) {
		t.Errorf("prometheusrule.yaml is not a PrometheusRule with the groups of %s: run `make generate`", rulesFile)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// githubAnchor is the anchor GitHub (and most Markdown renderers) give a heading.
func githubAnchor(heading string) string {
	h := strings.ToLower(strings.TrimSpace(heading))
	h = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(h, "")
	return strings.ReplaceAll(h, " ", "-")
}

// TestAlertRulesUnitTests runs the promtool unit tests, and checks that they test every rule
// both firing and not firing.
func TestAlertRulesUnitTests(t *testing.T) {
	out := runTool(t, promtool(t), "test", "rules", rulesTestFile)
	t.Logf("promtool test rules: %s", strings.TrimSpace(out))

	b, err := os.ReadFile(filepath.Join(harness.MustTools(t).RepoRoot, rulesTestFile))
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string            `json:"alertname"`
				ExpAlerts []json.RawMessage `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if !firing[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: the promtool tests must check it firing (%v) and not firing (%v)", r.Alert, firing[r.Alert], quiet[r.Alert])
			}
		}
	}
}

// amExampleConfig writes a copy of the Alertmanager example whose secret files and template
// paths point into dir and the repository, and whose group_wait is 1s instead of 30s; secrets
// maps a secret file name to its content.
func amExampleConfig(t *testing.T, dir string, secrets map[string]string) string {
	t.Helper()
	root := harness.MustTools(t).RepoRoot
	b, err := os.ReadFile(filepath.Join(root, amExampleFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	for name, content := range secrets {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(cfg, "/etc/alertmanager/secrets/"+name) {
			t.Fatalf("%s does not read the secret file %s", amExampleFile, name)
		}
		cfg = strings.ReplaceAll(cfg, "/etc/alertmanager/secrets/"+name, p)
	}
	tmpl := "/etc/alertmanager/templates/watchtower.tmpl"
	if !strings.Contains(cfg, tmpl) {
		t.Fatalf("%s does not load %s", amExampleFile, tmpl)
	}
	cfg = strings.ReplaceAll(cfg, tmpl, filepath.Join(root, amTemplateFile))
	cfg = strings.Replace(cfg, "group_wait: 30s", "group_wait: 1s", 1)
	p := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAlertmanagerExampleConfig: amtool accepts the example as committed and with its template
// file in place (which amtool then parses), and routes each severity where docs/alerts.md says.
func TestAlertmanagerExampleConfig(t *testing.T) {
	am := amtool(t)
	out := runTool(t, am, "check-config", amExampleFile)
	t.Logf("amtool check-config: %s", strings.TrimSpace(out))
	cfg := amExampleConfig(t, t.TempDir(), map[string]string{
		"slack-webhook-url":   "https://hooks.slack.com/services/T0/B0/x",
		"teams-webhook-url":   "https://example.invalid/workflows/teams",
		"whatsapp-bridge-url": "https://example.invalid/whatsapp",
	})
	runTool(t, am, "check-config", cfg)
	for labels, want := range map[string]string{
		"alertname=WatchtowerControllerStalled severity=critical":    "oncall",
		"alertname=WatchtowerKafkaExportFailing severity=critical":   "oncall",
		"alertname=WatchtowerReconcileErrorRatio severity=warning":   "platform-slack-and-teams",
		"alertname=WatchtowerCollectorDroppingData severity=warning": "platform-slack-and-teams",
		"alertname=SomethingElse":                                    "platform-slack",
	} {
		got := strings.TrimSpace(runTool(t, am, append([]string{"config", "routes", "test", "--config.file=" + amExampleFile}, strings.Fields(labels)...)...))
		if got != want {
			t.Errorf("amtool config routes test %s: %q, want %q", labels, got, want)
		}
	}
}

// captured is one notification a receiver endpoint got.
type captured struct {
	path string
	body map[string]any
	raw  string
}

// captureServer stands in for Slack, Teams and the WhatsApp bridge: it records every JSON
// body POSTed to it, by path.
type captureServer struct {
	*httptest.Server
	mu   sync.Mutex
	got  []captured
	more chan struct{}
}

func newCaptureServer(t *testing.T) *captureServer {
	s := &captureServer{more: make(chan struct{}, 1)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.got = append(s.got, captured{path: r.URL.Path, body: body, raw: string(b)})
		s.mu.Unlock()
		select {
		case s.more <- struct{}{}:
		default:
		}
		// Slack answers "ok"; the others ignore the body.
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s
}

// waitFor returns the first captured notification at path whose raw body contains every one of
// substrings.
func (s *captureServer) waitFor(ctx context.Context, t *testing.T, path string, substrings ...string) captured {
	t.Helper()
	for {
		s.mu.Lock()
		got := slices.Clone(s.got)
		s.mu.Unlock()
		for _, c := range got {
			if c.path == path && containsAll(c.raw, substrings) {
				return c
			}
		}
		select {
		case <-ctx.Done():
			var paths []string
			for _, c := range got {
				paths = append(paths, c.path)
			}
			t.Fatalf("no notification at %s containing %q (received at %v)", path, substrings, paths)
		case <-s.more:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *captureServer) paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.got {
		out = append(out, c.path)
	}
	return out
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestAlertmanagerExampleRoutesToSlackTeamsAndWebhook runs a real Alertmanager with the
// example configuration, its receivers' URLs pointing at a local capture server: a critical
// alert reaches Slack (#oncall), Teams and the generic webhook, each in its own format and
// rendered with watchtower.tmpl; a warning reaches Slack (#platform-alerts) and Teams only.
func TestAlertmanagerExampleRoutesToSlackTeamsAndWebhook(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	srv := newCaptureServer(t)
	dir := t.TempDir()
	cfg := amExampleConfig(t, dir, map[string]string{
		"slack-webhook-url":   srv.URL + "/slack",
		"teams-webhook-url":   srv.URL + "/teams",
		"whatsapp-bridge-url": srv.URL + "/whatsapp",
	})
	tools := harness.MustTools(t)
	addr := harness.Loopback(harness.FreePort(t))
	proc := harness.StartProcess(t, harness.ProcessSpec{
		Name: "alertmanager-example",
		Path: tools.Path(t, "alertmanager", "ALERTMANAGER_VERSION", "alertmanager"),
		Args: []string{"--config.file=" + cfg, "--storage.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr, "--cluster.listen-address="},
		Dir: dir,
	})
	proc.MustWaitReady(t, 30*time.Second, harness.HTTPStatusOK("http://"+addr+"/-/ready"))
	am := &harness.Alertmanager{URL: "http://" + addr, Addr: addr}
	ctx := ctxTimeout(t, time.Minute)

	stalled := map[string]string{"alertname": "WatchtowerControllerStalled", "severity": "critical",
		"job": "workload-operator", "namespace": "operators", "watchtower_controller_name": "workload"}
	if err := am.PostAlert(ctx, stalled, map[string]string{
		"summary":     "Controller workload stopped reconciling with 7 requests queued",
		"description": "no reconcile for 10 minutes",
		"runbook_url": runbookBase + "#watchtowercontrollerstalled",
	}); err != nil {
		t.Fatal(err)
	}
	slack := srv.waitFor(ctx, t, "/slack", "#oncall", "stopped reconciling with 7 requests queued", runbookBase+"#watchtowercontrollerstalled")
	if _, ok := slack.body["attachments"]; !ok {
		t.Errorf("the Slack notification is not a Slack message: %s", slack.raw)
	}
	if !strings.Contains(slack.raw, "[FIRING:1] WatchtowerControllerStalled") {
		t.Errorf("the Slack title is not rendered by watchtower.tmpl: %s", slack.raw)
	}
	teams := srv.waitFor(ctx, t, "/teams", "WatchtowerControllerStalled", "stopped reconciling with 7 requests queued")
	if !strings.Contains(teams.raw, "AdaptiveCard") {
		t.Errorf("the Teams notification is not an Adaptive Card: %s", teams.raw)
	}
	hook := srv.waitFor(ctx, t, "/whatsapp", "WatchtowerControllerStalled")
	var msg harness.WebhookMessage
	if err := json.Unmarshal([]byte(hook.raw), &msg); err != nil || msg.Version != "4" || msg.Status != "firing" ||
		len(msg.Alerts) != 1 || msg.Alerts[0].Labels["watchtower_controller_name"] != "workload" ||
		msg.Alerts[0].Annotations["runbook_url"] != runbookBase+"#watchtowercontrollerstalled" {
		t.Errorf("the generic webhook did not get Alertmanager's webhook JSON (version 4) with the alert: %v %s", err, hook.raw)
	}

	errRatio := map[string]string{"alertname": "WatchtowerReconcileErrorRatio", "severity": "warning",
		"job": "workload-operator", "namespace": "operators", "watchtower_controller_name": "workload"}
	if err := am.PostAlert(ctx, errRatio, map[string]string{"summary": "Controller workload fails 40% of its reconciles",
		"runbook_url": runbookBase + "#watchtowerreconcileerrorratio"}); err != nil {
		t.Fatal(err)
	}
	srv.waitFor(ctx, t, "/slack", "#platform-alerts", "fails 40% of its reconciles")
	srv.waitFor(ctx, t, "/teams", "fails 40% of its reconciles")
	// The warning went to the platform team's receiver only, as routed, so the on-call
	// webhook cannot get it (no wait for a notification that must not come).
	if got, err := am.AlertReceivers(ctx, "WatchtowerReconcileErrorRatio"); err != nil || strings.Join(got, ",") != "platform-slack-and-teams" {
		t.Errorf("the warning was routed to %v (%v), want only platform-slack-and-teams", got, err)
	}
	srv.mu.Lock()
	for _, c := range srv.got {
		if c.path == "/whatsapp" && strings.Contains(c.raw, "WatchtowerReconcileErrorRatio") {
			t.Errorf("a warning reached the on-call webhook: %s", c.raw)
		}
	}
	srv.mu.Unlock()
	t.Logf("alertmanager example: notifications at %v", srv.paths())
}
