package harness

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Helm runs the pinned helm (`make tools`) in the repository root, so that charts are named by
// their path in it, with its configuration, cache and data in a folder of its own: nothing of the
// user's helm setup is read or written.
type Helm struct {
	bin, home, dir string
}

// NewHelm is a Helm keeping its state in one of t's temporary directories.
func NewHelm(t TB) *Helm {
	t.Helper()
	tools := MustTools(t)
	return &Helm{bin: tools.Path(t, "helm", "HELM_VERSION", "helm"), home: t.TempDir(), dir: tools.RepoRoot}
}

// Run runs helm with args and returns its standard output; the error carries its standard error.
func (h *Helm) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Dir = h.dir
	cmd.Env = componentEnv([]string{
		"HELM_CONFIG_HOME=" + filepath.Join(h.home, "config"),
		"HELM_CACHE_HOME=" + filepath.Join(h.home, "cache"),
		"HELM_DATA_HOME=" + filepath.Join(h.home, "data")})
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}
