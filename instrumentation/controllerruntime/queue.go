package otelctrl

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"

	"github.com/gowatchtower/watchtower/semconv"
)

// newQueueFunc is the type of controller.TypedOptions.NewQueue.
type newQueueFunc[req comparable] = func(controllerName string, rateLimiter workqueue.TypedRateLimiter[req]) workqueue.TypedRateLimitingInterface[req]

// tapLink hands a controller's queue tap to its reconciler: the queue is built when the
// controller starts, after the reconciler.
type tapLink[req comparable] struct{ tap atomic.Pointer[queueTap[req]] }

// newTappedQueue returns a controller.Options NewQueue function that builds the queue with
// newQueue (nil means controller-runtime's default, the priority queue) and taps it for:
//
//   - queue wait: the time from when a request became due (added, or its delay or backoff
//     elapsed) to when a worker took it, as the watchtower.queue.wait histogram and, through
//     link, as an attribute of the reconcile span together with the request's retry count;
//   - watchtower.queue.adds by add kind: fresh work from event handlers, rate-limited requeues
//     after errors, and delayed requeues.
//
// The tap wraps the queue and its rate limiter; it does not replace controller-runtime's
// process-global workqueue metrics provider, so workqueue_* metrics are unchanged. A priority
// queue stays a priority queue.
func newTappedQueue[req comparable](newQueue newQueueFunc[req], cfg config, link *tapLink[req]) newQueueFunc[req] {
	in := instrumentsFor(cfg.meterProvider)
	return func(controllerName string, rateLimiter workqueue.TypedRateLimiter[req]) workqueue.TypedRateLimitingInterface[req] {
		tap := newQueueTap[req](controllerName, in)
		limiter := &tappedLimiter[req]{TypedRateLimiter: rateLimiter, tap: tap}
		var inner workqueue.TypedRateLimitingInterface[req]
		if newQueue != nil {
			inner = newQueue(controllerName, limiter)
		} else {
			inner = priorityqueue.New(controllerName, func(o *priorityqueue.Opts[req]) { o.RateLimiter = limiter })
		}
		tap.numRequeues = inner.NumRequeues
		if link != nil {
			link.tap.Store(tap)
		}
		if pq, ok := inner.(priorityqueue.PriorityQueue[req]); ok {
			return &tappedPriorityQueue[req]{tappedQueue: tappedQueue[req]{TypedRateLimitingInterface: inner, tap: tap}, pq: pq}
		}
		return &tappedQueue[req]{TypedRateLimitingInterface: inner, tap: tap}
	}
}

// pending is a queued request's entry: when it became due (zero until its Add, for a trigger
// recorded just before) and what added it.
type pending struct {
	at   time.Time
	trig *triggers
}

type started struct {
	wait    time.Duration
	retries int
	trig    *triggers // nil: nothing recorded what added the request
}

type queueTap[req comparable] struct {
	in          *instruments
	addOpts     [3][]metric.AddOption
	numRequeues func(req) int

	mu sync.Mutex
	// due holds, per request in the queue, the earliest time it became (or becomes) due and
	// what added it (triggers.go): one map entry per request, so that recording a trigger costs
	// no map operation of its own. Its size is bounded by the queue's, which deduplicates
	// requests (and by maxPendingTriggers for triggers recorded just before their Add).
	due map[req]pending
	// taken holds the wait of requests a worker took, until their reconcile takes it or the
	// worker marks them done: its size is bounded by the number of workers.
	taken map[req]started
	// running holds the span of each request being reconciled, for the links of its requeues;
	// bounded by the number of workers.
	running map[req]trace.SpanContext
}

const (
	addFresh = iota
	addRateLimited
	addDelayed
)

func newQueueTap[req comparable](controller string, in *instruments) *queueTap[req] {
	t := &queueTap[req]{in: in, due: map[req]pending{}, taken: map[req]started{}, running: map[req]trace.SpanContext{}}
	for kind, kv := range map[int]attribute.KeyValue{addFresh: semconv.QueueAddKindFresh, addRateLimited: semconv.QueueAddKindRateLimited, addDelayed: semconv.QueueAddKindDelayed} {
		t.addOpts[kind] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(semconv.ControllerName(controller), kv))}
	}
	return t
}

func (t *queueTap[req]) added(kind int, n int) {
	t.in.queueAdds.Add(context.Background(), int64(n), t.addOpts[kind]...)
}

// becomesDue records that item is due at 'at', keeping the earliest time for a request that is
// already queued (the queue deduplicates it).
func (t *queueTap[req]) becomesDue(item req, at time.Time) {
	t.mu.Lock()
	if p, ok := t.due[item]; !ok || p.at.IsZero() || at.Before(p.at) {
		p.at = at
		t.due[item] = p
	}
	t.mu.Unlock()
}

func (t *queueTap[req]) got(item req, shutdown bool) {
	if shutdown {
		return
	}
	now := time.Now()
	retries := 0
	if t.numRequeues != nil {
		retries = t.numRequeues(item)
	}
	t.mu.Lock()
	p := t.due[item]
	delete(t.due, item)
	wait := time.Duration(0)
	if !p.at.IsZero() && now.After(p.at) {
		wait = now.Sub(p.at)
	}
	t.taken[item] = started{wait: wait, retries: retries, trig: p.trig}
	t.mu.Unlock()
}

func (t *queueTap[req]) take(item req) (started, bool) {
	t.mu.Lock()
	s, ok := t.taken[item]
	if ok {
		delete(t.taken, item)
	}
	t.mu.Unlock()
	return s, ok
}

// done forgets item's processing: what its reconcile did not take, and its span.
func (t *queueTap[req]) done(item req) {
	t.mu.Lock()
	delete(t.taken, item)
	delete(t.running, item)
	t.mu.Unlock()
}

// tappedLimiter learns the backoff of each rate-limited requeue, i.e. when it becomes due.
type tappedLimiter[req comparable] struct {
	workqueue.TypedRateLimiter[req]
	tap *queueTap[req]
}

func (l *tappedLimiter[req]) When(item req) time.Duration {
	d := l.TypedRateLimiter.When(item)
	l.tap.becomesDue(item, time.Now().Add(d))
	return d
}

type tappedQueue[req comparable] struct {
	workqueue.TypedRateLimitingInterface[req]
	tap *queueTap[req]
}

func (q *tappedQueue[req]) Add(item req) {
	q.tap.becomesDue(item, time.Now())
	q.tap.added(addFresh, 1)
	q.TypedRateLimitingInterface.Add(item)
}

func (q *tappedQueue[req]) AddAfter(item req, d time.Duration) {
	q.tap.requeued(item, evRequeueAfter)
	q.tap.becomesDue(item, time.Now().Add(d))
	q.tap.added(addDelayed, 1)
	q.TypedRateLimitingInterface.AddAfter(item, d)
}

func (q *tappedQueue[req]) AddRateLimited(item req) {
	// The due time comes from the rate limiter's When, which the queue calls.
	q.tap.requeued(item, evRequeue)
	q.tap.added(addRateLimited, 1)
	q.TypedRateLimitingInterface.AddRateLimited(item)
}

// Done drops what the reconcile did not take (a queue used without our reconciler), so that
// nothing outlives the request's processing.
func (q *tappedQueue[req]) Done(item req) {
	q.tap.done(item)
	q.TypedRateLimitingInterface.Done(item)
}

func (q *tappedQueue[req]) Get() (req, bool) {
	item, shutdown := q.TypedRateLimitingInterface.Get()
	q.tap.got(item, shutdown)
	return item, shutdown
}

type tappedPriorityQueue[req comparable] struct {
	tappedQueue[req]
	pq priorityqueue.PriorityQueue[req]
}

func (q *tappedPriorityQueue[req]) AddWithOpts(o priorityqueue.AddOpts, items ...req) {
	switch {
	case o.RateLimited:
		for _, it := range items {
			q.tap.requeued(it, evRequeue)
		}
		q.tap.added(addRateLimited, len(items))
	case o.After > 0:
		at := time.Now().Add(o.After)
		for _, it := range items {
			q.tap.requeued(it, evRequeueAfter)
			q.tap.becomesDue(it, at)
		}
		q.tap.added(addDelayed, len(items))
	default:
		now := time.Now()
		for _, it := range items {
			q.tap.becomesDue(it, now)
		}
		q.tap.added(addFresh, len(items))
	}
	q.pq.AddWithOpts(o, items...)
}

func (q *tappedPriorityQueue[req]) GetWithPriority() (req, int, bool) {
	item, prio, shutdown := q.pq.GetWithPriority()
	q.tap.got(item, shutdown)
	return item, prio, shutdown
}
