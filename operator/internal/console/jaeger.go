package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// jaeger reads Jaeger's query API (/api/...), the one Jaeger v1 and Tempo's Jaeger-compatible
// query frontend serve.
type jaeger struct {
	base string
	http *http.Client
}

// jaegerTrace is a trace as /api/traces returns it.
type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerProcess struct {
	ServiceName string     `json:"serviceName"`
	Tags        []jaegerKV `json:"tags"`
}

type jaegerSpan struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []jaegerRef `json:"references"`
	StartTime     int64       `json:"startTime"` // µs since the epoch
	Duration      int64       `json:"duration"`  // µs
	Tags          []jaegerKV  `json:"tags"`
	Logs          []jaegerLog `json:"logs"`
	ProcessID     string      `json:"processID"`
}

type jaegerRef struct {
	RefType string `json:"refType"` // CHILD_OF or FOLLOWS_FROM (an OpenTelemetry span link)
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

type jaegerLog struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []jaegerKV `json:"fields"`
}

func (s *jaegerSpan) tag(key string) (string, bool) { return kvString(s.Tags, key) }

func kvString(kvs []jaegerKV, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			switch v := kv.Value.(type) {
			case string:
				return v, true
			case float64:
				return strconv.FormatFloat(v, 'g', -1, 64), true
			default:
				return fmt.Sprint(v), true
			}
		}
	}
	return "", false
}

// errNotFound is a trace Jaeger does not have.
var errNotFound = errors.New("not found")

func (j *jaeger) get(ctx context.Context, path string, q url.Values, out any) error {
	u := j.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := j.http.Do(req)
	if err != nil {
		return backendError("Jaeger", j.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errNotFound
	}
	var body struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Msg string `json:"msg"`
		} `json:"errors"`
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return backendError("Jaeger", j.base, err)
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return fmt.Errorf("the Jaeger query API at %s answered %s to %s with something that is not its API's JSON: %.120q", j.base, resp.Status, path, b)
	}
	if len(body.Errors) > 0 {
		return fmt.Errorf("the Jaeger query API at %s: %s", j.base, body.Errors[0].Msg)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the Jaeger query API at %s answered %s to %s", j.base, resp.Status, path)
	}
	return json.Unmarshal(body.Data, out)
}

func (j *jaeger) services(ctx context.Context) ([]string, error) {
	var s []string
	return s, j.get(ctx, "/api/services", nil, &s)
}

func (j *jaeger) operations(ctx context.Context, service string) ([]string, error) {
	var s []string
	return s, j.get(ctx, "/api/services/"+url.PathEscape(service)+"/operations", nil, &s)
}

// traceQuery is one /api/traces search.
type traceQuery struct {
	Service, Operation string
	Tags               map[string]string
	MinDuration        time.Duration
	Start, End         time.Time
	Limit              int
}

func (j *jaeger) findTraces(ctx context.Context, q traceQuery) ([]jaegerTrace, error) {
	v := url.Values{"service": {q.Service}, "limit": {strconv.Itoa(q.Limit)}}
	if q.Operation != "" {
		v.Set("operation", q.Operation)
	}
	if len(q.Tags) > 0 {
		b, _ := json.Marshal(q.Tags)
		v.Set("tags", string(b))
	}
	if q.MinDuration > 0 {
		v.Set("minDuration", q.MinDuration.String())
	}
	if !q.Start.IsZero() {
		v.Set("start", strconv.FormatInt(q.Start.UnixMicro(), 10))
		v.Set("end", strconv.FormatInt(q.End.UnixMicro(), 10))
	}
	var ts []jaegerTrace
	return ts, j.get(ctx, "/api/traces", v, &ts)
}

func (j *jaeger) trace(ctx context.Context, id string) (*jaegerTrace, error) {
	var ts []jaegerTrace
	if err := j.get(ctx, "/api/traces/"+url.PathEscape(id), nil, &ts); err != nil {
		return nil, err
	}
	if len(ts) == 0 {
		return nil, errNotFound
	}
	return &ts[0], nil
}

// backendError names the backend and its address, so that a page says which one is down.
func backendError(what, base string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	if strings.Contains(msg, "connection refused") {
		msg = "connection refused (is it running?)"
	}
	return fmt.Errorf("%s at %s is unreachable: %s", what, base, msg)
}
