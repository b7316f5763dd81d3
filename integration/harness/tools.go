package harness

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Tools locates the pinned test components in the tool cache filled by `make tools`. The
// layout (<cache>/<name>-<version>/...) and the versions (tools/versions.env) are shared with
// hack/tools.sh.
type Tools struct {
	// Dir is the cache directory: $WATCHTOWER_TOOLS_DIR, or <user cache dir>/gowatchtower/tools.
	Dir string
	// Versions holds tools/versions.env, e.g. Versions["KAFKA_VERSION"].
	Versions map[string]string
	// RepoRoot is the repository checkout the tests run from.
	RepoRoot string
}

var (
	toolsOnce sync.Once
	toolsVal  *Tools
	toolsErr  error
)

// LoadTools reads tools/versions.env from the repository and resolves the cache directory.
func LoadTools() (*Tools, error) {
	toolsOnce.Do(func() { toolsVal, toolsErr = loadTools() })
	return toolsVal, toolsErr
}

func loadTools() (*Tools, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	versions, err := readEnvFile(filepath.Join(root, "tools", "versions.env"))
	if err != nil {
		return nil, err
	}
	dir := os.Getenv("WATCHTOWER_TOOLS_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("no user cache directory and WATCHTOWER_TOOLS_DIR is unset: %w", err)
		}
		dir = filepath.Join(cache, "gowatchtower", "tools")
	}
	return &Tools{Dir: dir, Versions: versions, RepoRoot: root}, nil
}

// MustTools is LoadTools for tests: it fails the test on error.
func MustTools(t TB) *Tools {
	t.Helper()
	tools, err := LoadTools()
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return tools
}

// Path returns <cache>/<component>-<version of versionKey>/<rel...> and fails the test, naming
// the command that builds it, when the file is not there.
func (tl *Tools) Path(t TB, component, versionKey string, rel ...string) string {
	t.Helper()
	version, ok := tl.Versions[versionKey]
	if !ok {
		t.Fatalf("harness: tools/versions.env has no %s", versionKey)
	}
	p := filepath.Join(append([]string{tl.Dir, component + "-" + version}, rel...)...)
	if _, err := os.Stat(filepath.Join(tl.Dir, component+"-"+version, ".done")); err != nil {
		t.Fatalf("harness: %s %s is not in the tool cache %s; run `make tools` (or hack/tools.sh %s)", component, version, tl.Dir, component)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("harness: %s: %v; rebuild it with `rm -rf %s && make tools`", component, err, filepath.Dir(p))
	}
	return p
}

// KubebuilderAssets is the directory envtest takes as KUBEBUILDER_ASSETS (kube-apiserver,
// etcd, kubectl).
func (tl *Tools) KubebuilderAssets(t TB) string {
	t.Helper()
	v := tl.Versions["KUBERNETES_VERSION"] + "-etcd-" + tl.Versions["ETCD_VERSION"]
	dir := filepath.Join(tl.Dir, "envtest-"+v)
	if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
		t.Fatalf("harness: the envtest assets %s are not in the tool cache; run `make tools`", dir)
	}
	return dir
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "tools", "versions.env")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("cannot find tools/versions.env above %s: run the tests from inside the repository", wd)
		}
	}
}

// readEnvFile parses KEY=value lines; '#' starts a comment line.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=value, got %q", path, n, line)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, sc.Err()
}
