package harness

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"
)

// Browser is a headless Chromium (Debian's chromium package) driven over the DevTools protocol
// with chromedp. It is started as every other component is — its own process group, a death
// signal, the owner marker — so a dying test leaves no browser behind.
type Browser struct {
	proc        *Process
	allocCtx    context.Context
	cancelAlloc context.CancelFunc
}

// StartBrowser starts Chromium; without it the test fails, naming the package to install (as a
// missing tool does: `make prereqs` checks for it up front).
func StartBrowser(t TB) *Browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("harness: the console's tests need Chromium and 'chromium' is not on PATH: apt-get install chromium")
	}
	port := FreePort(t)
	// The background-networking flags keep Chromium from reaching out to the Internet at start;
	// this machine's network is closed and its refusals would only slow it down.
	p := StartProcess(t, ProcessSpec{Name: "chromium", Path: bin, Args: []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), fmt.Sprintf("--remote-debugging-port=%d", port),
		"--remote-debugging-address=127.0.0.1", "about:blank",
	}})
	debug := fmt.Sprintf("http://127.0.0.1:%d", port)
	p.MustWaitReady(t, 60*time.Second, HTTPStatusOK(debug+"/json/version"))
	b := &Browser{proc: p}
	b.allocCtx, b.cancelAlloc = remote.NewAllocator(context.Background(), debug)
	t.Cleanup(b.cancelAlloc)
	return b
}

// Tab opens a new tab; cancel closes it. Each action on it is bounded by timeout.
func (b *Browser) Tab(t TB) (context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.allocCtx, chromedp.WithLogf(t.Logf))
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("harness: opening a Chromium tab: %v", err)
	}
	return ctx, cancel
}
