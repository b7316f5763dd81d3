package integration

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/gowatchtower/watchtower/integration/harness"
	wtv1 "github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// checkConsole walks the demo's console in a real headless Chromium as a user does, over the
// demo's real components: each page shows their data, the slow reconcile's waterfall its
// API-call children and the API server's spans, a trigger link leads to the linked trace, a log
// line pasted in the search box opens its trace, and a change on the Configure page reaches the
// Watchtower resource once the operator's API is installed. Every page is photographed.
func checkConsole(t *testing.T, d *demoProcess, slow harness.JaegerTrace, logLine string) {
	base := fmt.Sprintf("http://127.0.0.1:%d", d.ports["console-port"])
	if first := strings.SplitN(d.output(), "\n", 2)[0]; !strings.Contains(first, "Watchtower console: "+base) {
		t.Errorf("the demo's first line is %q, want the console's URL %s", first, base)
	}
	p := newConsolePage(t, harness.StartBrowser(t), base)

	// Controllers: the example operator's controller, with the demo's figures: it reconciles,
	// some reconciles fail (broken, flaky), and its p99 is the slow sample's 1.5 s sleep.
	var row map[string]string
	p.eventually("/controllers", 90*time.Second, "the workload controller with its rate, errors and p99", func() error {
		row = p.tableRow("table.data", "workload")
		if row == nil {
			return fmt.Errorf("no row for the workload controller")
		}
		if number(row["Reconciles"]) <= 0 || number(row["Errors"]) <= 0 {
			return fmt.Errorf("row %v: want a positive reconcile rate and error ratio", row)
		}
		return nil
	})
	if p99 := seconds(strings.Split(row["p50 · p99"], " · ")[1]); p99 < 1 || p99 > 2.5 {
		t.Errorf("the workload controller's p99 is %q, want the slow sample's ~1.5 s", row["p50 · p99"])
	}
	// The charts, once Prometheus holds two points of the 15-minute range (15 s apart).
	p.eventually("/controllers?range=15m", 60*time.Second, "the rate and p99 charts of the workload controller", func() error {
		if n := len(p.texts("table.data svg.spark")); n < 2 {
			return fmt.Errorf("%d charts drawn", n)
		}
		return nil
	})
	// The slowest reconcile's exemplar (pushed through the collector's exporter) opens its trace.
	p.eventually("/controllers", 60*time.Second, "the workload controller's exemplar link to a kept trace", func() error {
		href := p.attrs("table.data tbody tr:first-child td:last-child a", "href")
		if len(href) != 1 {
			return fmt.Errorf("no exemplar link in the first row")
		}
		if got := p.open(href[0]); got != http.StatusOK || !strings.HasPrefix(p.text("h1"), "reconcile default/") {
			return fmt.Errorf("the exemplar link %s: HTTP %d, heading %q", href[0], got, p.text("h1"))
		}
		return nil
	})
	p.open("/controllers?range=15m")
	p.shot("controllers")
	p.viewport(390, 844)
	p.shot("controllers-phone")
	p.viewport(1280, 800)

	// Reconciles: slow or failed by default; the slow sample and the failing ones are there.
	p.eventually("/reconciles", 60*time.Second, "slow and failed reconciles of the samples", func() error {
		objects := strings.Join(p.texts("table.data tbody td:nth-child(3)"), ",")
		for _, want := range []string{"default/slow-memory", "default/flaky", "default/broken"} {
			if !strings.Contains(objects, want) {
				return fmt.Errorf("no reconcile of %s among %s", want, objects)
			}
		}
		if strings.Contains(objects, "fast-nginx") {
			return fmt.Errorf("fast-nginx reconciles neither slowly nor with an error, yet is listed: %s", objects)
		}
		return nil
	})
	for i, res := range p.texts("table.data tbody td:nth-child(4) .result") {
		dur := seconds(p.texts("table.data tbody td:nth-child(5)")[i])
		if res == "success" && dur < 1 {
			t.Errorf("a successful %s reconcile is listed as slow or failed", p.texts("table.data tbody td:nth-child(5)")[i])
		}
	}
	p.shot("reconciles")

	// A filter: failed reconciles of flaky only.
	p.open("/reconciles?object=flaky&result=error")
	for _, o := range p.texts("table.data tbody td:nth-child(3)") {
		if o != "default/flaky" {
			t.Errorf("object=flaky lists %s", o)
		}
	}

	// Trace: the slow reconcile's waterfall.
	if got := p.open("/trace/" + slow.TraceID); got != http.StatusOK {
		t.Fatalf("/trace/%s: HTTP %d", slow.TraceID, got)
	}
	if h1 := p.text("h1"); h1 != "reconcile default/slow-memory" {
		t.Errorf("the slow trace's heading is %q", h1)
	}
	calls := len(p.texts("li.k-api_server")) + len(p.texts("li.k-cache"))
	if len(p.texts("li.k-reconcile")) != 1 || calls == 0 || len(p.texts("li.k-apiserver")) == 0 {
		t.Errorf("the slow trace's waterfall has %d reconcile rows, %d API-call rows and %d API server rows; want 1, some and some",
			len(p.texts("li.k-reconcile")), calls, len(p.texts("li.k-apiserver")))
	}
	// Every span Jaeger holds, once the trace stops growing (the API server's spans and late
	// spans of a kept trace arrive after the decision).
	jaeger := &harness.Jaeger{QueryURL: fmt.Sprintf("http://127.0.0.1:%d", d.ports["jaeger-port"])}
	p.eventually("/trace/"+slow.TraceID, 60*time.Second, "every span of the slow trace in the waterfall", func() error {
		var traces []harness.JaegerTrace
		if err := jaeger.Get(context.Background(), "/api/traces/"+slow.TraceID, &traces); err != nil || len(traces) != 1 {
			return fmt.Errorf("Jaeger: %v", err)
		}
		if shown, held := len(p.texts("ol.waterfall > li")), len(traces[0].Spans); shown != held {
			return fmt.Errorf("the waterfall shows %d spans, Jaeger holds %d", shown, held)
		}
		return nil
	})
	p.shot("trace")

	// A pasted log line opens its trace.
	p.open("/controllers")
	p.fill("#q", logLine)
	p.click(".search button")
	if loc := p.location(); loc != "/trace/"+slow.TraceID {
		t.Errorf("searching the log line %q led to %s, want /trace/%s", logLine, loc, slow.TraceID)
	}

	// A trigger link: a failed flaky reconcile links to the previous (failed, so kept) one.
	var linked string
	p.eventually("/reconciles?object=flaky&result=error&range=15m", 60*time.Second, "a flaky reconcile whose trigger link leads to a kept trace", func() error {
		hrefs := p.attrs("a.trace-link", "href")
		// The older rows: their previous reconcile is decided and in Jaeger.
		for i := len(hrefs) - 1; i >= 0 && linked == ""; i-- {
			if p.open(hrefs[i]) != http.StatusOK {
				continue
			}
			links := p.attrs("a.trigger-link", "href")
			if len(links) == 0 {
				continue
			}
			if p.click("a.trigger-link") == http.StatusOK && p.text("h1") == "reconcile default/flaky" {
				linked = links[0]
			}
		}
		if linked == "" {
			return fmt.Errorf("no flaky reconcile's trigger link led to a flaky trace yet")
		}
		return nil
	})
	if len(p.texts("li.focus.k-reconcile")) != 1 {
		t.Errorf("the linked trace %s does not mark the linked reconcile span", linked)
	}
	p.shot("trace-linked")

	// Pipeline: the gateway accepted spans and wrote both topics.
	p.eventually("/pipeline", 60*time.Second, "spans accepted and Kafka records written", func() error {
		spans := p.tableRow("table.data", "spans")
		if spans == nil || number(spans["Accepted"]) <= 0 {
			return fmt.Errorf("spans row %v: want spans accepted", spans)
		}
		topics := strings.Join(p.texts("section[aria-labelledby=kafka] tbody th"), ",")
		if !strings.Contains(topics, "otlp_spans") || !strings.Contains(topics, "otlp_metrics") {
			return fmt.Errorf("Kafka topics written: %s", topics)
		}
		return nil
	})
	p.shot("pipeline")
	p.dark(true)
	p.shot("pipeline-dark")
	p.dark(false)

	// Every page, light and dark, desktop and phone: contrast, names, no sideways scrolling; and
	// the keyboard's way in.
	for _, path := range []string{"/controllers", "/reconciles", "/trace/" + slow.TraceID, "/pipeline", "/configure"} {
		p.accessible(path)
	}
	p.keyboard("/reconciles")

	// Configure: once the operator's API is served, the form writes the Watchtower resource.
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(d.state, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	root := harness.MustTools(t).RepoRoot
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join(root, operatorDir, "config", "crd", "bases")}}); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: watchtowerScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 2*time.Minute)
	wt := validWatchtower("demo")
	if err := c.Create(ctx, wt); err != nil {
		t.Fatal(err)
	}
	p.eventually("/configure", 30*time.Second, "operator mode", func() error {
		if intro := p.text("main > p"); !strings.Contains(intro, "Watchtower resource default/demo") {
			return fmt.Errorf("the page says %q", intro)
		}
		return nil
	})
	// The API server's own rule refuses a decision wait of 10 minutes, named at the field.
	p.fill("#decisionWait", "10m")
	if got := p.click("button.primary"); got != http.StatusUnprocessableEntity {
		t.Errorf("a 10m decision wait: HTTP %d, want 422", got)
	}
	if msg := p.text("#decisionWait-err"); !strings.Contains(msg, "spec.sampling.decisionWait must be between 1s and 5m") {
		t.Errorf("a 10m decision wait: the field says %q, want the API server's CEL message", msg)
	}
	p.shot("configure-refused")
	p.open("/configure")
	p.fill("#slowThreshold", "2500ms")
	p.fill("#decisionWait", "20s")
	p.fill(`[id="r0.name"]`, "oncall")
	p.fill(`[id="r0.secretName"]`, "alert-urls")
	p.fill(`[id="r0.secretKey"]`, "slack")
	if got := p.click("button.primary"); got != http.StatusOK {
		t.Fatalf("saving: HTTP %d; alerts %v", got, p.texts("[role=alert]"))
	}
	if saved := p.text("[role=status]"); !strings.Contains(saved, "Saved Watchtower default/demo: generation 2") {
		t.Errorf("after saving the page says %q", saved)
	}
	var got wtv1.Watchtower
	if err := c.Get(ctx, client.ObjectKeyFromObject(wt), &got); err != nil {
		t.Fatal(err)
	}
	s := got.Spec.Sampling
	if s.SlowThreshold == nil || s.SlowThreshold.Duration != 2500*time.Millisecond || s.DecisionWait == nil || s.DecisionWait.Duration != 20*time.Second ||
		len(got.Spec.Alerting.Receivers) != 1 || got.Spec.Alerting.Receivers[0].Name != "oncall" || got.Spec.Alerting.Receivers[0].URLSecret.Key != "slack" {
		t.Errorf("the Watchtower after saving: sampling %+v, receivers %+v", s, got.Spec.Alerting.Receivers)
	}
	if got.Spec.Kafka.Brokers[0] != wt.Spec.Kafka.Brokers[0] || got.Spec.TracesBackend != wt.Spec.TracesBackend {
		t.Errorf("saving changed what the form does not show: %+v", got.Spec)
	}
	p.shot("configure")
	p.accessible("/configure")
	// The Pipeline page shows the resource and that the operator has yet to apply it (no
	// operator runs in the demo).
	p.open("/pipeline")
	if card := p.text("article.card"); !strings.Contains(card, "default/demo") || !strings.Contains(card, "Generation 2") || !strings.Contains(card, "Slow threshold 2.5s") {
		t.Errorf("the Pipeline page's Watchtower card says %q", card)
	}
	if err := c.Delete(context.Background(), &got); err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
}
