package otelctrl

import (
	"context"
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
			var inner NewQueueFunc[reconcile.Request]
			if kind == "classic" {
				inner = func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
					return workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Name: name})
				}
			}
			name := "queue-" + kind
			q := NewQueue(inner, tt.opts...)(name, workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](time.Millisecond, time.Millisecond))
			t.Cleanup(q.ShutDown)
			if _, isPQ := q.(priorityqueue.PriorityQueue[reconcile.Request]); isPQ != (kind == "priority") {
				t.Fatalf("the tapped queue must keep the priority-queue interface exactly when the inner queue has it")
			}

			r := NewReconciler(name, reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil }), tt.opts...)
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
