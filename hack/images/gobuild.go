package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// goBuild is one static binary to build.
type goBuild struct {
	Dir     string   // module directory (holds go.mod), absolute
	Package string   // package path relative to Dir, e.g. "./cmd/pause"
	Tags    []string // build tags
	LDFlags []string // extra -ldflags, e.g. "-X main.version=0.1.0"
}

// timetzdata embeds Go's time zone database (about 450 kB) in every binary: the images have no
// /usr/share/zoneinfo, and this is the only way that both time.LoadLocation and the TZ variable
// work without one.
const tzdataTag = "timetzdata"

// flags are the go build flags of an image binary: static (no cgo), no paths, no VCS stamp,
// symbols stripped, and without the build ID unless withBuildID (see build).
func (g goBuild) flags(withBuildID bool) []string {
	ld := []string{"-s", "-w"}
	if !withBuildID {
		ld = append(ld, "-buildid=")
	}
	ld = append(ld, g.LDFlags...)
	args := []string{"-trimpath", "-buildvcs=false", "-ldflags=" + strings.Join(ld, " ")}
	if len(g.Tags) > 0 {
		args = append(args, "-tags="+strings.Join(g.Tags, ","))
	}
	return args
}

// build compiles g for goos/goarch into out and reports whether out changed.
//
// A binary linked with an empty build ID cannot tell the go command that it is up to date, so
// `go build -o out` would relink it every time (tens of seconds for the collector). We let go
// keep a twin, out+".buildid", linked with its normal build ID from the same inputs: go skips
// that link when nothing changed, and only then do we relink out. Both use the compile cache.
func (g goBuild) build(goos, goarch, out string) (changed bool, err error) {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return false, err
	}
	twin := out + ".buildid"
	before, _ := os.Stat(twin)
	if err := g.goBuild(goos, goarch, twin, g.flags(true)); err != nil {
		return false, err
	}
	after, err := os.Stat(twin)
	if err != nil {
		return false, err
	}
	if o, err := os.Stat(out); err == nil && before != nil &&
		before.ModTime().Equal(after.ModTime()) && before.Size() == after.Size() &&
		!o.ModTime().Before(after.ModTime()) {
		return false, nil
	}
	tmp := out + ".tmp"
	if err := g.goBuild(goos, goarch, tmp, g.flags(false)); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, out)
}

func (g goBuild) goBuild(goos, goarch, out string, flags []string) error {
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", out, g.Package)
	cmd := exec.Command("go", args...)
	cmd.Dir = g.Dir
	// The user's GOFLAGS and microarchitecture levels would change the bytes: pin the
	// baseline levels, which every amd64 and arm64 node runs.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=", "GOAMD64=v1", "GOARM64=v8.0")
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s (in %s, %s/%s): %w", strings.Join(args, " "), g.Dir, goos, goarch, err)
	}
	return nil
}
