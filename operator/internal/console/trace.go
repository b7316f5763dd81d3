package console

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gowatchtower/watchtower/semconv"
)

// traceIDPattern is a W3C trace ID: 32 hex digits (Jaeger also accepts 16).
var traceIDPattern = regexp.MustCompile(`(?i)\b([0-9a-f]{32}|[0-9a-f]{16})\b`)

// waterfallRow is one span of the trace page's waterfall.
type waterfallRow struct {
	SpanID, Name, Service string
	Depth                 int
	Kind                  string // reconcile, cache, api_server (the operator's API call), apiserver (the API server's own span), other
	Start                 time.Duration
	Duration              time.Duration
	Offset, Width         float64 // percent of the trace
	Error                 bool
	Status                string
	Tags                  []jaegerKV
	Events                []spanEvent
}

// spanEvent is a span's event: a Kubernetes Event the reconcile recorded, an exception, or another.
type spanEvent struct {
	At                            time.Duration // since the trace's start
	Offset                        float64
	Name                          string
	Type, Reason, Note            string // k8s.event
	Message, ExceptionType, Stack string // exception
	Fields                        []jaegerKV
}

// traceLink is a span link: what triggered a reconcile (a watch event's writer, a requeue's
// previous reconcile, a KEP-5915 traceparent annotation's writer).
type traceLink struct {
	TraceID, SpanID string
	FromSpan        string // the name of the span that has the link
	SameTrace       bool
}

type traceView struct {
	TraceID             string
	Start               time.Time
	Duration            time.Duration
	Rows                []waterfallRow
	Reconcile           *waterfallRow
	Controller, Object  string
	Result, QueueWait   string
	Triggers            []string // trigger attributes of the reconcile, in words
	Links               []traceLink
	Exceptions          []spanEvent
	Events              []spanEvent
	APICalls, CacheHits int
	APIServerSpans      int
	Services            []string
	FocusSpan           string
}

func (c *Console) tracePage(w http.ResponseWriter, r *http.Request) error {
	id := strings.ToLower(r.PathValue("id"))
	d := pageData{Title: "Trace " + shortID(id), Nav: "reconciles", Query: id}
	if !traceIDPattern.MatchString(id) || len(traceIDPattern.FindString(id)) != len(id) {
		d.fail(fmt.Errorf("%q is not a trace ID: a trace ID is 32 hexadecimal digits, as in the trace_id of a reconcile's log line", id))
		c.render(w, r, http.StatusBadRequest, "trace", d)
		return nil
	}
	if !c.haveJaeger() {
		d.fail(errNoJaeger)
		c.render(w, r, http.StatusOK, "trace", d)
		return nil
	}
	t, err := c.jaeger.trace(r.Context(), id)
	switch {
	case errors.Is(err, errNotFound):
		d.fail(fmt.Errorf("trace %s is not in Jaeger: the pipeline keeps the traces of slow and failed reconciles and a baseline share of the rest, so a linked reconcile may not have been kept, or it has expired", id))
		c.render(w, r, http.StatusNotFound, "trace", d)
		return nil
	case err != nil:
		d.fail(err)
		c.render(w, r, http.StatusBadGateway, "trace", d)
		return nil
	}
	view := buildTrace(t)
	view.FocusSpan = r.URL.Query().Get("span")
	d.Page = view
	if view.Reconcile != nil {
		d.Title = "reconcile " + view.Object
	}
	c.render(w, r, http.StatusOK, "trace", d)
	return nil
}

func isError(s *jaegerSpan) bool {
	if v, _ := s.tag("error"); v == "true" {
		return true
	}
	v, _ := s.tag("otel.status_code")
	return v == "ERROR"
}

// buildTrace lays a trace out as a waterfall: each span under its parent, siblings by start.
func buildTrace(t *jaegerTrace) *traceView {
	v := &traceView{TraceID: t.TraceID}
	if len(t.Spans) == 0 {
		return v
	}
	byID := map[string]*jaegerSpan{}
	minStart, maxEnd := t.Spans[0].StartTime, int64(0)
	for i := range t.Spans {
		s := &t.Spans[i]
		byID[s.SpanID] = s
		minStart = min(minStart, s.StartTime)
		maxEnd = max(maxEnd, s.StartTime+s.Duration)
	}
	total := max(maxEnd-minStart, 1)
	v.Start, v.Duration = time.UnixMicro(minStart), time.Duration(total)*time.Microsecond
	children := map[string][]*jaegerSpan{}
	var roots []*jaegerSpan
	for i := range t.Spans {
		s := &t.Spans[i]
		parent := ""
		for _, ref := range s.References {
			if ref.RefType == "CHILD_OF" && byID[ref.SpanID] != nil {
				parent = ref.SpanID
			}
		}
		if parent == "" {
			roots = append(roots, s)
		} else {
			children[parent] = append(children[parent], s)
		}
	}
	byStart := func(a, b *jaegerSpan) int { return int(a.StartTime - b.StartTime) }
	slices.SortFunc(roots, byStart)
	pct := func(us int64) float64 { return float64(us) / float64(total) * 100 }
	services := map[string]bool{}
	var walk func(s *jaegerSpan, depth int)
	walk = func(s *jaegerSpan, depth int) {
		service := t.Processes[s.ProcessID].ServiceName
		services[service] = true
		row := waterfallRow{
			SpanID: s.SpanID, Name: s.OperationName, Service: service, Depth: depth,
			Start: time.Duration(s.StartTime-minStart) * time.Microsecond, Duration: time.Duration(s.Duration) * time.Microsecond,
			Offset: pct(s.StartTime - minStart), Width: max(pct(s.Duration), 0.3), Error: isError(s), Tags: s.Tags,
		}
		row.Status, _ = s.tag("otel.status_description")
		switch src := apiSource(s); {
		case strings.HasPrefix(s.OperationName, reconcileOp):
			row.Kind = "reconcile"
		case src != "":
			row.Kind = src
		case service == "apiserver" || service == "kube-apiserver":
			row.Kind = "apiserver"
			v.APIServerSpans++
		default:
			row.Kind = "other"
		}
		switch row.Kind {
		case "cache":
			v.CacheHits++
		case "api_server":
			v.APICalls++
		}
		for _, l := range s.Logs {
			e := spanEvent{At: time.Duration(l.Timestamp-minStart) * time.Microsecond, Offset: pct(l.Timestamp - minStart), Fields: l.Fields}
			e.Name, _ = kvString(l.Fields, "event")
			switch e.Name {
			case "k8s.event":
				e.Type, _ = kvString(l.Fields, string(semconv.EventTypeKey))
				e.Reason, _ = kvString(l.Fields, string(semconv.EventReasonKey))
				e.Note, _ = kvString(l.Fields, string(semconv.EventNoteKey))
				v.Events = append(v.Events, e)
			case "exception":
				e.Message, _ = kvString(l.Fields, "exception.message")
				e.ExceptionType, _ = kvString(l.Fields, "exception.type")
				e.Stack, _ = kvString(l.Fields, "exception.stacktrace")
				// An error the code handled (a NotFound read before a create) stays with its
				// span; the page's banner is for the errors that failed a span.
				if row.Error {
					v.Exceptions = append(v.Exceptions, e)
				}
			}
			row.Events = append(row.Events, e)
		}
		for _, ref := range s.References {
			if ref.RefType == "FOLLOWS_FROM" {
				v.Links = append(v.Links, traceLink{TraceID: ref.TraceID, SpanID: ref.SpanID, FromSpan: s.OperationName, SameTrace: ref.TraceID == t.TraceID})
			}
		}
		v.Rows = append(v.Rows, row)
		if row.Kind == "reconcile" && v.Reconcile == nil {
			v.Reconcile = &v.Rows[len(v.Rows)-1]
			ns, _ := s.tag(string(semconv.ObjectNamespaceKey))
			name, _ := s.tag(string(semconv.ObjectNameKey))
			v.Object = strings.TrimPrefix(ns+"/"+name, "/")
			v.Controller = strings.TrimPrefix(s.OperationName, reconcileOp)
			v.Result, _ = s.tag(string(semconv.ReconcileResultKey))
			if qw, ok := s.tag(string(semconv.QueueWaitKey)); ok {
				var f float64
				if _, err := fmt.Sscan(qw, &f); err == nil {
					v.QueueWait = fmtSeconds(f)
				}
			}
			v.Triggers = triggerWords(s)
		}
		kids := children[s.SpanID]
		slices.SortFunc(kids, byStart)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	// v.Reconcile points into v.Rows, which append may have moved: point again.
	for i := range v.Rows {
		if v.Rows[i].Kind == "reconcile" {
			v.Reconcile = &v.Rows[i]
			break
		}
	}
	for s := range services {
		v.Services = append(v.Services, s)
	}
	slices.Sort(v.Services)
	return v
}

// triggerWords describes a reconcile's first trigger from its attributes, e.g.
// "update of Workload default/flaky (watch: for), 3 triggers".
func triggerWords(s *jaegerSpan) []string {
	var out []string
	ev, _ := s.tag(string(semconv.TriggerEventKey))
	if ev == "" {
		return nil
	}
	kind, _ := s.tag(string(semconv.TriggerObjectKindKey))
	ns, _ := s.tag(string(semconv.TriggerObjectNamespaceKey))
	name, _ := s.tag(string(semconv.TriggerObjectNameKey))
	watch, _ := s.tag(string(semconv.TriggerWatchKey))
	w := ev
	if kind != "" || name != "" {
		w += " of " + strings.TrimSpace(kind+" "+strings.TrimPrefix(ns+"/"+name, "/"))
	}
	if watch != "" {
		w += " (watch: " + watch + ")"
	}
	out = append(out, w)
	if n, _ := s.tag(string(semconv.TriggerCountKey)); n != "" && n != "1" {
		out = append(out, n+" triggers coalesced by the work queue")
	}
	return out
}

// search takes what a user pastes — a trace ID, a log line with trace_id=…, a traceparent — and
// opens the trace; anything else searches reconciles by object name.
func (c *Console) search(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if m := traceIDPattern.FindAllString(q, -1); len(m) > 0 {
		// A traceparent (00-<trace>-<span>-01) or a log line may hold a span ID as well: the
		// trace ID is the 32-digit one.
		id := m[0]
		for _, s := range m {
			if len(s) == 32 {
				id = s
				break
			}
		}
		http.Redirect(w, r, "/trace/"+strings.ToLower(id), http.StatusSeeOther)
		return
	}
	if q == "" {
		http.Redirect(w, r, "/reconciles", http.StatusSeeOther)
		return
	}
	ns, name, ok := strings.Cut(q, "/")
	if !ok {
		ns, name = "", q
	}
	http.Redirect(w, r, reconcilesURL("namespace", ns, "object", name, "result", "any"), http.StatusSeeOther)
}
