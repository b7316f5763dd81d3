package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

var errUsage = errors.New("usage")

// filter selects the reconciles the tail prints.
type filter struct {
	controller, namespace, object, result string
	minDuration                           time.Duration
	all                                   bool
}

func (f filter) match(r reconcile) bool {
	if (f.controller != "" && r.Controller != f.controller) || (f.namespace != "" && r.Namespace != f.namespace) ||
		(f.object != "" && r.Name != f.object) || (f.result != "" && r.Result != f.result) {
		return false
	}
	return f.all || f.result != "" || failed(r.Result) || r.Duration >= f.minDuration
}

type kafkaFlags struct {
	brokers, topic string
	fromStart      bool
}

func (k *kafkaFlags) register(fs *flag.FlagSet, topic string) {
	fs.StringVar(&k.brokers, "brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, host:port, comma-separated")
	fs.StringVar(&k.topic, "topic", topic, "the topic to read")
	fs.BoolVar(&k.fromStart, "from-start", false, "read the retained records first, not only new ones")
}

// client reads the topic directly, outside any consumer group: a tail commits nothing and takes
// no partition from anyone.
func (k *kafkaFlags) client() (*kgo.Client, error) {
	off := kgo.NewOffset().AtEnd()
	if k.fromStart {
		off = kgo.NewOffset().AtStart()
	}
	return kgo.NewClient(kgo.SeedBrokers(strings.Split(k.brokers, ",")...), kgo.ConsumeTopics(k.topic),
		kgo.ConsumeResetOffset(off), kgo.FetchMaxBytes(16<<20))
}

func tail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watchtower kafka tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var k kafkaFlags
	k.register(fs, "otlp_spans")
	var f filter
	fs.StringVar(&f.controller, "controller", "", "only this controller")
	fs.StringVar(&f.namespace, "namespace", "", "only objects of this namespace")
	fs.StringVar(&f.object, "object", "", "only objects of this name")
	fs.StringVar(&f.result, "result", "", "only this result (success, error, terminal_error, panic, conflict, requeue, requeue_after)")
	fs.DurationVar(&f.minDuration, "min-duration", time.Second, "a reconcile at least this long is slow")
	fs.BoolVar(&f.all, "all", false, "every reconcile, not only the slow and failed ones")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	count := fs.Int("n", 0, "stop after printing this many (0: follow until interrupted)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "watchtower kafka tail: print slow and failed reconciles from the spans topic as they arrive")
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
	printed := 0
	enc := json.NewEncoder(stdout)
	var un ptrace.ProtoUnmarshaler
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		for _, fe := range fetches.Errors() {
			if !kgo.IsRetryableBrokerErr(fe.Err) {
				return fmt.Errorf("reading %s: %w", fe.Topic, fe.Err)
			}
		}
		var stop error
		fetches.EachRecord(func(r *kgo.Record) {
			if stop != nil {
				return
			}
			td, err := un.UnmarshalTraces(r.Value)
			if err != nil {
				fmt.Fprintf(stderr, "watchtower: %s[%d]@%d is not OTLP protobuf spans, skipped: %v\n", r.Topic, r.Partition, r.Offset, err)
				return
			}
			reconciles(td, func(rc reconcile) {
				if stop != nil || !f.match(rc) {
					return
				}
				if *asJSON {
					stop = enc.Encode(rc)
				} else {
					obj := rc.Name
					if rc.Namespace != "" {
						obj = rc.Namespace + "/" + rc.Name
					}
					_, stop = fmt.Fprintf(stdout, "%s  %-20s %-40s %-14s %10s  %s%s\n", rc.Time.Local().Format("15:04:05.000"), rc.Controller, obj, rc.Result,
						rc.Duration.Round(time.Millisecond/10), rc.TraceID, errSuffix(rc.Error))
				}
				printed++
				if *count > 0 && printed >= *count && stop == nil {
					stop = errDone
				}
			})
		})
		if errors.Is(stop, errDone) {
			return nil
		}
		if stop != nil {
			return stop
		}
	}
}

var errDone = errors.New("done")

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return "  " + e
}
