package console

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gowatchtower/watchtower/semconv"
)

// reconcileOp is the prefix of a reconcile span's name ("reconcile {controller}").
const reconcileOp = "reconcile "

// serviceOps is one traced service and the controllers it reconciles in.
type serviceOps struct {
	Service     string
	Controllers []string
}

// reconcileServices lists the services with reconcile spans; kept for 30 s, since a page load
// would otherwise ask Jaeger once per service.
func (c *Console) reconcileServices(ctx context.Context) ([]serviceOps, error) {
	return c.services.get(30*time.Second, func() ([]serviceOps, error) {
		svcs, err := c.jaeger.services(ctx)
		if err != nil {
			return nil, err
		}
		slices.Sort(svcs)
		out := make([]serviceOps, len(svcs))
		errs := parallel(mapFns(svcs, func(i int, s string) error {
			ops, err := c.jaeger.operations(ctx, s)
			if err != nil {
				return err
			}
			out[i].Service = s
			for _, op := range ops {
				if ctrl, ok := strings.CutPrefix(op, reconcileOp); ok {
					out[i].Controllers = append(out[i].Controllers, ctrl)
				}
			}
			slices.Sort(out[i].Controllers)
			return nil
		})...)
		for _, e := range errs {
			if e != nil {
				return nil, e
			}
		}
		return slices.DeleteFunc(out, func(s serviceOps) bool { return len(s.Controllers) == 0 }), nil
	})
}

func mapFns[T any](xs []T, f func(int, T) error) []func() error {
	fns := make([]func() error, len(xs))
	for i, x := range xs {
		fns[i] = func() error { return f(i, x) }
	}
	return fns
}

// reconcileFilter is the Reconciles page's form.
type reconcileFilter struct {
	Service, Controller, Namespace, Object string
	Result                                 string // slow_or_failed, failed, any, or one result
	MinDuration                            string // as typed, e.g. 1s or 250ms
	Range                                  string
	Limit                                  int
}

// resultChoices are the Result filter's options: two groups, then every result the
// instrumentation records.
var resultChoices = []string{"slow_or_failed", "failed", "any", "success", "error", "terminal_error", "panic", "conflict", "requeue", "requeue_after"}

type reconcileRow struct {
	Start                    time.Time
	Service, Controller      string
	Namespace, Name          string
	Result, Trigger, Message string
	Duration                 time.Duration
	APICalls, CacheReads     int
	TraceID, SpanID          string
}

type reconcilesView struct {
	Filter         reconcileFilter
	Services       []serviceOps
	Results        []string
	Ranges         []string
	Rows           []reconcileRow
	Threshold      time.Duration
	FieldErrors    map[string]string
	Searched, Kept int // traces Jaeger returned, rows shown
}

func (c *Console) reconcilesPage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := reconcileFilter{
		Service: q.Get("service"), Controller: q.Get("controller"),
		Namespace: strings.TrimSpace(q.Get("namespace")), Object: strings.TrimSpace(q.Get("object")),
		Result: cmp.Or(q.Get("result"), "slow_or_failed"), MinDuration: strings.TrimSpace(q.Get("min")),
		Limit: 50,
	}
	f.Range, _ = parseRange(q.Get("range"))
	view := &reconcilesView{Filter: f, Results: resultChoices, Threshold: c.slowThreshold, FieldErrors: map[string]string{}}
	for _, rg := range ranges {
		view.Ranges = append(view.Ranges, rg.Name)
	}
	d := pageData{Title: "Reconciles", Page: view}
	if !slices.Contains(resultChoices, f.Result) {
		view.FieldErrors["result"] = fmt.Sprintf("%q is not a result: pick one of the list", f.Result)
	}
	var minDur time.Duration
	if f.MinDuration != "" {
		v, err := time.ParseDuration(f.MinDuration)
		if err != nil || v < 0 {
			view.FieldErrors["min"] = fmt.Sprintf("%q is not a duration: write it like 500ms, 1s or 1m30s", f.MinDuration)
		}
		minDur = v
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			view.FieldErrors["limit"] = fmt.Sprintf("%q: the limit is a number from 1 to 500", l)
		} else {
			view.Filter.Limit = n
		}
	}
	if !c.haveJaeger() {
		d.fail(errNoJaeger)
		c.render(w, r, http.StatusOK, "reconciles", d)
		return nil
	}
	svcs, err := c.reconcileServices(r.Context())
	view.Services = svcs
	if err != nil || len(view.FieldErrors) > 0 {
		d.fail(err)
		code := http.StatusOK
		if len(view.FieldErrors) > 0 {
			code = http.StatusBadRequest
		}
		c.render(w, r, code, "reconciles", d)
		return nil
	}
	rows, searched, errs := c.findReconciles(r.Context(), svcs, view.Filter, minDur)
	view.Rows, view.Searched, view.Kept = rows, searched, len(rows)
	d.Errors = messages(errs...)
	c.render(w, r, http.StatusOK, "reconciles", d)
	return nil
}

// findReconciles asks Jaeger for the reconciles the filter selects. Jaeger matches tags exactly
// and ANDs them, so "slow or failed" is one search by duration and one per failed result, merged.
func (c *Console) findReconciles(ctx context.Context, svcs []serviceOps, f reconcileFilter, minDur time.Duration) ([]reconcileRow, int, []error) {
	_, span := parseRange(f.Range)
	end := time.Now()
	base := traceQuery{Start: end.Add(-span), End: end, Limit: f.Limit}
	tags := map[string]string{}
	if f.Namespace != "" {
		tags[string(semconv.ObjectNamespaceKey)] = f.Namespace
	}
	if f.Object != "" {
		tags[string(semconv.ObjectNameKey)] = f.Object
	}
	type variant struct {
		result string
		min    time.Duration
	}
	var variants []variant
	switch f.Result {
	case "slow_or_failed":
		variants = append(variants, variant{"", cmp.Or(minDur, c.slowThreshold)})
		fallthrough
	case "failed":
		for _, res := range strings.Split(failedResults, "|") {
			variants = append(variants, variant{res, minDur})
		}
	case "any":
		variants = append(variants, variant{"", minDur})
	default:
		variants = append(variants, variant{f.Result, minDur})
	}
	var queries []traceQuery
	for _, s := range svcs {
		if f.Service != "" && s.Service != f.Service {
			continue
		}
		// One search per service covers all its controllers (a search matches any operation,
		// and rows are cut to reconcile spans below): the page's cost grows with the services,
		// not with their controllers.
		ops := []string{""}
		if f.Controller != "" {
			if !slices.Contains(s.Controllers, f.Controller) {
				continue
			}
			ops = []string{reconcileOp + f.Controller}
		}
		for _, op := range ops {
			for _, v := range variants {
				q := base
				q.Service, q.Operation, q.MinDuration = s.Service, op, v.min
				q.Tags = maps.Clone(tags)
				if v.result != "" {
					q.Tags[string(semconv.ReconcileResultKey)] = v.result
				}
				queries = append(queries, q)
			}
		}
	}
	var (
		mu     sync.Mutex
		seen   = map[string]bool{}
		rows   []reconcileRow
		traces int
	)
	sem := make(chan struct{}, 6) // Jaeger's searches, at most this many at once
	errs := parallel(mapFns(queries, func(_ int, q traceQuery) error {
		sem <- struct{}{}
		defer func() { <-sem }()
		ts, err := c.jaeger.findTraces(ctx, q)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		traces += len(ts)
		for i := range ts {
			for _, row := range reconcileRows(&ts[i], q.Service) {
				key := row.TraceID + "/" + row.SpanID
				if seen[key] || !matches(row, f, q) {
					continue
				}
				seen[key] = true
				rows = append(rows, row)
			}
		}
		return nil
	})...)
	slices.SortFunc(rows, func(a, b reconcileRow) int { return b.Start.Compare(a.Start) })
	if len(rows) > f.Limit {
		rows = rows[:f.Limit]
	}
	return rows, traces, errs
}

// matches keeps the reconcile spans of a returned trace that the search was for: Jaeger returns
// whole traces, and a trace may hold several reconciles.
func matches(row reconcileRow, f reconcileFilter, q traceQuery) bool {
	if (q.Operation != "" && row.Controller != strings.TrimPrefix(q.Operation, reconcileOp)) || row.Duration < q.MinDuration {
		return false
	}
	if r := q.Tags[string(semconv.ReconcileResultKey)]; r != "" && row.Result != r {
		return false
	}
	return (f.Namespace == "" || row.Namespace == f.Namespace) && (f.Object == "" || row.Name == f.Object)
}

// reconcileRows are the reconcile spans of a trace, each with its API calls counted.
func reconcileRows(t *jaegerTrace, service string) []reconcileRow {
	children := map[string][]*jaegerSpan{}
	for i := range t.Spans {
		s := &t.Spans[i]
		for _, ref := range s.References {
			if ref.RefType == "CHILD_OF" {
				children[ref.SpanID] = append(children[ref.SpanID], s)
			}
		}
	}
	var rows []reconcileRow
	for i := range t.Spans {
		s := &t.Spans[i]
		ctrl, ok := strings.CutPrefix(s.OperationName, reconcileOp)
		if !ok {
			continue
		}
		if p, ok := t.Processes[s.ProcessID]; ok && p.ServiceName != service {
			continue
		}
		row := reconcileRow{
			Start: time.UnixMicro(s.StartTime), Service: service, Controller: ctrl,
			Duration: time.Duration(s.Duration) * time.Microsecond, TraceID: t.TraceID, SpanID: s.SpanID,
		}
		row.Namespace, _ = s.tag(string(semconv.ObjectNamespaceKey))
		row.Name, _ = s.tag(string(semconv.ObjectNameKey))
		row.Result, _ = s.tag(string(semconv.ReconcileResultKey))
		row.Trigger, _ = s.tag(string(semconv.TriggerEventKey))
		row.Message, _ = s.tag("otel.status_description")
		for _, ch := range children[s.SpanID] {
			switch apiSource(ch) {
			case "cache":
				row.CacheReads++
			case "api_server":
				row.APICalls++
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// apiSource says where an API-call span was served: "cache", "api_server", or "" when the span
// is not an API call.
func apiSource(s *jaegerSpan) string {
	if v, ok := s.tag(string(semconv.APISourceKey)); ok {
		return v
	}
	if strings.HasSuffix(s.OperationName, " (cache)") {
		return "cache"
	}
	if _, ok := s.tag(string(semconv.APIVerbKey)); ok {
		return "api_server"
	}
	// The API-call span's name is "{verb} {Kind}" (semconv); its attributes may be trimmed.
	if verb, _, ok := strings.Cut(s.OperationName, " "); ok && slices.Contains(apiVerbs, verb) {
		return "api_server"
	}
	return ""
}

var apiVerbs = []string{"get", "list", "create", "update", "patch", "apply", "delete", "delete_all_of"}

// reconcilesURL links to the Reconciles page with a filter.
func reconcilesURL(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			v.Set(kv[i], kv[i+1])
		}
	}
	return "/reconciles?" + v.Encode()
}
