package integration

import (
	"context"
	"flag"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"k8s.io/client-go/rest"

	"github.com/gowatchtower/watchtower/integration/harness"
	wtv1 "github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// -console-screenshots names a folder the console tests write their screenshots into, besides
// the test's artifacts: `make screenshots` sets it to docs/console, whose pictures docs/console.md
// shows. (A flag, not a variable: the harness drops WATCHTOWER_* variables from the environment.)
var screenshotDir = flag.String("console-screenshots", "", "also write the console tests' screenshots into this folder")

// consolePage is one Chromium tab on the Watchtower console, with the checks a user makes by
// looking: what a page says, where a click leads.
type consolePage struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func newConsolePage(t *testing.T, b *harness.Browser, base string) *consolePage {
	ctx, cancel := b.Tab(t)
	t.Cleanup(cancel)
	p := &consolePage{t: t, ctx: ctx, base: base}
	p.viewport(1280, 800)
	return p
}

func (p *consolePage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("browser: %s: %v", what, err)
	}
}

// open loads a page of the console and returns its HTTP status.
func (p *consolePage) open(path string) int64 {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(p.base+path))
	if err != nil {
		p.t.Fatalf("browser: opening %s: %v", path, err)
	}
	return resp.Status
}

// texts are the trimmed text contents of the elements css selects, in document order, without
// the charts' titles (what a reader sees).
func (p *consolePage) texts(css string) []string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(
		`Array.from(document.querySelectorAll(%q)).map(e => { const c = e.cloneNode(true); c.querySelectorAll("svg, .spark-empty").forEach(s => s.remove()); return c.textContent.replace(/\s+/g, " ").trim() })`, css)))
	if err != nil {
		p.t.Fatalf("browser: reading %s: %v", css, err)
	}
	return out
}

// raw is the text content of the first element css selects, whitespace kept (a <pre>).
func (p *consolePage) raw(css string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent`, css)))
	if err != nil {
		p.t.Fatalf("browser: reading %s: %v", css, err)
	}
	return out
}

func (p *consolePage) text(css string) string {
	if ts := p.texts(css); len(ts) > 0 {
		return ts[0]
	}
	return ""
}

func (p *consolePage) attrs(css, attr string) []string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(
		`Array.from(document.querySelectorAll(%q)).map(e => e.getAttribute(%q) || "")`, css, attr)))
	if err != nil {
		p.t.Fatalf("browser: reading %s[%s]: %v", css, attr, err)
	}
	return out
}

// location is the page's path and query.
func (p *consolePage) location() string {
	p.t.Helper()
	loc, err := chromedp.Run(p.ctx, chromedp.Location())
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimPrefix(loc, p.base)
}

// click clicks what css selects and waits for the page it leads to.
func (p *consolePage) click(css string) int64 {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(css), chromedp.NodeVisible))
	if err != nil {
		p.t.Fatalf("browser: clicking %s: %v", css, err)
	}
	return resp.Status
}

// fill types value into the input css selects, replacing what it held.
func (p *consolePage) fill(css, value string) {
	p.t.Helper()
	p.do("filling "+css, chromedp.SetValue(chromedp.CSS(css), value))
}

func (p *consolePage) viewport(w, h int64) {
	p.t.Helper()
	p.do("setting the viewport", chromedp.EmulateViewport(w, h))
}

// dark makes the page see prefers-color-scheme: dark, as a system in dark mode does.
func (p *consolePage) dark(on bool) {
	p.t.Helper()
	v := "light"
	if on {
		v = "dark"
	}
	p.do("emulating "+v+" mode", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v}}})
		return err
	}))
}

// shot saves a screenshot of the whole page as <name>.png among the test's artifacts, and in
// the -console-screenshots folder when set.
func (p *consolePage) shot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	dirs := []string{p.t.ArtifactDir()}
	if d := *screenshotDir; d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			p.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "console-"+name+".png"), png, 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
}

// eventually reloads path until check passes, for data that reaches Prometheus or Jaeger a few
// seconds after the reconcile.
func (p *consolePage) eventually(path string, within time.Duration, what string, check func() error) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		p.open(path)
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("console %s: %s: %v\npage text: %s", path, what, err, p.text("main"))
		}
		time.Sleep(2 * time.Second)
	}
}

// The figures of a table row, by column header.
func (p *consolePage) tableRow(table, rowHeader string) map[string]string {
	p.t.Helper()
	heads := p.texts(table + " thead th")
	for i, h := range p.texts(table + " tbody tr > :first-child") {
		if h != rowHeader {
			continue
		}
		cells := p.texts(fmt.Sprintf("%s tbody tr:nth-child(%d) > *", table, i+1))
		row := map[string]string{}
		for j, c := range cells {
			if j < len(heads) {
				row[heads[j]] = c
			}
		}
		return row
	}
	return nil
}

var leadingNumber = regexp.MustCompile(`^[0-9.]+`)

// number reads the figure a cell starts with ("1.5/s", "33 %", "2.41 s"); -1 for "–".
func number(cell string) float64 {
	m := leadingNumber.FindString(cell)
	if m == "" {
		return -1
	}
	f, _ := strconv.ParseFloat(m, 64)
	return f
}

// seconds reads a duration as the console writes it ("315 µs", "1.5 s", "2m3s").
func seconds(cell string) float64 {
	f := number(cell)
	switch {
	case strings.HasSuffix(cell, "µs"):
		return f / 1e6
	case strings.HasSuffix(cell, "ms"):
		return f / 1e3
	case strings.HasSuffix(cell, " s"):
		return f
	}
	if d, err := time.ParseDuration(cell); err == nil {
		return d.Seconds()
	}
	return -1
}

// accessibilityJS lists what a keyboard or screen-reader user, or a reader with low vision, would
// trip on: text below WCAG AA contrast on its actual background (4.5:1, 3:1 for large text), form
// controls without an accessible name, images without a text alternative, and a page wider than
// the window (a horizontal scroll bar).
const accessibilityJS = `(() => {
  const parse = c => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const bgOf = el => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0) return c; }
    return {r: 255, g: 255, b: 255, a: 1}; };
  const out = [];
  const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (w.nextNode()) {
    const t = w.currentNode, text = t.textContent.trim(), el = t.parentElement;
    if (!text || el.closest('.sr-only, .skip, svg, option, title')) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || el.getClientRects().length === 0) continue;
    const fg = parse(cs.color), bg = bgOf(el);
    const a = lum(fg), b = lum(bg), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(cs.fontSize), large = size >= 24 || (parseInt(cs.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) out.push('contrast ' + ratio.toFixed(2) + ':1 of "' + text.slice(0, 40) + '"');
  }
  for (const c of document.querySelectorAll('input:not([type=hidden]), select, textarea, button')) {
    const named = (c.labels && c.labels.length) || c.getAttribute('aria-label') || c.getAttribute('aria-labelledby') || (c.tagName === 'BUTTON' && c.textContent.trim());
    if (!named) out.push('no accessible name: ' + c.outerHTML.slice(0, 80));
  }
  for (const i of document.querySelectorAll('img, svg')) {
    if (i.tagName === 'IMG' ? i.getAttribute('alt') === null : !(i.getAttribute('aria-label') || i.getAttribute('aria-hidden'))) out.push('no text alternative: ' + i.outerHTML.slice(0, 80));
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push('the page is ' + document.documentElement.scrollWidth + ' px wide in a ' + window.innerWidth + ' px window');
  return out;
})()`

// accessible checks the page as it is (accessibilityJS), in light and in dark mode, at the
// desktop size and at phone width.
func (p *consolePage) accessible(path string) {
	p.t.Helper()
	for _, dark := range []bool{false, true} {
		p.dark(dark)
		for _, size := range [][2]int64{{1280, 800}, {390, 844}} {
			p.viewport(size[0], size[1])
			p.open(path)
			ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
			problems, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](accessibilityJS))
			cancel()
			if err != nil {
				p.t.Fatalf("browser: checking %s: %v", path, err)
			}
			for _, pr := range problems {
				p.t.Errorf("%s (dark %v, %dx%d): %s", path, dark, size[0], size[1], pr)
			}
		}
	}
	p.dark(false)
	p.viewport(1280, 800)
}

// keyboard checks that the first Tab reaches the skip link and that following it moves the
// focus to the page's content, as a keyboard user starts every page.
func (p *consolePage) keyboard(path string) {
	p.t.Helper()
	p.open(path)
	p.do("pressing Tab", chromedp.KeyEvent("\t"))
	focused := func() string {
		s, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.activeElement ? (document.activeElement.id || document.activeElement.className || document.activeElement.tagName) : ""`))
		if err != nil {
			p.t.Fatal(err)
		}
		return s
	}
	if f := focused(); f != "skip" {
		p.t.Errorf("%s: the first Tab focuses %q, want the skip link", path, f)
	}
	p.do("pressing Enter", chromedp.KeyEvent("\r"))
	if loc := p.location(); !strings.HasSuffix(loc, "#main") {
		p.t.Errorf("%s: the skip link led to %s, want #main", path, loc)
	}
}

// proxiedConsole is the console running in a cluster, reached through the API server's service
// proxy with the test's credentials.
type proxiedConsole struct {
	t    *testing.T
	http *http.Client
	base string
}

func newProxiedConsole(t *testing.T, c *harness.Cluster) *proxiedConsole {
	hc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	// The console answers a saved form with a redirect to its own path, which the proxy does
	// not rewrite: look at it rather than follow it.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &proxiedConsole{t: t, http: hc, base: strings.TrimRight(c.Config.Host, "/") + "/api/v1/namespaces/watchtower-system/services/watchtower-console:http/proxy"}
}

func (p *proxiedConsole) do(ctx context.Context, method, path string, form url.Values) (int, http.Header, string) {
	p.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, body)
	if err != nil {
		p.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := p.http.Do(req)
	if err != nil {
		p.t.Fatalf("console %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func (p *proxiedConsole) get(ctx context.Context, path string) string {
	p.t.Helper()
	code, _, body := p.do(ctx, http.MethodGet, path, nil)
	if code != http.StatusOK {
		p.t.Fatalf("console GET %s: HTTP %d\n%s", path, code, body)
	}
	return body
}

// saveSlowThreshold submits the Configure form of wt as its page shows it, with a new slow
// threshold: every other field as it is, the receivers included.
func (p *proxiedConsole) saveSlowThreshold(ctx context.Context, wt *wtv1.Watchtower, threshold string) {
	p.t.Helper()
	page := p.get(ctx, "/configure?watchtower="+url.QueryEscape(wt.Namespace+"/"+wt.Name))
	form := url.Values{}
	for _, m := range formInput.FindAllStringSubmatch(page, -1) {
		form.Set(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	for _, m := range formSelected.FindAllStringSubmatch(page, -1) {
		form.Set(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	for _, m := range formChecked.FindAllStringSubmatch(page, -1) {
		form.Add(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	if form.Get("resourceVersion") != wt.ResourceVersion || form.Get("slowThreshold") == "" {
		p.t.Fatalf("the Configure page's form %v is not Watchtower %s/%s at %s", form, wt.Namespace, wt.Name, wt.ResourceVersion)
	}
	form.Set("slowThreshold", threshold)
	code, h, body := p.do(ctx, http.MethodPost, "/configure", form)
	if code != http.StatusSeeOther || !strings.Contains(h.Get("Location"), "saved=") {
		p.t.Fatalf("saving the Configure form: HTTP %d, Location %q\n%s", code, h.Get("Location"), body)
	}
}

// The form's inputs as the console renders them (its attribute order); the API server's proxy
// re-renders the HTML it passes, writing a bare "selected" as selected="".
var (
	formInput    = regexp.MustCompile(`<input (?:type="hidden" )?(?:id="[^"]*" )?name="([^"]+)" value="([^"]*)"`)
	formSelected = regexp.MustCompile(`(?s)<select id="[^"]*" name="([^"]+)">.*?<option selected(?:="[^"]*")?>([^<]*)</option>`)
	formChecked  = regexp.MustCompile(`<input type="checkbox" name="([^"]+)" value="([^"]*)" checked(?:="[^"]*")?/?>`)
)
