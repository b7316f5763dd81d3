package console

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// pages are the page templates; each is rendered inside templates/layout.html.
var pages = []string{"controllers", "reconciles", "trace", "pipeline", "configure", "error"}

func (c *Console) parseTemplates() error {
	funcs := template.FuncMap{
		"asset":    assetURL,
		"dur":      fmtDuration,
		"secs":     func(s float64) string { return fmtSeconds(s) },
		"pct":      fmtPercent,
		"num":      fmtNumber,
		"rate":     fmtRate,
		"bytes":    fmtBytes,
		"spark":    sparkline,
		"short":    func(id string) string { return shortID(id) },
		"ago":      func(t time.Time) string { return fmtAgo(time.Since(t)) },
		"clock":    func(t time.Time) string { return t.Local().Format("15:04:05") },
		"datetime": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"has":      func(xs []string, x string) bool { return slices.Contains(xs, x) },
		"dict": func(kv ...any) (map[string]any, error) {
			m := map[string]any{}
			for i := 0; i+1 < len(kv); i += 2 {
				k, ok := kv[i].(string)
				if !ok {
					return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
				}
				m[k] = kv[i+1]
			}
			return m, nil
		},
	}
	c.pages = map[string]*template.Template{}
	for _, p := range pages {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return fmt.Errorf("console: template %s: %w", p, err)
		}
		c.pages[p] = t
	}
	return nil
}

// render writes a whole page; it renders into a buffer first, so that a template error becomes
// an error page instead of half a page.
func (c *Console) render(w http.ResponseWriter, _ *http.Request, code int, page string, d pageData) {
	var buf bytes.Buffer
	if d.Nav == "" {
		d.Nav = page
	}
	if err := c.pages[page].Execute(&buf, d); err != nil {
		c.log.Error("console template failed", "page", page, "err", err)
		http.Error(w, "the console failed to render this page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; script-src 'none'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

var assetHashes = map[string]string{}

func init() {
	fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := staticFS.ReadFile(p)
		h := sha256.Sum256(b)
		assetHashes[strings.TrimPrefix(p, "static/")] = hex.EncodeToString(h[:4])
		return nil
	})
}

// assetURL is the URL of an embedded asset with its content hash, so that it can be cached
// for ever and still change with a new console.
func assetURL(name string) string { return "/static/" + name + "?v=" + assetHashes[name] }

func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return trimZero(fmt.Sprintf("%.1f", float64(d.Microseconds())/1000)) + " ms"
	case d < time.Minute:
		return trimZero(fmt.Sprintf("%.2f", d.Seconds())) + " s"
	default:
		return d.Round(time.Second).String()
	}
}

func fmtSeconds(s float64) string {
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return "–"
	}
	return fmtDuration(time.Duration(s * float64(time.Second)))
}

func fmtPercent(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "–"
	}
	switch p := f * 100; {
	case p == 0:
		return "0 %"
	case p < 0.1:
		return "<0.1 %"
	case p < 10:
		return trimZero(fmt.Sprintf("%.1f", p)) + " %"
	default:
		return fmt.Sprintf("%.0f %%", p)
	}
}

func fmtNumber(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "–"
	}
	switch a := math.Abs(f); {
	case a >= 1e6:
		return trimZero(fmt.Sprintf("%.1f", f/1e6)) + "M"
	case a >= 1e4:
		return trimZero(fmt.Sprintf("%.1f", f/1e3)) + "k"
	case a >= 100 || f == math.Trunc(f):
		return strconv.FormatFloat(math.Round(f), 'f', -1, 64)
	case a >= 1:
		return trimZero(fmt.Sprintf("%.1f", f))
	default:
		return trimZero(fmt.Sprintf("%.2f", f))
	}
}

func fmtRate(f float64) string { return fmtNumber(f) + "/s" }

func fmtBytes(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	const unit = 1024
	if f < unit {
		return fmt.Sprintf("%.0f B", f)
	}
	div, exp := float64(unit), 0
	for n := f / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", f/div, "KMGTPE"[exp])
}

func fmtAgo(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func trimZero(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// sparkline draws points as a small inline SVG line; its title says what it shows, for screen
// readers and on hover.
func sparkline(label string, pts []point) template.HTML {
	const w, h = 120.0, 28.0
	var vals []float64
	for _, p := range pts {
		if !math.IsNaN(p.V) && !math.IsInf(p.V, 0) {
			vals = append(vals, p.V)
		}
	}
	if len(vals) < 2 {
		return template.HTML(`<span class="spark-empty">no data</span>`)
	}
	lo, hi := vals[0], vals[0]
	for _, v := range vals {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if lo > 0 {
		lo = 0
	}
	span := hi - lo
	if span == 0 {
		span = 1
	}
	var b strings.Builder
	for i, v := range vals {
		x := float64(i) / float64(len(vals)-1) * w
		y := h - 2 - (v-lo)/span*(h-4)
		if i == 0 {
			fmt.Fprintf(&b, "M%.1f %.1f", x, y)
		} else {
			fmt.Fprintf(&b, "L%.1f %.1f", x, y)
		}
	}
	return template.HTML(fmt.Sprintf(`<svg class="spark" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%s"><title>%s</title><path d="%s"/></svg>`,
		w, h, w, h, template.HTMLEscapeString(label), template.HTMLEscapeString(label), b.String()))
}
