package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	demov1alpha1 "github.com/gowatchtower/watchtower/examples/workload-operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/integration/harness"
)

// debugState is what the operator's /debug/watchtower says about one object.
type debugState struct {
	Name       string  `json:"name"`
	Reconciles int     `json:"reconcilesInWindow"`
	HotLoop    bool    `json:"hotLoop"`
	Stuck      bool    `json:"stuck"`
	FailingFor float64 `json:"failingForSeconds"`
	LastTrace  string  `json:"lastTraceID"`
}

func debugWatchtower(ctx context.Context, base string) (top, failing map[string]debugState, err error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/watchtower", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Controllers []struct {
			Controller string       `json:"controller"`
			Top        []debugState `json:"topByReconciles"`
			Failing    []debugState `json:"longestFailing"`
		} `json:"controllers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, nil, fmt.Errorf("/debug/watchtower: %w", err)
	}
	top, failing = map[string]debugState{}, map[string]debugState{}
	for _, c := range out.Controllers {
		if c.Controller != "workload" {
			continue
		}
		for _, o := range c.Top {
			top[o.Name] = o
		}
		for _, o := range c.Failing {
			failing[o.Name] = o
		}
	}
	return top, failing, nil
}

// TestHotLoopAndStuckObjectsAreDetected runs the example operator (hot loop: 10 reconciles in
// 15 s at one generation; stuck after 20 s) with a Workload that hot-loops on purpose (a new
// status timestamp on every reconcile) and one that always fails, and a Prometheus with the
// committed rules. The operator's gauges, /debug/watchtower and log name them; the alerts fire;
// once the Workload is fixed the hot loop ends and its alert resolves.
func TestHotLoopAndStuckObjectsAreDetected(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	kube, c := startKubeWithWorkloadCRD(t)
	metricsURL, op := startOperatorWithArgs(t, kube, []string{"--hot-loop-reconciles=10", "--hot-loop-window=15s", "--stuck-after=20s"},
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+harness.Loopback(harness.FreePort(t)), "OTEL_METRIC_EXPORT_INTERVAL=1000")
	base := strings.TrimSuffix(metricsURL, "/metrics")
	prom := harness.StartPrometheus(t, harness.WithRuleFiles(testRules(t)),
		harness.WithScrapeTarget("workload-operator", strings.TrimPrefix(base, "http://"), "/metrics"))
	ctx := ctxTimeout(t, 3*time.Minute)
	start := time.Now()

	looping := &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "looping"},
		Spec: demov1alpha1.WorkloadSpec{Type: demov1alpha1.Nginx, Replicas: ptr.To[int32](1), HotLoop: true, ReconcileDelay: "300ms"}}
	broken := &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "broken"},
		Spec: demov1alpha1.WorkloadSpec{Type: demov1alpha1.StressCPU, FailWith: demov1alpha1.FailTransient}}
	calm := &demov1alpha1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "calm"},
		Spec: demov1alpha1.WorkloadSpec{Type: demov1alpha1.Nginx, Replicas: ptr.To[int32](1)}}
	for _, w := range []*demov1alpha1.Workload{looping, broken, calm} {
		if err := c.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	gauge := func(name string) float64 {
		v, _, err := harness.ScrapeSum(ctx, metricsURL, name, map[string]string{"watchtower_controller_name": "workload"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// 1. The hot loop, by count, by name and in the log, within a minute.
	waitFor(t, ctx, "the hot-looping gauge to count the looping Workload", func() (bool, error) {
		n := gauge("watchtower_controller_hot_looping_objects")
		return n == 1, fmt.Errorf("%v hot-looping objects", n)
	})
	detected := time.Since(start)
	top, failing, err := debugWatchtower(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if o := top["looping"]; !o.HotLoop || o.Reconciles < 10 || len(o.LastTrace) != 32 {
		t.Errorf("/debug/watchtower: looping = %+v, want hotLoop with at least 10 reconciles and its last trace ID", o)
	}
	if top["calm"].HotLoop || top["broken"].HotLoop {
		t.Errorf("/debug/watchtower flags a Workload that is not looping: calm %+v, broken %+v", top["calm"], top["broken"])
	}
	if _, ok := failing["looping"]; ok {
		t.Error("the looping Workload succeeds: it is not failing")
	}

	// 2. The always-failing Workload becomes stuck after 20 s.
	waitFor(t, ctx, "the stuck gauge to count the broken Workload", func() (bool, error) {
		n := gauge("watchtower_controller_stuck_objects")
		return n == 1, fmt.Errorf("%v stuck objects", n)
	})
	if _, failing, err = debugWatchtower(ctx, base); err != nil {
		t.Fatal(err)
	}
	if o := failing["broken"]; !o.Stuck || o.FailingFor < 20 {
		t.Errorf("/debug/watchtower: broken = %+v, want stuck, failing for at least 20 s", o)
	}

	// 3. Both alerts fire in Prometheus (the test's rules have `for: 5s`).
	for _, alert := range []string{"WatchtowerControllerHotLooping", "WatchtowerObjectsStuck"} {
		if _, err := prom.WaitForQuery(ctx, `ALERTS{alertname="`+alert+`", alertstate="firing", watchtower_controller_name="workload"}`,
			func(s []harness.Sample) bool { return len(s) == 1 }); err != nil {
			t.Fatalf("%s never fired: %v", alert, err)
		}
	}
	fired := time.Since(start)

	// 4. Fixed: the loop ends, the gauge goes back to 0 and the alert resolves.
	var w demov1alpha1.Workload
	for {
		if err := c.Get(ctx, client.ObjectKeyFromObject(looping), &w); err != nil {
			t.Fatal(err)
		}
		w.Spec.HotLoop = false
		if err := c.Update(ctx, &w); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	fixed := time.Now()
	waitFor(t, ctx, "the hot loop to end after the fix", func() (bool, error) {
		n := gauge("watchtower_controller_hot_looping_objects")
		return n == 0, fmt.Errorf("%v hot-looping objects", n)
	})
	if _, err := prom.WaitForQuery(ctx, `absent(ALERTS{alertname="WatchtowerControllerHotLooping", alertstate="firing"})`,
		func(s []harness.Sample) bool { return len(s) == 1 }); err != nil {
		t.Fatalf("WatchtowerControllerHotLooping did not resolve: %v", err)
	}
	resolved := time.Since(fixed)

	// 5. One log line per object entering the state, naming it.
	logs, err := os.ReadFile(op.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`hot loop: the object is reconciled again and again`, `"name": "looping"`, `stuck: the object's reconciles keep failing`} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("the operator's log has no %q", want)
		}
	}
	if n := strings.Count(string(logs), "hot loop: the object is reconciled again and again"); n != 1 {
		t.Errorf("%d hot-loop log lines, want one for the one time the object entered the state", n)
	}
	t.Logf("hotloop: detected %s after the Workloads were created, both alerts firing after %s; after the fix the loop ended and its alert resolved within %s",
		detected.Round(time.Second), fired.Round(time.Second), resolved.Round(time.Second))
}
