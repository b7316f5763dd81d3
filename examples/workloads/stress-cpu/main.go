// Command stress-cpu burns the CPU it is given, for GoWatchtower's example operator: a Workload
// of type stress-cpu runs it with -cpus from spec.load. It spins ceil(cpus) worker goroutines,
// each busy for its share of every period (so -cpus=0.5 is one worker busy half the time, and
// -cpus=1.5 two workers busy 75% of the time), until SIGTERM or SIGINT, then exits 0.
//
// The program only asks for CPU; the container's CPU limit (the CFS quota) is what really bounds
// it, which is what the example wants to show: a burner held at its limit is throttled, visibly.
// It has no dependency beyond the standard library so that its image is one static binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// period is one duty cycle: short enough that the load looks flat to a 1s scrape or to the CFS
// quota's 100ms period, long enough that the sleeps are not dominated by timer overhead.
const period = 100 * time.Millisecond

// maxCPUs bounds -cpus: a typo must not spawn a million goroutines.
const maxCPUs = 256

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "stress-cpu:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
}

// run parses args, says what it does, and burns until ctx is done.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("stress-cpu", flag.ContinueOnError)
	fs.SetOutput(out)
	cpus := fs.Float64("cpus", 1, "CPUs to burn, e.g. 0.5, 1 or 2 (the container's CPU limit still bounds it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	p, err := newPlan(*cpus)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "stress-cpu: burning %g CPU as %d worker(s) busy %.0f%% of every %s until SIGTERM\n",
		*cpus, p.workers, p.duty*100, period)
	burn(ctx, p)
	fmt.Fprintln(out, "stress-cpu: stopped")
	return nil
}

// plan is how a CPU amount is spread over workers: every worker runs the same duty cycle.
type plan struct {
	workers int
	duty    float64 // fraction of each period a worker spins, in (0, 1]
}

func newPlan(cpus float64) (plan, error) {
	if math.IsNaN(cpus) || cpus <= 0 || cpus > maxCPUs {
		return plan{}, fmt.Errorf("-cpus=%g: want more than 0 and at most %d", cpus, maxCPUs)
	}
	n := int(math.Ceil(cpus))
	return plan{workers: n, duty: cpus / float64(n)}, nil
}

// burn runs the plan's workers until ctx is done and returns when all have stopped.
func burn(ctx context.Context, p plan) {
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() { work(ctx, p.duty) })
	}
	wg.Wait()
}

// work spins for duty of every period and sleeps for the rest. It checks ctx between short
// spins so that SIGTERM stops it within a fraction of a period.
func work(ctx context.Context, duty float64) {
	busy := time.Duration(float64(period) * duty)
	x := uint64(1)
	defer func() { sink.Add(x) }()
	for ctx.Err() == nil {
		start := time.Now()
		for time.Since(start) < busy {
			x = spin(x)
			if ctx.Err() != nil {
				return
			}
		}
		if idle := period - time.Since(start); idle > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(idle):
			}
		}
	}
}

// sink receives every worker's result, so that the compiler cannot drop spin's arithmetic.
var sink atomic.Uint64

// spin does a few microseconds of integer work (xorshift steps) and returns its result.
func spin(x uint64) uint64 {
	for range 2000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}
