package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// runner is the demo's harness.TB: components log through it, a fatal error aborts the start
// (main recovers it and stops what was started), and cleanups run in reverse order on Ctrl-C.
type runner struct {
	dir string
	// interrupted is closed on Ctrl-C; the running demo's loop returns on it.
	interrupted chan struct{}
	ready       atomic.Bool

	mu       sync.Mutex
	cleanups []func()
	stopped  bool
	failed   bool
	n        int
}

func newRunner(dir string) *runner { return &runner{dir: dir, interrupted: make(chan struct{})} }

// markReady records that everything started: a Ctrl-C from now on is the normal way out.
func (r *runner) markReady() { r.ready.Store(true) }

// interrupt handles the first Ctrl-C and returns the exit code. A ready demo's loop returns by
// itself; one still starting is blocked in a component's start, so what has started is
// stopped under it, which makes that start fail and the stack return.
func (r *runner) interrupt(done <-chan int) int {
	close(r.interrupted)
	if r.ready.Load() {
		select {
		case code := <-done:
			return code
		case <-time.After(5 * time.Second):
		}
	}
	r.stop()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	if r.ready.Load() {
		return 0
	}
	return 130
}

type abort struct{ msg string }

func (r *runner) Helper()                         {}
func (r *runner) Logf(format string, args ...any) { fmt.Printf("demo: "+format+"\n", args...) }
func (r *runner) Errorf(format string, args ...any) {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}
func (r *runner) Fatalf(format string, args ...any) { panic(abort{fmt.Sprintf(format, args...)}) }
func (r *runner) Fatal(args ...any)                 { panic(abort{fmt.Sprint(args...)}) }
func (r *runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Cleanup registers f to run at stop; once the demo is stopping, f runs at once (a component
// that finished starting during the stop must not outlive it).
func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		f()
		return
	}
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// TempDir returns a fresh directory under the demo's state directory (kept after the demo for
// the logs; the next run starts clean).
func (r *runner) TempDir() string {
	r.mu.Lock()
	r.n++
	n := r.n
	r.mu.Unlock()
	d := filepath.Join(r.dir, fmt.Sprintf("%03d", n))
	if err := os.MkdirAll(d, 0o755); err != nil {
		panic(abort{err.Error()})
	}
	return d
}

// guard runs the demo's stack, turning a Fatal (an abort panic) into exit status 1.
func (r *runner) guard(stack func() int) (code int) {
	defer func() {
		if v := recover(); v != nil {
			a, ok := v.(abort)
			if !ok {
				panic(v)
			}
			fmt.Fprintln(os.Stderr, "demo: failed:", a.msg)
			code = 1
		}
	}()
	return stack()
}

// ArtifactDir is where a failing cluster's component logs are copied (harness keepLogs).
func (r *runner) ArtifactDir() string { return r.dir }

// stop runs the cleanups, newest first.
func (r *runner) stop() {
	r.mu.Lock()
	cs := r.cleanups
	r.cleanups = nil
	r.stopped = true
	r.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
