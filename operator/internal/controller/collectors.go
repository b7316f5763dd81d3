package controller

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// telemetryPort is where otelcol-watchtower serves its own metrics (the chart's "telemetry").
const telemetryPort = "8888"

// The collector's own counters (it adds no _total suffix to them).
const (
	metricAccepted   = "otelcol_receiver_accepted_spans"
	metricRefused    = "otelcol_receiver_refused_spans"
	metricSendFailed = "otelcol_exporter_send_failed_spans"
)

// collectorReader reads the collectors' own metrics and remembers each pod's last reading, so
// that a check reports what failed since the previous one, not since the pod started.
type collectorReader struct {
	http *http.Client
	mu   sync.Mutex
	last map[types.UID]reading
}

// reading is one pod's counters at a time.
type reading struct {
	counts v1alpha1.SpanCounts
	at     time.Time
}

// readingTTL bounds the memory of pods gone: a reading not renewed for this long is dropped.
const readingTTL = 10 * time.Minute

func newCollectorReader() *collectorReader {
	return &collectorReader{
		http: &http.Client{Timeout: 2 * time.Second},
		last: map[types.UID]reading{},
	}
}

// read sums the counters of the running pods in ns that match selector, and describes what
// they refused or failed to send since the last read.
func (c *collectorReader) read(ctx context.Context, r client.Reader, ns string, selector map[string]string, workload string) (*v1alpha1.SpanCounts, []string, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(selector)); err != nil {
		return nil, nil, err
	}
	var total v1alpha1.SpanCounts
	var problems []string
	read := 0
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		cur, err := c.scrape(ctx, p.Status.PodIP)
		if err != nil {
			// A pod that does not answer is the readiness probe's business (Ready says so).
			continue
		}
		read++
		total.Accepted += cur.Accepted
		total.Refused += cur.Refused
		total.SendFailed += cur.SendFailed
		c.mu.Lock()
		last, seen := c.last[p.UID]
		c.last[p.UID] = reading{counts: cur, at: time.Now()}
		for uid, r := range c.last {
			if time.Since(r.at) > readingTTL {
				delete(c.last, uid)
			}
		}
		c.mu.Unlock()
		if !seen {
			continue
		}
		prev := last.counts
		if d := cur.Refused - prev.Refused; d > 0 {
			problems = append(problems, fmt.Sprintf("%s pod %s refused %d spans since the last check (memory limiter or a full queue)", workload, p.Name, d))
		}
		if d := cur.SendFailed - prev.SendFailed; d > 0 {
			problems = append(problems, fmt.Sprintf("%s pod %s failed to send %d spans since the last check", workload, p.Name, d))
		}
	}
	if read == 0 {
		return nil, problems, nil
	}
	return &total, problems, nil
}

func (c *collectorReader) scrape(ctx context.Context, ip string) (v1alpha1.SpanCounts, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, telemetryPort)+"/metrics", nil)
	if err != nil {
		return v1alpha1.SpanCounts{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return v1alpha1.SpanCounts{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v1alpha1.SpanCounts{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sums := sumSamples(io.LimitReader(resp.Body, 16<<20), metricAccepted, metricRefused, metricSendFailed)
	return v1alpha1.SpanCounts{
		Accepted: int64(sums[metricAccepted]), Refused: int64(sums[metricRefused]), SendFailed: int64(sums[metricSendFailed]),
	}, nil
}

// sumSamples sums, per metric name, the samples of the Prometheus text exposition in r.
func sumSamples(r io.Reader, names ...string) map[string]float64 {
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		for _, n := range names {
			if !strings.HasPrefix(line, n) || len(line) == len(n) || (line[len(n)] != '{' && line[len(n)] != ' ') {
				continue
			}
			// The value is the first field after the labels; a timestamp may follow it.
			rest := line[len(n):]
			if i := strings.LastIndexByte(rest, '}'); i >= 0 {
				rest = rest[i+1:]
			}
			f := strings.Fields(rest)
			if len(f) == 0 {
				continue
			}
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[n] += v
			}
		}
	}
	return out
}
