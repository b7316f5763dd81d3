package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// runner is the demo's harness.TB: components log through it, a fatal error aborts the start
// (main recovers it and stops what was started), and cleanups run in reverse order on Ctrl-C.
type runner struct {
	dir string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	n        int
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

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
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
	r.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
