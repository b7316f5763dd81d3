package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
)

// BuildBinary builds the main package pkg (an import path or a path relative to the repository
// root, built from the root module) into a per-test-binary temp directory, once per test
// process, and returns the binary's path. Go's build cache makes repeated runs cheap.
func BuildBinary(t TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildCache[pkg]; ok {
		return p
	}
	tools := MustTools(t)
	dir, err := os.MkdirTemp("", "watchtower-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = tools.RepoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("harness: go build %s: %v\n%s", pkg, err, b)
	}
	buildCache[pkg] = out
	return out
}
