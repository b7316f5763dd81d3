package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// reconcileRecord is the value of one spans record as the gateway writes it: a reconcile span
// with the instrumentation's attributes and children API-call spans.
func reconcileRecord(tb testing.TB, name, result string, d time.Duration, children int) []byte {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "workload-operator")
	rs.Resource().Attributes().PutStr("k8s.pod.name", "workload-operator-6c9f")
	ss := rs.ScopeSpans().AppendEmpty()
	start := time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)
	tid := pcommon.TraceID([16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	root := ss.Spans().AppendEmpty()
	root.SetName("reconcile workload")
	root.SetTraceID(tid)
	root.SetSpanID(pcommon.SpanID([8]byte{1}))
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(d)))
	a := root.Attributes()
	a.PutStr(attrController, "workload")
	a.PutStr("watchtower.controller.group", "demo.gowatchtower.io")
	a.PutStr("watchtower.controller.kind", "Workload")
	a.PutStr(attrNamespace, "default")
	a.PutStr(attrName, name)
	a.PutStr("watchtower.reconcile.id", "54fa893c-1e29-4ab4-9375-a0abda8c0e94")
	a.PutStr(attrResult, result)
	a.PutDouble("watchtower.queue.wait", 0.0002)
	a.PutInt("watchtower.queue.retries", 0)
	a.PutInt("watchtower.trigger.count", 1)
	a.PutStr("watchtower.trigger.event", "update")
	if result == "error" {
		root.Status().SetCode(ptrace.StatusCodeError)
		root.Status().SetMessage("workload " + name + " asks to fail")
	}
	for i := range children {
		c := ss.Spans().AppendEmpty()
		c.SetName("get Deployment (cache)")
		c.SetTraceID(tid)
		c.SetSpanID(pcommon.SpanID([8]byte{2, byte(i)}))
		c.SetParentSpanID(root.SpanID())
		c.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		c.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Millisecond)))
		c.Attributes().PutStr("watchtower.api.source", "cache")
	}
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestTailPrintsSlowAndFailedReconciles(t *testing.T) {
	f := filter{minDuration: time.Second}
	for _, tc := range []struct {
		name, result string
		d            time.Duration
		want         bool
	}{
		{"fast", "success", 20 * time.Millisecond, false},
		{"slow", "success", 1500 * time.Millisecond, true},
		{"broken", "terminal_error", time.Millisecond, true},
		{"flaky", "error", time.Millisecond, true},
		{"busy", "conflict", time.Millisecond, false},
	} {
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(reconcileRecord(t, tc.name, tc.result, tc.d, 3))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		reconciles(td, func(r reconcile) {
			n++
			if got := f.match(r); got != tc.want {
				t.Errorf("%s (%s, %s): printed %v, want %v", tc.name, tc.result, tc.d, got, tc.want)
			}
			if r.Namespace != "default" || r.Name != tc.name || r.Controller != "workload" || r.Duration != tc.d || r.Service != "workload-operator" {
				t.Errorf("read %+v", r)
			}
		})
		if n != 1 {
			t.Errorf("%s: %d reconciles read, want 1 (the API-call children are not reconciles)", tc.name, n)
		}
	}
	if !(filter{all: true}).match(reconcile{Result: "success"}) || (filter{controller: "other", all: true}).match(reconcile{Controller: "workload"}) {
		t.Error("-all and -controller")
	}
}

func TestCommandLineRefusesWhatItDoesNotKnow(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"kafka", "follow"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "kafka follow"`) {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"kafka", "tail", "-min-duration", "soon"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-min-duration") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

// BenchmarkTail is the tail's cost per record of a reconcile trace (a reconcile span with 11
// attributes and 6 children): decoding and filtering, against decoding alone. The spans/s it
// reports is what one core keeps up with.
func BenchmarkTail(b *testing.B) {
	rec := reconcileRecord(b, "slow-memory", "success", 1500*time.Millisecond, 6)
	f := filter{minDuration: time.Second}
	b.Run("decode-only", func(b *testing.B) {
		var un ptrace.ProtoUnmarshaler
		b.ReportAllocs()
		for b.Loop() {
			if _, err := un.UnmarshalTraces(rec); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(7*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
	})
	b.Run("tail", func(b *testing.B) {
		var un ptrace.ProtoUnmarshaler
		matched := 0
		b.ReportAllocs()
		for b.Loop() {
			td, err := un.UnmarshalTraces(rec)
			if err != nil {
				b.Fatal(err)
			}
			reconciles(td, func(r reconcile) {
				if f.match(r) {
					matched++
				}
			})
		}
		if matched != b.N {
			b.Fatalf("matched %d of %d", matched, b.N)
		}
		b.ReportMetric(7*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
	})
}
