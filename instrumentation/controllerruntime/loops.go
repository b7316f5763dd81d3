package otelctrl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/gowatchtower/watchtower/semconv"
)

// Hot loops and stuck objects. A controller hot-loops on an object when it reconciles it again
// and again without the object's spec changing (its generation stays put): a status write with
// a timestamp, an owned object two writers fight over, a requeue that never ends. An object is
// stuck when its reconciles keep failing, for longer than anyone would wait. Both are counted
// per controller (gauges without object labels), named once in the log when an object enters
// and leaves the state, marked on the offending reconcile's span, and listed at
// /debug/watchtower (NewManager serves it on the metrics server).

// Defaults users would pick: a healthy controller reconciles an object a handful of times per
// change; twenty times a minute without a change is a loop. Ten minutes of failures outlasts
// any rollout or transient outage.
const (
	defaultHotLoopReconciles = 20
	defaultHotLoopWindow     = time.Minute
	defaultStuckAfter        = 10 * time.Minute
	// maxTrackedObjects bounds each controller's bookkeeping; past it, objects not seen for a
	// window are dropped first, and new objects are not tracked until there is room.
	maxTrackedObjects = 10_000
)

// Span events on the offending reconcile.
const (
	hotLoopEvent = "watchtower.hot_loop"
	stuckEvent   = "watchtower.stuck"
)

// WithHotLoopThreshold sets when an object counts as hot-looping: reconciled at least n times
// within window while its generation did not change (default 20 in 1 minute).
func WithHotLoopThreshold(n int, window time.Duration) Option {
	return optionFunc(func(c *config) {
		if n >= 2 && window > 0 {
			c.hotLoopReconciles, c.hotLoopWindow = n, window
		}
	})
}

// WithStuckAfter sets how long an object's reconciles must keep failing, without a success,
// before it counts as stuck (default 10 minutes).
func WithStuckAfter(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.stuckAfter = d
		}
	})
}

// loopDetector watches one controller's reconciles.
type loopDetector struct {
	controller string
	reconciles int
	window     time.Duration
	stuckAfter time.Duration
	log        logr.Logger

	mu     sync.Mutex
	objs   map[activeKey]*loopState
	pruned time.Time // the last prune of a full map
}

type loopState struct {
	gen          int64
	times        []int64 // ring of the latest reconcile starts (Unix ns) at this generation
	next, n      int
	hot          bool
	failingSince time.Time
	stuck        bool
	last         time.Time
	lastTrace    trace.TraceID
	lastResult   reconcileResult
}

func newLoopDetector(controller string, cfg config) *loopDetector {
	return &loopDetector{
		controller: controller,
		reconciles: cfg.hotLoopReconciles,
		window:     cfg.hotLoopWindow,
		stuckAfter: cfg.stuckAfter,
		log:        ctrllog.Log.WithName("watchtower").WithValues("controller", controller),
		objs:       map[activeKey]*loopState{},
	}
}

// failing is a result that, repeated, makes an object stuck. RequeueAfter is not: periodic
// reconciles are how controllers poll. Requeue: true is: controller-runtime retries it with
// backoff, as an error.
func failing(r reconcileResult) bool {
	switch r {
	case resultError, resultTerminalError, resultConflict, resultPanic, resultRequeue:
		return true
	}
	return false
}

// observe records a reconcile of key that started at start and ended with result; gen is the
// object's generation when a For event told it (known). It marks the span and logs state
// changes.
func (d *loopDetector) observe(ctx context.Context, key activeKey, gen int64, known bool, start time.Time, result reconcileResult, span trace.Span) {
	d.mu.Lock()
	st := d.objs[key]
	if st == nil {
		// Full: prune, but at most once a second, so that a controller with more objects than
		// the bound does not scan them all on every reconcile of an untracked one.
		if len(d.objs) >= maxTrackedObjects && start.Sub(d.pruned) >= time.Second {
			d.pruneLocked(start)
			d.pruned = start
		}
		if len(d.objs) >= maxTrackedObjects {
			d.mu.Unlock()
			return
		}
		st = &loopState{times: make([]int64, d.reconciles), gen: gen}
		d.objs[key] = st
	}
	if known && gen != st.gen {
		st.gen, st.n, st.next = gen, 0, 0
	}
	// A failing reconcile is retried with backoff, fast at first: it counts towards stuck, not
	// towards a hot loop.
	if !failing(result) {
		st.times[st.next] = start.UnixNano()
		st.next = (st.next + 1) % len(st.times)
		st.n = min(st.n+1, len(st.times))
	}
	st.last, st.lastTrace, st.lastResult = start, span.SpanContext().TraceID(), result
	// With the ring full, the slot next points at is the oldest of the last n reconciles.
	hot := st.n == len(st.times) && start.UnixNano()-st.times[st.next] <= int64(d.window)
	enteredHot, leftHot := hot && !st.hot, !hot && st.hot
	st.hot = hot
	var enteredStuck, leftStuck bool
	if failing(result) {
		if st.failingSince.IsZero() {
			st.failingSince = start
		}
		if !st.stuck && start.Sub(st.failingSince) >= d.stuckAfter {
			st.stuck, enteredStuck = true, true
		}
	} else {
		leftStuck = st.stuck
		st.failingSince, st.stuck = time.Time{}, false
	}
	failingFor := time.Duration(0)
	if !st.failingSince.IsZero() {
		failingFor = start.Sub(st.failingSince)
	}
	stuck, gen0 := st.stuck, st.gen
	d.mu.Unlock()

	if hot && span.IsRecording() {
		span.AddEvent(hotLoopEvent, trace.WithAttributes(
			attribute.Int("watchtower.hot_loop.reconciles", d.reconciles),
			attribute.Float64("watchtower.hot_loop.window", d.window.Seconds()),
			semconv.TriggerObjectGeneration(int(gen0))))
	}
	if stuck && span.IsRecording() {
		span.AddEvent(stuckEvent, trace.WithAttributes(attribute.Float64("watchtower.stuck.failing_for", failingFor.Seconds())))
	}
	if !enteredHot && !leftHot && !enteredStuck && !leftStuck {
		return
	}
	// The reconcile's logger names the controller and the object.
	log := ctrllog.FromContext(ctx).WithName("watchtower")
	switch {
	case enteredHot:
		log.Info("hot loop: the object is reconciled again and again while its generation does not change",
			"reconciles", d.reconciles, "within", d.window.String(), "generation", gen0)
	case leftHot:
		log.Info("hot loop ended")
	}
	switch {
	case enteredStuck:
		log.Info("stuck: the object's reconciles keep failing", "failingFor", failingFor.Round(time.Second).String())
	case leftStuck:
		log.Info("no longer stuck: a reconcile succeeded")
	}
}

// sweep ends the hot loops of objects no longer reconciled, marks as stuck the failing objects
// whose last failure was long enough after the first (and those not retried since), drops
// what is stale, and returns the counts for the gauges.
func (d *loopDetector) sweep(now time.Time) (hot, stuck int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for key, st := range d.objs {
		if st.hot && now.Sub(st.last) > d.window {
			st.hot = false
			d.log.Info("hot loop ended", "object", key.String())
		}
		if !st.stuck && !st.failingSince.IsZero() && now.Sub(st.failingSince) >= d.stuckAfter {
			st.stuck = true
			d.log.Info("stuck: the object's reconciles keep failing", "object", key.String(), "failingFor", now.Sub(st.failingSince).Round(time.Second).String())
		}
		if st.hot {
			hot++
		}
		if st.stuck {
			stuck++
		}
	}
	d.pruneLocked(now)
	return hot, stuck
}

// pruneLocked drops objects that are neither hot nor failing and were not reconciled within
// a window.
func (d *loopDetector) pruneLocked(now time.Time) {
	for key, st := range d.objs {
		if !st.hot && st.failingSince.IsZero() && now.Sub(st.last) > d.window {
			delete(d.objs, key)
		}
	}
}

// debugObject is one object in /debug/watchtower.
type debugObject struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Kind      string `json:"kind,omitempty"`
	// Reconciles is how many reconciles of the object started within the window (at its
	// current generation), up to the hot-loop threshold.
	Reconciles int     `json:"reconcilesInWindow"`
	HotLoop    bool    `json:"hotLoop"`
	Stuck      bool    `json:"stuck"`
	FailingFor float64 `json:"failingForSeconds,omitempty"`
	LastResult string  `json:"lastResult"`
	LastTrace  string  `json:"lastTraceID,omitempty"`
}

type debugController struct {
	Controller     string        `json:"controller"`
	HotLoopRule    string        `json:"hotLoopRule"`
	StuckAfter     string        `json:"stuckAfter"`
	Tracked        int           `json:"trackedObjects"`
	TopByReconcile []debugObject `json:"topByReconciles"`
	LongestStuck   []debugObject `json:"longestFailing"`
}

// debug is the controller's entry at /debug/watchtower: the top objects by reconciles within
// the window and the longest failing ones, at most top of each.
func (d *loopDetector) debug(now time.Time, top int) debugController {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := debugController{
		Controller:  d.controller,
		HotLoopRule: fmt.Sprintf("%d reconciles within %s at one generation", d.reconciles, d.window),
		StuckAfter:  d.stuckAfter.String(),
		Tracked:     len(d.objs),
	}
	var all []debugObject
	for key, st := range d.objs {
		o := debugObject{Namespace: key.Namespace, Name: key.Name, Kind: key.gk.Kind, HotLoop: st.hot, Stuck: st.stuck, LastResult: resultAttrs[st.lastResult].Value.AsString()}
		for _, t := range st.times[:st.n] {
			if now.UnixNano()-t <= int64(d.window) {
				o.Reconciles++
			}
		}
		if !st.failingSince.IsZero() {
			o.FailingFor = now.Sub(st.failingSince).Seconds()
		}
		if st.lastTrace.IsValid() {
			o.LastTrace = st.lastTrace.String()
		}
		all = append(all, o)
	}
	byRate := slices.Clone(all)
	slices.SortFunc(byRate, func(a, b debugObject) int { return b.Reconciles - a.Reconciles })
	for _, o := range byRate[:min(top, len(byRate))] {
		if o.Reconciles > 0 {
			out.TopByReconcile = append(out.TopByReconcile, o)
		}
	}
	slices.SortFunc(all, func(a, b debugObject) int { return int(b.FailingFor - a.FailingFor) })
	for _, o := range all[:min(top, len(all))] {
		if o.FailingFor > 0 {
			out.LongestStuck = append(out.LongestStuck, o)
		}
	}
	return out
}

// loopRegistry is a manager's detectors, for /debug/watchtower.
type loopRegistry struct {
	mu        sync.Mutex
	detectors []*loopDetector
}

func (r *loopRegistry) add(d *loopDetector) {
	r.mu.Lock()
	r.detectors = append(r.detectors, d)
	r.mu.Unlock()
}

// ServeHTTP answers GET /debug/watchtower with every controller's top objects as JSON.
func (r *loopRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	ds := slices.Clone(r.detectors)
	r.mu.Unlock()
	now := time.Now()
	out := struct {
		Controllers []debugController `json:"controllers"`
	}{Controllers: []debugController{}}
	for _, d := range ds {
		out.Controllers = append(out.Controllers, d.debug(now, 10))
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
