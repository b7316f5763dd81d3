package console

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gowatchtower/watchtower/semconv"
)

// The label names of the operators' metrics, as Prometheus shows them (dots become underscores).
const (
	lblController = "watchtower_controller_name"
	lblResult     = "watchtower_reconcile_result"
)

// failedResults are the reconcile results that are failures (a conflict or a requeue is not).
const failedResults = "error|terminal_error|panic"

// ranges are the time ranges a page offers, and the step of their charts.
var ranges = []struct {
	Name string
	Span time.Duration
}{{"15m", 15 * time.Minute}, {"1h", time.Hour}, {"6h", 6 * time.Hour}, {"24h", 24 * time.Hour}}

func parseRange(s string) (string, time.Duration) {
	for _, r := range ranges {
		if r.Name == s {
			return r.Name, r.Span
		}
	}
	return "1h", time.Hour
}

// controllerRow is one instrumented controller on the Controllers page.
type controllerRow struct {
	Name                   string
	Rate, ErrorRatio       float64
	P50, P99, QueueWaitP99 float64 // seconds
	APICalls, CacheReads   float64 // per reconcile
	HotLooping, Stuck      float64
	Failing                bool // some reconciles failed in the last 5 minutes
	RateSeries, P99Series  []point
	Exemplar               *exemplar // the slowest reconcile Prometheus holds an exemplar of
}

type controllersView struct {
	Range    string
	Ranges   []string
	Rows     []*controllerRow
	Selector string
}

// metric is a selector of one of the operators' metrics with the console's label matchers.
func (c *Console) metric(name string, matchers ...string) string {
	all := matchers
	if c.selector != "" {
		all = append([]string{c.selector}, matchers...)
	}
	s := name + "{"
	for i, m := range all {
		if i > 0 {
			s += ", "
		}
		s += m
	}
	return s + "}"
}

// The same metrics often reach Prometheus twice — scraped from the operator's /metrics and
// pushed through the collector's Prometheus exporter — under two jobs. Summing per job and then
// taking the largest counts them once; a metrics selector picks one path explicitly.
func perController(inner string) string {
	return fmt.Sprintf("max by (%s) (sum by (%s, job) (%s))", lblController, lblController, inner)
}

func quantile(q float64, bucket string) string {
	return fmt.Sprintf("histogram_quantile(%g, max by (%s, le) (sum by (%s, le, job) (rate(%s[5m]))))", q, lblController, lblController, bucket)
}

func (c *Console) controllersPage(w http.ResponseWriter, r *http.Request) error {
	rangeName, span := parseRange(r.URL.Query().Get("range"))
	view := &controllersView{Range: rangeName, Selector: c.selector}
	for _, rg := range ranges {
		view.Ranges = append(view.Ranges, rg.Name)
	}
	d := pageData{Title: "Controllers", Page: view}
	if !c.haveProm() {
		d.fail(errNoPrometheus)
		c.render(w, r, http.StatusOK, "controllers", d)
		return nil
	}
	rows, errs := c.controllers(r.Context(), time.Now(), span)
	view.Rows = rows
	d.Errors = messages(errs...)
	c.render(w, r, http.StatusOK, "controllers", d)
	return nil
}

func (c *Console) controllers(ctx context.Context, now time.Time, span time.Duration) ([]*controllerRow, []error) {
	reconciles := semconv.ReconcilesPrometheusName
	var (
		mu   sync.Mutex
		rows = map[string]*controllerRow{}
	)
	row := func(name string) *controllerRow {
		if rows[name] == nil {
			nan := math.NaN()
			rows[name] = &controllerRow{Name: name, Rate: nan, ErrorRatio: nan, P50: nan, P99: nan, QueueWaitP99: nan, APICalls: nan, CacheReads: nan}
		}
		return rows[name]
	}
	var rate, failed, apiCalls, cacheReads = map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	instant := func(expr string, set func(*controllerRow, float64)) func() error {
		return c.prom.queryInto(ctx, &mu, expr, func(res []sample) {
			for _, s := range res {
				if n := s.Labels[lblController]; n != "" {
					set(row(n), s.Value)
				}
			}
		})
	}
	into := func(m map[string]float64) func(*controllerRow, float64) {
		return func(r *controllerRow, v float64) { m[r.Name] = v }
	}
	rangeQ := func(expr string, set func(*controllerRow, []point)) func() error {
		return c.prom.rangeInto(ctx, &mu, expr, now, span, func(res []series) {
			for _, s := range res {
				if n := s.Labels[lblController]; n != "" {
					set(row(n), s.Points)
				}
			}
		})
	}
	durBucket := c.metric(semconv.ReconcileDurationPrometheusName + "_bucket")
	errs := parallel(
		instant(perController("rate("+c.metric(reconciles)+"[5m])"), into(rate)),
		instant(perController("rate("+c.metric(reconciles, lblResult+`=~"`+failedResults+`"`)+"[5m])"), into(failed)),
		instant(quantile(0.5, durBucket), func(r *controllerRow, v float64) { r.P50 = v }),
		instant(quantile(0.99, durBucket), func(r *controllerRow, v float64) { r.P99 = v }),
		instant(quantile(0.99, c.metric(semconv.QueueWaitPrometheusName+"_bucket")), func(r *controllerRow, v float64) { r.QueueWaitP99 = v }),
		instant(perController("rate("+c.metric(semconv.APIDurationPrometheusName+"_count")+"[5m])"), into(apiCalls)),
		instant(perController("rate("+c.metric(semconv.APICacheReadsPrometheusName)+"[5m])"), into(cacheReads)),
		instant(perController(c.metric(semconv.ControllerHotLoopingObjectsPrometheusName)), func(r *controllerRow, v float64) { r.HotLooping = v }),
		instant(perController(c.metric(semconv.ControllerStuckObjectsPrometheusName)), func(r *controllerRow, v float64) { r.Stuck = v }),
		rangeQ(perController("rate("+c.metric(reconciles)+"[5m])"), func(r *controllerRow, p []point) { r.RateSeries = p }),
		rangeQ(quantile(0.99, durBucket), func(r *controllerRow, p []point) { r.P99Series = p }),
		func() error {
			ex, err := c.prom.exemplars(ctx, durBucket, now, span)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for i := range ex {
				if n := ex[i].Series[lblController]; n != "" {
					if r := row(n); r.Exemplar == nil || ex[i].Value > r.Exemplar.Value {
						r.Exemplar = &ex[i]
					}
				}
			}
			return nil
		},
	)
	out := make([]*controllerRow, 0, len(rows))
	for name, r := range rows {
		r.Rate = orNaN(rate, name)
		if v, ok := rate[name]; ok && v > 0 {
			r.ErrorRatio = failed[name] / v
			r.Failing = r.ErrorRatio > 0
			r.APICalls = apiCalls[name] / v
			r.CacheReads = cacheReads[name] / v
		}
		out = append(out, r)
	}
	// Worst first: objects that loop or are stuck, then the error ratio, then the p99.
	slices.SortFunc(out, func(a, b *controllerRow) int {
		return cmp.Or(
			cmp.Compare(b.HotLooping+b.Stuck, a.HotLooping+a.Stuck),
			cmpNaNLast(b.ErrorRatio, a.ErrorRatio),
			cmpNaNLast(b.P99, a.P99),
			cmp.Compare(a.Name, b.Name))
	})
	return out, errs
}

func orNaN(m map[string]float64, k string) float64 {
	if v, ok := m[k]; ok {
		return v
	}
	return math.NaN()
}

// cmpNaNLast compares as cmp.Compare, with NaN (no data) as the smallest value.
func cmpNaNLast(a, b float64) int {
	switch an, bn := math.IsNaN(a), math.IsNaN(b); {
	case an && bn:
		return 0
	case an:
		return -1
	case bn:
		return 1
	}
	return cmp.Compare(a, b)
}

// parallel runs fns at once and returns their errors.
func parallel(fns ...func() error) []error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, f := range fns {
		wg.Go(func() { errs[i] = f() })
	}
	wg.Wait()
	return errs
}
