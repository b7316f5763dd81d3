package otelctrl

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gowatchtower/watchtower/semconv"
)

func gaugeValue(t *testing.T, tt *testTelemetry, name, controller string) int64 {
	t.Helper()
	g, ok := tt.metrics(t)[name].(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("%s: no int64 gauge", name)
	}
	for _, dp := range g.DataPoints {
		if v, _ := dp.Attributes.Value(semconv.ControllerNameKey); v.AsString() == controller {
			return dp.Value
		}
	}
	return -1
}

func TestHotLoopIsDetectedMarkedAndCounted(t *testing.T) {
	tt := newTestTelemetry(t)
	r := testReconciler("looper", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		return reconcile.Result{}, nil
	}), append(tt.opts, WithHotLoopThreshold(5, time.Minute))...)
	for range 4 {
		_, _ = r.Reconcile(context.Background(), req("ns", "spinning"))
	}
	if n := gaugeValue(t, tt, semconv.ControllerHotLoopingObjectsName, "looper"); n != 0 {
		t.Fatalf("hot after 4 of 5 reconciles: %d", n)
	}
	_, _ = r.Reconcile(context.Background(), req("ns", "spinning"))
	_, _ = r.Reconcile(context.Background(), req("ns", "calm"))
	if n := gaugeValue(t, tt, semconv.ControllerHotLoopingObjectsName, "looper"); n != 1 {
		t.Errorf("hot-looping objects = %d after 5 reconciles within the window, want 1", n)
	}
	ended := tt.spans.Ended()
	fifth, calm := ended[4], ended[5]
	if !hasSpanEvent(fifth, hotLoopEvent) {
		t.Errorf("the fifth reconcile of spinning has no %s event", hotLoopEvent)
	}
	if hasSpanEvent(calm, hotLoopEvent) || hasSpanEvent(ended[3], hotLoopEvent) {
		t.Error("a reconcile that is not part of a hot loop is marked")
	}
	if n := gaugeValue(t, tt, semconv.ControllerStuckObjectsName, "looper"); n != 0 {
		t.Errorf("stuck = %d, want 0", n)
	}
}

func hasSpanEvent(s sdktrace.ReadOnlySpan, name string) bool {
	for _, e := range s.Events() {
		if e.Name == name {
			return true
		}
	}
	return false
}

// The detector itself, on a clock of its own.
func TestLoopDetectorRules(t *testing.T) {
	cfg := newConfig([]Option{WithHotLoopThreshold(3, 10*time.Second), WithStuckAfter(time.Minute)})
	d := newLoopDetector("c", cfg)
	span := noop.Span{}
	key := activeKey{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "o"}}
	t0 := time.Unix(1_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	obs := func(s float64, gen int64, known bool, res reconcileResult) {
		d.observe(context.Background(), key, gen, known, at(s), res, span)
	}
	hot := func(now float64) int { h, _ := d.sweep(at(now)); return h }
	stuck := func(now float64) int { _, s := d.sweep(at(now)); return s }

	obs(0, 1, true, resultSuccess)
	obs(1, 1, true, resultSuccess)
	obs(2, 2, true, resultSuccess) // the spec changed: not a loop, the count starts again
	obs(3, 2, false, resultSuccess)
	if hot(3) != 0 {
		t.Error("a generation change must restart the count")
	}
	obs(4, 2, false, resultSuccess) // third at generation 2 within 10 s
	if hot(4) != 1 {
		t.Error("three reconciles within 10 s at one generation: want hot")
	}
	if hot(15) != 0 {
		t.Error("not reconciled for more than the window: the hot loop has ended")
	}
	obs(30, 2, false, resultSuccess)
	obs(45, 2, false, resultSuccess)
	obs(60, 2, false, resultSuccess)
	if hot(60) != 0 {
		t.Error("three reconciles spread over 30 s are not a loop")
	}

	obs(100, 2, false, resultError)
	obs(130, 2, false, resultRequeueAfter) // polling is not failing: no longer failing
	obs(140, 2, false, resultError)
	obs(170, 2, false, resultConflict)
	if stuck(170) != 0 {
		t.Error("failing for 30 s is not stuck")
	}
	if stuck(201) != 1 {
		t.Error("failing since 140 s, no success, at 201 s: want stuck (by the sweep, without a retry)")
	}
	obs(210, 2, false, resultSuccess)
	if stuck(210) != 0 {
		t.Error("a success ends stuck")
	}
	if len(d.objs) != 1 {
		t.Errorf("tracking %d objects, want 1", len(d.objs))
	}
	if _, s := d.sweep(at(400)); s != 0 || len(d.objs) != 0 {
		t.Errorf("an object neither hot nor failing and idle for long is forgotten: %d tracked", len(d.objs))
	}
}

func TestLoopDetectorIsBounded(t *testing.T) {
	d := newLoopDetector("c", newConfig(nil))
	now := time.Now()
	for i := range maxTrackedObjects + 500 {
		key := activeKey{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "o" + itoaTest(i)}}
		d.observe(context.Background(), key, 1, true, now, resultError, noop.Span{})
	}
	if len(d.objs) != maxTrackedObjects {
		t.Errorf("tracking %d objects, want at most %d", len(d.objs), maxTrackedObjects)
	}
}

func itoaTest(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestDebugEndpointListsTheWorstObjects(t *testing.T) {
	tt := newTestTelemetry(t)
	reg := &loopRegistry{}
	r := testReconciler("lister", reconcile.Func(func(_ context.Context, q reconcile.Request) (reconcile.Result, error) {
		if q.Name == "broken" {
			return reconcile.Result{}, errors.New("no")
		}
		return reconcile.Result{}, nil
	}), append(tt.opts, WithHotLoopThreshold(3, time.Minute))...)
	reg.add(r.(*reconciler[reconcile.Request]).loops)
	for range 3 {
		_, _ = r.Reconcile(context.Background(), req("ns", "busy"))
	}
	_, _ = r.Reconcile(context.Background(), req("ns", "broken"))
	_, _ = r.Reconcile(context.Background(), req("ns", "quiet"))

	rec := httptest.NewRecorder()
	reg.ServeHTTP(rec, httptest.NewRequest("GET", DebugPath, nil))
	var out struct {
		Controllers []debugController `json:"controllers"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if len(out.Controllers) != 1 || out.Controllers[0].Controller != "lister" {
		t.Fatalf("controllers: %+v", out.Controllers)
	}
	c := out.Controllers[0]
	if len(c.TopByReconcile) == 0 || c.TopByReconcile[0].Name != "busy" || c.TopByReconcile[0].Reconciles != 3 || !c.TopByReconcile[0].HotLoop {
		t.Errorf("top by reconciles: %+v, want busy first with 3, hot", c.TopByReconcile)
	}
	if len(c.LongestStuck) != 1 || c.LongestStuck[0].Name != "broken" || c.LongestStuck[0].LastResult != "error" || c.LongestStuck[0].LastTrace == "" {
		t.Errorf("longest failing: %+v, want broken with its last trace", c.LongestStuck)
	}
	if rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("content type %q", rec.Header().Get("Content-Type"))
	}
}
