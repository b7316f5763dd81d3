package otelctrl

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/gowatchtower/watchtower/semconv"
)

func TestQueueTapCountsAddKindsAndFeedsTheReconcile(t *testing.T) {
	for _, kind := range []string{"priority", "classic"} {
		t.Run(kind, func(t *testing.T) {
			tt := newTestTelemetry(t)
			var inner newQueueFunc[reconcile.Request]
			if kind == "classic" {
				inner = func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
					return workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Name: name})
				}
			}
			name := "queue-" + kind
			link := &tapLink[reconcile.Request]{}
			q := newTappedQueue(inner, newConfig(tt.opts), link)(name, workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](time.Millisecond, time.Millisecond))
			t.Cleanup(q.ShutDown)
			if _, isPQ := q.(priorityqueue.PriorityQueue[reconcile.Request]); isPQ != (kind == "priority") {
				t.Fatalf("the tapped queue must keep the priority-queue interface exactly when the inner queue has it")
			}

			r := newReconciler[reconcile.Request](name, reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil }), newConfig(tt.opts), widgetKind, link, nil)
			// What a controller worker does: take an item, reconcile it, mark it done.
			work := func() {
				item, shutdown := q.Get()
				if shutdown {
					t.Fatal("queue shut down")
				}
				if _, err := r.Reconcile(context.Background(), item); err != nil {
					t.Fatal(err)
				}
				q.Done(item)
			}
			a, b := req("ns", "a"), req("ns", "b")
			q.Add(a)
			q.AddAfter(b, 10*time.Millisecond)
			time.Sleep(20 * time.Millisecond) // let a wait in the queue, and b become due
			work()
			work()
			q.AddRateLimited(a) // as after an error
			work()

			var waits []time.Duration
			var retries int
			for _, s := range tt.spans.Ended() {
				v, ok := spanAttr(s, semconv.QueueWaitKey)
				if !ok {
					t.Fatalf("span %s lacks %s", s.Name(), semconv.QueueWaitKey)
				}
				waits = append(waits, time.Duration(v.AsFloat64()*float64(time.Second)))
				rv, _ := spanAttr(s, semconv.QueueRetriesKey)
				retries += int(rv.AsInt64())
			}
			if len(waits) != 3 || waits[0] < 15*time.Millisecond {
				t.Errorf("queue waits %v: the first request waited at least 20ms in the queue", waits)
			}
			if retries != 1 {
				t.Errorf("sum of retries = %d, want 1 (only the rate-limited requeue)", retries)
			}
			m := tt.metrics(t)
			for kindAttr, want := range map[string]int64{
				semconv.QueueAddKindFreshValue: 1, semconv.QueueAddKindDelayedValue: 1, semconv.QueueAddKindRateLimitedValue: 1,
			} {
				if n := counterValue(t, m[semconv.QueueAddsName], semconv.ControllerName(name), semconv.QueueAddKindKey.String(kindAttr)); n != want {
					t.Errorf("queue adds{add_kind=%s} = %d, want %d", kindAttr, n, want)
				}
			}
			if n := histogramCount(t, m[semconv.QueueWaitName], semconv.ControllerName(name)); n != 3 {
				t.Errorf("queue wait histogram count = %d, want 3", n)
			}
		})
	}
}

// TestQueuesOfSameNamedControllersStayApart: two managers in one process (or two tests) with a
// controller of the same name each see their own queue's wait — nothing is registered by name.
func TestQueuesOfSameNamedControllersStayApart(t *testing.T) {
	tt := newTestTelemetry(t)
	type pair struct {
		q workqueue.TypedRateLimitingInterface[reconcile.Request]
		r reconcile.Reconciler
	}
	var pairs []pair
	for range 2 {
		link := &tapLink[reconcile.Request]{}
		q := newTappedQueue[reconcile.Request](nil, newConfig(tt.opts), link)("widget", workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		t.Cleanup(q.ShutDown)
		r := newReconciler[reconcile.Request]("widget", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil }), newConfig(tt.opts), widgetKind, link, nil)
		pairs = append(pairs, pair{q, r})
	}
	// Only the first manager's queue holds the request, for a while; the second manager then
	// reconciles the same request without having queued it.
	pairs[0].q.Add(req("ns", "a"))
	time.Sleep(30 * time.Millisecond)
	item, _ := pairs[0].q.Get()
	if _, err := pairs[1].r.Reconcile(context.Background(), item); err != nil {
		t.Fatal(err)
	}
	if _, err := pairs[0].r.Reconcile(context.Background(), item); err != nil {
		t.Fatal(err)
	}
	pairs[0].q.Done(item)
	spans := tt.spans.Ended()
	if _, ok := spanAttr(spans[0], semconv.QueueWaitKey); ok {
		t.Errorf("the second manager's reconcile got the first manager's queue wait")
	}
	if v, ok := spanAttr(spans[1], semconv.QueueWaitKey); !ok || v.AsFloat64() < 0.025 {
		t.Errorf("the first manager's reconcile must carry its queue wait (>= 30ms), got %v %v", v.AsFloat64(), ok)
	}
}

// TestQueueAloneDoesNotGrow: a tapped queue whose items are never reconciled by our decorator
// (a queue used on its own) keeps nothing once each item is done: 100,000 distinct objects
// leave no entries and no heap behind.
func TestQueueAloneDoesNotGrow(t *testing.T) {
	tt := newTestTelemetry(t)
	var tap *queueTap[reconcile.Request]
	link := &tapLink[reconcile.Request]{}
	q := newTappedQueue[reconcile.Request](func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
		return workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Name: name})
	}, newConfig(tt.opts), link)("alone", workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	t.Cleanup(q.ShutDown)
	tap = link.tap.Load()
	run := func(from, to int) {
		for i := from; i < to; i++ {
			q.Add(req("ns", fmt.Sprintf("obj-%d", i)))
			item, _ := q.Get()
			q.Forget(item)
			q.Done(item)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	run(0, 1000)
	before := heap()
	run(1000, 100_000)
	after := heap()
	tap.mu.Lock()
	due, taken := len(tap.due), len(tap.taken)
	tap.mu.Unlock()
	if due != 0 || taken != 0 {
		t.Errorf("after 100,000 objects the tap holds %d due and %d taken entries, want none", due, taken)
	}
	// 99,000 leaked entries would be several MiB; a flat heap moves by far less.
	if growth := int64(after) - int64(before); growth > 1<<20 {
		t.Errorf("heap grew by %d bytes over 99,000 distinct objects", growth)
	}
}
