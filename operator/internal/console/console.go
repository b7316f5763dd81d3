// Package console is the Watchtower console: a web app, served on one port, that shows an
// operator's controllers, their slow and failed reconciles, one reconcile's trace as a
// waterfall, the telemetry pipeline's health, and a form for the pipeline's knobs.
//
// It reads Jaeger's (or Tempo's) query API, Prometheus' HTTP API and, when it has one, the
// Kubernetes API. Pages are rendered on the server with html/template and carry no script of
// their own: charts are inline SVG, filters are plain forms, so each page is one request, works
// with a keyboard and a screen reader, and needs no front-end build (docs/console.md says why).
package console

import (
	"context"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console serves the web app. Make one with New.
type Console struct {
	jaeger        *jaeger
	prom          *prometheus
	kube          client.Client
	discovery     discovery.DiscoveryInterface
	selector      string
	slowThreshold time.Duration
	timeout       time.Duration
	log           *slog.Logger
	pages         map[string]*template.Template
	mux           *http.ServeMux

	services ttlCache[[]serviceOps] // the traced services and their controllers, for 30 s
	crd      ttlCache[bool]         // whether the Watchtower API is served, for 5 s
}

// ttlCache keeps one value for a while: what every page asks and seldom changes.
type ttlCache[T any] struct {
	mu  sync.Mutex
	at  time.Time
	val T
}

// get returns the value fetched less than ttl ago, or fetches it; a failed fetch is not kept.
func (c *ttlCache[T]) get(ttl time.Duration, fetch func() (T, error)) (T, error) {
	c.mu.Lock()
	if !c.at.IsZero() && time.Since(c.at) < ttl {
		v := c.val
		c.mu.Unlock()
		return v, nil
	}
	c.mu.Unlock()
	v, err := fetch()
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	c.at, c.val = time.Now(), v
	c.mu.Unlock()
	return v, nil
}

// Option configures a Console.
type Option func(*Console)

// WithJaeger reads traces from the Jaeger query API at baseURL (e.g. http://jaeger-query:16686),
// or Tempo's Jaeger-compatible query frontend.
func WithJaeger(baseURL string) Option {
	return func(c *Console) { c.jaeger.base = strings.TrimRight(baseURL, "/") }
}

// WithPrometheus reads metrics from the Prometheus HTTP API at baseURL (e.g. http://prometheus:9090).
func WithPrometheus(baseURL string) Option {
	return func(c *Console) { c.prom.base = strings.TrimRight(baseURL, "/") }
}

// WithKubernetes lets the console read and write Watchtower resources (the Configure page) and
// read their status (the Pipeline page). Without it, Configure shows Helm values instead.
func WithKubernetes(c client.Client, d discovery.DiscoveryInterface) Option {
	return func(con *Console) { con.kube, con.discovery = c, d }
}

// WithMetricsSelector adds label matchers, e.g. `job="my-operator"`, to every query of the
// operators' watchtower_* metrics: for a Prometheus that receives the same metrics on two
// paths (the operator's /metrics and the collector's exporter) or holds several environments.
func WithMetricsSelector(matchers string) Option {
	return func(c *Console) { c.selector = strings.TrimSpace(matchers) }
}

// WithSlowThreshold is the duration from which the Reconciles page lists a reconcile as slow by
// default (1s, the pipeline's default slow threshold).
func WithSlowThreshold(d time.Duration) Option { return func(c *Console) { c.slowThreshold = d } }

// WithBackendTimeout bounds each page's calls to Jaeger, Prometheus and Kubernetes (10s).
func WithBackendTimeout(d time.Duration) Option { return func(c *Console) { c.timeout = d } }

// WithLogger logs failed backend calls (slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *Console) { c.log = l } }

// New returns a console. Backends left unset are shown as "not configured" on the pages that
// need them.
func New(opts ...Option) (*Console, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	c := &Console{
		jaeger:        &jaeger{http: hc},
		prom:          &prometheus{http: hc},
		slowThreshold: time.Second,
		timeout:       10 * time.Second,
		log:           slog.Default(),
	}
	for _, o := range opts {
		o(c)
	}
	if c.slowThreshold <= 0 {
		return nil, fmt.Errorf("console: the slow threshold must be positive, not %s", c.slowThreshold)
	}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// ServeHTTP serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.mux.ServeHTTP(w, r) }

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", cacheForever(http.FileServerFS(static))))
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/controllers", http.StatusFound)
	})
	m.HandleFunc("GET /controllers", c.timed(c.controllersPage))
	m.HandleFunc("GET /reconciles", c.timed(c.reconcilesPage))
	m.HandleFunc("GET /trace/{id}", c.timed(c.tracePage))
	m.HandleFunc("GET /search", c.search)
	m.HandleFunc("GET /pipeline", c.timed(c.pipelinePage))
	m.HandleFunc("GET /configure", c.timed(c.configurePage))
	m.HandleFunc("POST /configure", c.timed(c.configureSubmit))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	c.mux = m
}

// timed bounds a page's backend calls and reports its server time (Server-Timing), which the
// browser shows in its developer tools and the page-load benchmark reads.
func (c *Console) timed(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(r.Context(), c.timeout)
		defer cancel()
		tw := &timingWriter{ResponseWriter: w, start: start}
		if err := h(tw, r.WithContext(ctx)); err != nil {
			c.log.Error("console page failed", "path", r.URL.Path, "err", err)
			if !tw.wrote {
				c.render(tw, r, http.StatusInternalServerError, "error", pageData{Title: "Error", Errors: []string{err.Error()}})
			}
		}
	}
}

type timingWriter struct {
	http.ResponseWriter
	start time.Time
	wrote bool
}

func (t *timingWriter) WriteHeader(code int) {
	if !t.wrote {
		t.wrote = true
		t.Header().Set("Server-Timing", fmt.Sprintf("app;dur=%.1f", float64(time.Since(t.start).Microseconds())/1000))
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *timingWriter) Write(b []byte) (int, error) {
	if !t.wrote {
		t.WriteHeader(http.StatusOK)
	}
	return t.ResponseWriter.Write(b)
}

func cacheForever(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Asset URLs carry the content hash (see assetURL), so a changed asset is a new URL.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		h.ServeHTTP(w, r)
	})
}

// pageData is what every page template gets; Page holds the page's own data.
type pageData struct {
	Title  string
	Nav    string
	Query  string // the search box's content
	Errors []string
	Page   any
}

func (p *pageData) fail(err error) {
	if err != nil {
		p.Errors = append(p.Errors, err.Error())
	}
}

// notConfigured is the message of a page whose backend the console was not given.
func notConfigured(what, flag string) error {
	return fmt.Errorf("%s is not configured: start the console with -%s", what, flag)
}

var errNoJaeger = notConfigured("Jaeger (or Tempo)", "jaeger-url")
var errNoPrometheus = notConfigured("Prometheus", "prometheus-url")

func (c *Console) haveJaeger() bool { return c.jaeger.base != "" }
func (c *Console) haveProm() bool   { return c.prom.base != "" }

// messages flattens errors into page messages, dropping nils and repeats.
func messages(errs ...error) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range errs {
		if e == nil {
			continue
		}
		for _, m := range strings.Split(e.Error(), "\n") {
			if m != "" && !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out
}
