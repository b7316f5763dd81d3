package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

type controllerStats struct {
	reconciles, failed, slow int
	durations                []time.Duration
}

func stats(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watchtower kafka stats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var k kafkaFlags
	k.register(fs, "otlp_spans")
	interval := fs.Duration("interval", 10*time.Second, "how long to read before printing")
	slowAt := fs.Duration("min-duration", time.Second, "a reconcile at least this long is slow")
	group := fs.String("group", "otelcol-watchtower-sampler", "the consumer group whose lag on the topic to print (empty: none)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "watchtower kafka stats: reconciles per controller read from the spans topic over an interval, and a consumer group's lag")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cl, err := k.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	per := map[string]*controllerStats{}
	spans, records := 0, 0
	var first, last time.Time // the reconciles' own start times: with -from-start, the rate is over them
	rctx, cancel := context.WithTimeout(ctx, *interval)
	defer cancel()
	var un ptrace.ProtoUnmarshaler
	for rctx.Err() == nil {
		fetches := cl.PollFetches(rctx)
		fetches.EachRecord(func(r *kgo.Record) {
			records++
			td, err := un.UnmarshalTraces(r.Value)
			if err != nil {
				return
			}
			spans += td.SpanCount()
			reconciles(td, func(rc reconcile) {
				key := rc.Service + "/" + rc.Controller
				s := per[key]
				if s == nil {
					s = &controllerStats{}
					per[key] = s
				}
				s.reconciles++
				if first.IsZero() || rc.Time.Before(first) {
					first = rc.Time
				}
				if rc.Time.After(last) {
					last = rc.Time
				}
				s.durations = append(s.durations, rc.Duration)
				if failed(rc.Result) {
					s.failed++
				}
				if rc.Duration >= *slowAt {
					s.slow++
				}
			})
		})
	}
	if ctx.Err() != nil {
		return nil
	}
	window := *interval
	if k.fromStart && last.Sub(first) > time.Second {
		window = last.Sub(first)
	}
	secs := window.Seconds()
	fmt.Fprintf(stdout, "%s: %d records read in %s; rates over %s of reconciles: %.0f spans/s\n\n", k.topic, records, *interval, window.Round(time.Second), float64(spans)/secs)
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "service/controller\treconciles/s\tfailed\tslow\tp50\tp99\t")
	keys := make([]string, 0, len(per))
	for key := range per {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		s := per[key]
		slices.Sort(s.durations)
		q := func(p float64) time.Duration { return s.durations[int(p*float64(len(s.durations)-1))] }
		fmt.Fprintf(w, "%s\t%.2f\t%d\t%d\t%s\t%s\t\n", key, float64(s.reconciles)/secs, s.failed, s.slow, q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond))
	}
	w.Flush()
	if *group == "" {
		return nil
	}
	adm := kadm.NewClient(cl)
	lags, err := adm.Lag(ctx, *group)
	if err != nil {
		return fmt.Errorf("the lag of group %s: %w", *group, err)
	}
	gl, ok := lags[*group]
	if !ok || gl.Error() != nil {
		fmt.Fprintf(stdout, "\ngroup %s: no lag known (%v)\n", *group, gl.Error())
		return nil
	}
	var parts []string
	total := int64(0)
	for _, l := range gl.Lag.Sorted() {
		if l.Topic != k.topic {
			continue
		}
		total += l.Lag
		parts = append(parts, fmt.Sprintf("%d:%d", l.Partition, l.Lag))
	}
	fmt.Fprintf(stdout, "\ngroup %s on %s: lag %d records (partition:lag %s)\n", *group, k.topic, total, strings.Join(parts, " "))
	return nil
}
