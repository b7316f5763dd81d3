package integration

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestSpanMetricsCardinalityIsBounded: an operator whose span names explode (an object name in
// a span name, say) cannot grow the gateway's span metrics without bound. With the limit at 10
// series, 40 distinct span names give 10 series of their own and one overflow series
// (otel_metric_overflow="true") holding the other 30 calls; every call is still counted.
func TestSpanMetricsCardinalityIsBounded(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	const limit, names = 10, 40
	_, gw := startGatewayStack(t,
		"WATCHTOWER_SPANMETRICS_CARDINALITY_LIMIT="+strconv.Itoa(limit),
		"WATCHTOWER_SPANMETRICS_FLUSH_INTERVAL=1s")
	ctx := ctxTimeout(t, 2*time.Minute)

	service := colUniqueService("exploding-span-names")
	td := ptrace.NewTraces()
	for i := range names {
		one := badTraces(service, func(s ptrace.Span) { s.SetName("reconcile object-" + strconv.Itoa(i)) })
		one.ResourceSpans().MoveAndAppendTo(td.ResourceSpans())
	}
	if code, msg := postOTLPTraces(ctx, gw.OTLPHTTP, marshalTraces(t, td), "application/x-protobuf", ""); code != http.StatusOK {
		t.Fatalf("sending %d spans: %d %s", names, code, msg)
	}

	// The gateway's Prometheus exporter, as Prometheus would scrape it.
	type series struct {
		labels string
		value  float64
	}
	var got []series
	waitFor(t, ctx, fmt.Sprintf("%d calls of %s in the span metrics", names, service), func() (bool, error) {
		resp, err := http.Get("http://" + gw.Prometheus + "/metrics")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		got = nil
		total := 0.0
		for _, line := range strings.Split(string(body), "\n") {
			// The overflow series has none of the dimensions (service_name among them): it is
			// the resource's, which the exporter names in job.
			if !strings.HasPrefix(line, colSpanMetricsCalls+"{") ||
				!strings.Contains(line, `service_name="`+service+`"`) && !strings.Contains(line, `job="`+service+`"`) {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				return false, fmt.Errorf("%q: %v", line, err)
			}
			got = append(got, series{line[:i], v})
			total += v
		}
		return total == names, fmt.Errorf("%v calls in %d series", total, len(got))
	})
	overflow := 0.0
	for _, s := range got {
		if strings.Contains(s.labels, `otel_metric_overflow="true"`) {
			overflow += s.value
		}
	}
	if len(got) != limit+1 || overflow != names-limit {
		t.Errorf("%d series, %v calls in the overflow series; want %d series of their own and one overflow series with %d calls:\n%v", len(got), overflow, limit, names-limit, got)
	}
	t.Logf("%d span names: %d series, the overflow series holding %v calls: %v", names, len(got), overflow, got[len(got)-1])
}
