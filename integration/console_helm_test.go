package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestConsoleWithBackendsDown: with Jaeger and Prometheus down (nothing listens on their ports)
// and no Kubernetes, every page still renders — its navigation, its title — and says which
// backend is unreachable, at which address. The Configure page, in Helm mode, refuses bad input
// next to the field it concerns, keeps what was typed, and turns good input into Helm values
// that the real chart accepts and renders into the collectors' settings.
func TestConsoleWithBackendsDown(t *testing.T) {
	t.Parallel()
	jaegerURL := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t)) // reserved, never listened on
	promURL := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	con := harness.StartConsole(t, harness.ConsoleConfig{JaegerURL: jaegerURL, PrometheusURL: promURL})
	p := newConsolePage(t, harness.StartBrowser(t), con.URL)

	for _, tc := range []struct {
		path, title, down string
		status            int64
	}{
		{"/controllers", "Controllers", "Prometheus at " + promURL + " is unreachable", http.StatusOK},
		{"/reconciles?controller=workload&result=failed", "Reconciles", "Jaeger at " + jaegerURL + " is unreachable", http.StatusOK},
		{"/trace/4bf92f3577b34da6a3ce929d0e0e4736", "Trace 4bf92f35", "Jaeger at " + jaegerURL + " is unreachable", http.StatusBadGateway},
		{"/pipeline", "Pipeline", "Prometheus at " + promURL + " is unreachable", http.StatusOK},
	} {
		if got := p.open(tc.path); got != tc.status {
			t.Errorf("%s: HTTP %d, want %d", tc.path, got, tc.status)
		}
		if h1 := p.text("h1"); h1 != tc.title {
			t.Errorf("%s: the heading is %q, want %q", tc.path, h1, tc.title)
		}
		if nav := p.texts("header nav a"); strings.Join(nav, ",") != "Controllers,Reconciles,Pipeline,Configure" {
			t.Errorf("%s: navigation %v", tc.path, nav)
		}
		if alert := p.text("[role=alert]"); !strings.Contains(alert, tc.down) {
			t.Errorf("%s: the page's alert says %q, want it to name %q", tc.path, alert, tc.down)
		}
	}
	p.open("/pipeline")
	p.shot("backend-down")
	p.accessible("/reconciles")

	// A trace ID that is not one is refused with a message, not a blank page.
	if got := p.open("/trace/not-a-trace"); got != http.StatusBadRequest || !strings.Contains(p.text("[role=alert]"), "is not a trace ID") {
		t.Errorf("/trace/not-a-trace: HTTP %d, alert %q", got, p.text("[role=alert]"))
	}

	// Configure, Helm mode: it starts from the chart's defaults.
	p.open("/configure")
	if intro := p.text("main > p"); !strings.Contains(intro, "not installed") || !strings.Contains(intro, "Helm values") {
		t.Fatalf("without the Watchtower API the Configure page says %q, want Helm mode", intro)
	}
	for id, want := range map[string]string{"#slowThreshold": "1s", "#decisionWait": "10s", "#baselinePercent": "1", "#spansTopic": "otlp_spans"} {
		if got := p.attrs(id, "value"); len(got) != 1 || got[0] != want {
			t.Errorf("Helm mode starts %s at %v, want the chart's default %q", id, got, want)
		}
	}
	p.fill("#slowThreshold", "2h")
	p.fill("#decisionWait", "soon")
	p.fill("#metricsTopic", "otlp_spans")
	if got := p.click("button.primary"); got != http.StatusUnprocessableEntity {
		t.Errorf("bad input: HTTP %d, want 422", got)
	}
	for id, want := range map[string]string{
		"#slowThreshold-err": "between 1ms and 1h",
		"#decisionWait-err":  `"soon" is not a duration`,
		"#metricsTopic-err":  "must differ",
	} {
		if got := p.text(id); !strings.Contains(got, want) {
			t.Errorf("bad input: %s says %q, want %q", id, got, want)
		}
	}
	if got := p.attrs("#slowThreshold", "value"); len(got) != 1 || got[0] != "2h" {
		t.Errorf("the refused input was not kept: #slowThreshold is %v", got)
	}
	if n := len(p.texts("#helm-values")); n != 0 {
		t.Error("bad input produced Helm values")
	}
	p.shot("configure-invalid")

	p.fill("#slowThreshold", "2500ms")
	p.fill("#decisionWait", "20s")
	p.fill("#baselinePercent", "5")
	p.fill("#metricsTopic", "otlp_metrics")
	p.fill(`[id="r0.name"]`, "oncall")
	p.fill(`[id="r0.secretName"]`, "alert-urls")
	p.fill(`[id="r0.secretKey"]`, "slack")
	if got := p.click("button.primary"); got != http.StatusOK {
		t.Fatalf("good input: HTTP %d, want 200; alerts: %v", got, p.texts("[role=alert]"))
	}
	values := p.raw("#helm-values")
	for _, want := range []string{"slowThresholdMs: 2500", "decisionWait: 20s", "baselinePercent: 5"} {
		if !strings.Contains(values, want) {
			t.Errorf("the Helm values lack %q:\n%s", want, values)
		}
	}
	if am := p.raw("#alertmanager"); !strings.Contains(am, "name: oncall") || !strings.Contains(am, "slack_configs") {
		t.Errorf("the Alertmanager routing lacks the receiver oncall:\n%s", am)
	}
	p.shot("configure-helm")

	// The values, as a user pastes them into a file, rendered by the real chart.
	root := harness.MustTools(t).RepoRoot
	f := filepath.Join(t.TempDir(), "watchtower-values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHelm(t)
	out, err := h.Run(ctxTimeout(t, time.Minute), "template", chartRelease, filepath.Join(root, chartDir), "-f", filepath.Join(root, chartDir, "ci", "default-values.yaml"), "-f", f)
	if err != nil {
		t.Fatalf("helm template with the console's values: %v", err)
	}
	objs, err := decodeManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		for _, c := range containersOf(o) {
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
		}
	}
	for k, want := range map[string]string{"WATCHTOWER_SLOW_THRESHOLD_MS": "2500", "WATCHTOWER_SAMPLING_DECISION_WAIT": "20s", "WATCHTOWER_SAMPLING_BASELINE_PERCENT": "5"} {
		if env[k] != want {
			t.Errorf("the chart rendered with the console's values sets %s=%q, want %q", k, env[k], want)
		}
	}
}

// containersOf are the containers of a rendered Deployment.
func containersOf(o *unstructured.Unstructured) []corev1.Container {
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
		return nil
	}
	return d.Spec.Template.Spec.Containers
}
