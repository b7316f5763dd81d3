package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
)

// BuildBinary builds the main package pkg (an import path of the root module, or a path relative
// to the repository root, built in the module that holds it) into a per-test-binary temp directory, once per test
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
	// A relative path is built in the module that holds it (the operator is a module of its own).
	modDir, rel := tools.RepoRoot, pkg
	if strings.HasPrefix(pkg, "./") {
		for d := filepath.Join(tools.RepoRoot, pkg); len(d) > len(tools.RepoRoot); d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				modDir = d
				r, err := filepath.Rel(d, filepath.Join(tools.RepoRoot, pkg))
				if err != nil {
					t.Fatal(err)
				}
				rel = "./" + r
				break
			}
		}
	}
	name := filepath.Base(pkg)
	if modDir != tools.RepoRoot && name == "cmd" { // ./operator/cmd: watchtower-operator's "operator"
		name = filepath.Base(modDir)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, rel)
	cmd.Dir = modDir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("harness: go build %s: %v\n%s", pkg, err, b)
	}
	buildCache[pkg] = out
	return out
}
