package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// prometheus reads Prometheus' HTTP API (/api/v1/...), which Thanos, Mimir and VictoriaMetrics
// serve as well.
type prometheus struct {
	base string
	http *http.Client
}

// sample is one series' value at one instant.
type sample struct {
	Labels map[string]string
	Value  float64
}

// series is one series over a range.
type series struct {
	Labels map[string]string
	Points []point
}

type point struct {
	T time.Time
	V float64
}

// exemplar is one exemplar of a histogram bucket: a trace that landed in it.
type exemplar struct {
	Series  map[string]string
	TraceID string
	Value   float64
	T       time.Time
}

func (p *prometheus) call(ctx context.Context, path string, q url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path, nil)
	if err != nil {
		return err
	}
	req.URL.RawQuery = q.Encode()
	resp, err := p.http.Do(req)
	if err != nil {
		return backendError("Prometheus", p.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return backendError("Prometheus", p.base, err)
	}
	var body struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return fmt.Errorf("the Prometheus API at %s answered %s to %s with something that is not its API's JSON: %.120q", p.base, resp.Status, path, b)
	}
	if body.Status != "success" {
		return fmt.Errorf("the Prometheus API at %s refused %s: %s", p.base, q.Get("query"), body.Error)
	}
	return json.Unmarshal(body.Data, out)
}

func parseValue(v [2]any) (time.Time, float64) {
	ts, _ := v[0].(float64)
	s, _ := v[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		f = math.NaN()
	}
	return time.UnixMilli(int64(ts * 1000)), f
}

// query evaluates an instant vector expression now.
func (p *prometheus) query(ctx context.Context, expr string) ([]sample, error) {
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.call(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	out := make([]sample, 0, len(data.Result))
	for _, r := range data.Result {
		_, v := parseValue(r.Value)
		out = append(out, sample{Labels: r.Metric, Value: v})
	}
	return out, nil
}

// queryRange evaluates expr over [end-span, end] every step.
func (p *prometheus) queryRange(ctx context.Context, expr string, end time.Time, span, step time.Duration) ([]series, error) {
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	q := url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(end.Add(-span).Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	if err := p.call(ctx, "/api/v1/query_range", q, &data); err != nil {
		return nil, err
	}
	out := make([]series, 0, len(data.Result))
	for _, r := range data.Result {
		s := series{Labels: r.Metric, Points: make([]point, 0, len(r.Values))}
		for _, v := range r.Values {
			t, f := parseValue(v)
			s.Points = append(s.Points, point{T: t, V: f})
		}
		out = append(out, s)
	}
	return out, nil
}

// queryInto is a query to run with parallel: f gets its result under mu, so that the queries of
// one page may fill the same rows.
func (p *prometheus) queryInto(ctx context.Context, mu *sync.Mutex, expr string, f func([]sample)) func() error {
	return func() error {
		res, err := p.query(ctx, expr)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		f(res)
		return nil
	}
}

// rangeInto is queryRange to run with parallel, as queryInto: 60 points over the span.
func (p *prometheus) rangeInto(ctx context.Context, mu *sync.Mutex, expr string, end time.Time, span time.Duration, f func([]series)) func() error {
	return func() error {
		res, err := p.queryRange(ctx, expr, end, span, span/60)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		f(res)
		return nil
	}
}

// exemplars returns the exemplars (with a trace_id) of the series selector selects.
func (p *prometheus) exemplars(ctx context.Context, selector string, end time.Time, span time.Duration) ([]exemplar, error) {
	var data []struct {
		SeriesLabels map[string]string `json:"seriesLabels"`
		Exemplars    []struct {
			Labels    map[string]string `json:"labels"`
			Value     string            `json:"value"`
			Timestamp float64           `json:"timestamp"`
		} `json:"exemplars"`
	}
	q := url.Values{
		"query": {selector},
		"start": {strconv.FormatInt(end.Add(-span).Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
	}
	if err := p.call(ctx, "/api/v1/query_exemplars", q, &data); err != nil {
		return nil, err
	}
	var out []exemplar
	for _, s := range data {
		for _, e := range s.Exemplars {
			id := e.Labels["trace_id"]
			if id == "" {
				id = e.Labels["traceID"]
			}
			if id == "" {
				continue
			}
			v, _ := strconv.ParseFloat(e.Value, 64)
			out = append(out, exemplar{Series: s.SeriesLabels, TraceID: id, Value: v, T: time.UnixMilli(int64(e.Timestamp * 1000))})
		}
	}
	return out, nil
}
