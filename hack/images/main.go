// Command images builds GoWatchtower's OCI images without Docker: `make images` runs it.
//
// Every image is a static binary (or Debian's nginx with the libraries it loads) on a tiny
// base layer, assembled with go-containerregistry and written as an OCI layout directory
// bin/images/<short>/ and as the tarball of that layout, bin/images/<short>.tar, which
// `ctr images import` and `kind load image-archive` take. The same inputs give the same
// digests; bin/images/digests.txt lists them. docs/images.md explains the choices.
package main

import (
	"archive/tar"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// spec is one image. The names are a contract: the Helm chart, the example operator's
// manifests and the test cluster refer to gowatchtower/<Short>:<version>.
type spec struct {
	Short       string // gowatchtower/<Short>, bin/images/<Short>
	Description string
	Go          *goBuild // a static Go binary ...
	Binary      string   // ... installed at this path and run as the entrypoint
	Nginx       bool     // or Debian's nginx (nginx.go)
	MaxBytes    int64    // upper bound of an image's uncompressed size; 0: none
}

// specs lists the images; repo is the repository root.
func specs(repo, version string) []spec {
	return []spec{
		{
			Short:       "otelcol-watchtower",
			Description: "otelcol-watchtower, GoWatchtower's OpenTelemetry Collector distribution",
			Go: &goBuild{
				Dir: filepath.Join(repo, "otelcol-watchtower"), Package: ".",
				// The tags it is always built with (builder-config.yaml), and the version the
				// image is tagged with rather than one from git: see hack/otelcol.sh.
				Tags:    withTag(collectorTags(repo), tzdataTag),
				LDFlags: []string{"-X main.version=" + version},
			},
			Binary: "/otelcol-watchtower",
			// The collector must stay small enough to roll out fast; ~100 MB today.
			MaxBytes: 110 << 20,
		},
		{
			Short:       "workload-operator",
			Description: "GoWatchtower's example operator, instrumented with GoWatchtower",
			Go:          &goBuild{Dir: repo, Package: "./examples/workload-operator/cmd", Tags: []string{tzdataTag}},
			Binary:      "/manager",
		},
		{
			Short:       "watchtower-operator",
			Description: "the Watchtower operator: a Watchtower resource installs and watches a GoWatchtower pipeline",
			Go: &goBuild{
				Dir: filepath.Join(repo, "operator"), Package: "./cmd", Tags: []string{tzdataTag},
				// The collectors it deploys default to the otelcol-watchtower image of its version.
				LDFlags: []string{"-X main.version=" + version},
			},
			Binary: "/manager",
		},
		{
			Short:       "stress-cpu",
			Description: "a CPU-burning workload of GoWatchtower's example operator",
			Go:          &goBuild{Dir: repo, Package: "./examples/workloads/stress-cpu", Tags: []string{tzdataTag}},
			Binary:      "/stress-cpu",
		},
		{
			Short:       "memory-load",
			Description: "a memory-hungry workload of GoWatchtower's example operator",
			Go:          &goBuild{Dir: repo, Package: "./examples/workloads/memory-load", Tags: []string{tzdataTag}},
			Binary:      "/memory-load",
		},
		{
			Short:       "pause",
			Description: "the pod sandbox process of GoWatchtower's test clusters (containerd's sandbox_image)",
			Go:          &goBuild{Dir: filepath.Join(repo, "integration"), Package: "./cmd/pause"},
			Binary:      "/pause",
		},
		{
			Short:       "nginx",
			Description: "nginx from Debian's packages, a web workload of GoWatchtower's example operator",
			Nginx:       true,
		},
	}
}

// collectorTags are the build_tags of builder-config.yaml, the same line hack/otelcol.sh reads.
func collectorTags(repo string) []string {
	b, err := os.ReadFile(filepath.Join(repo, "builder-config.yaml"))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "build_tags:"); ok {
			v = strings.Trim(strings.TrimSpace(v), `"'`)
			return strings.Split(v, ",")
		}
	}
	return nil
}

// meta is what every image is labelled with.
type meta struct {
	Version  string
	Revision string    // HEAD, with -dirty when tracked files differ from it
	Created  time.Time // SOURCE_DATE_EPOCH, else HEAD's commit time
	Licenses string    // SPDX expression; empty while the repository has no license
}

const sourceURL = "https://github.com/gowatchtower/watchtower"

// labels are the OCI annotations of an image: on its configuration (what `docker inspect` and
// `crictl inspecti` show), its manifests and its index (what registries show).
func (m meta) labels(s spec) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.source":      sourceURL,
		"org.opencontainers.image.version":     m.Version,
		"org.opencontainers.image.revision":    m.Revision,
		"org.opencontainers.image.title":       s.Short,
		"org.opencontainers.image.description": s.Description,
		"org.opencontainers.image.created":     m.Created.UTC().Format(time.RFC3339),
	}
	if m.Licenses != "" {
		l["org.opencontainers.image.licenses"] = m.Licenses
	}
	return l
}

// readMeta derives the labels' values from git and the environment.
func readMeta(repo, version string) (meta, error) {
	m := meta{Version: version}
	rev, err := git(repo, "rev-parse", "HEAD")
	if err != nil {
		return m, err
	}
	// Untracked files are not counted (like `git describe --dirty`): bin/ and editors'
	// leftovers would make every build dirty.
	status, err := git(repo, "status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return m, err
	}
	m.Revision = rev
	if status != "" {
		m.Revision += "-dirty"
	}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		sec, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			return m, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", e, err)
		}
		m.Created = time.Unix(sec, 0).UTC()
	} else {
		ct, err := git(repo, "log", "-1", "--format=%ct", "HEAD")
		if err != nil {
			return m, err
		}
		sec, err := strconv.ParseInt(ct, 10, 64)
		if err != nil {
			return m, fmt.Errorf("commit time %q: %w", ct, err)
		}
		m.Created = time.Unix(sec, 0).UTC()
	}
	return m, nil
}

func git(repo string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// normalizedName is the image's name as the kubelet and containerd spell it: a pod's
// `image: gowatchtower/pause:0.1.0` is looked up under its normalized form. The default
// registry's host comes from the reference library, never from us.
func normalizedName(short, tag string) (string, error) {
	n, err := reference.ParseNormalizedNamed("gowatchtower/" + short + ":" + tag)
	if err != nil {
		return "", err
	}
	return n.String(), nil
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var ps []v1.Platform
	for _, f := range strings.Split(s, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if p.OS != "linux" {
			return nil, fmt.Errorf("platform %s: only linux images are built", f)
		}
		ps = append(ps, *p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].String() < ps[j].String() })
	return ps, nil
}

func main() {
	repo := flag.String("repo", "../..", "the repository root")
	out := flag.String("out", "", "output directory (default <repo>/bin/images)")
	version := flag.String("version", "", "the images' tag and org.opencontainers.image.version (required)")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "platforms of the Go images; nginx is built for the build machine's only")
	only := flag.String("only", "", "comma-separated short names to build (default: all)")
	toolsDir := flag.String("tools-dir", os.Getenv("WATCHTOWER_TOOLS_DIR"), "cache for downloaded Debian packages (default ~/.cache/gowatchtower/tools)")
	caBundle := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "the CA certificates copied into every image")
	flag.Parse()
	if err := run(*repo, *out, *version, *platforms, *only, *toolsDir, *caBundle); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(repo, out, version, platformList, only, toolsDir, caBundle string) error {
	if version == "" {
		return fmt.Errorf("-version is required")
	}
	repo, err := filepath.Abs(repo)
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(repo, "bin", "images")
	}
	if toolsDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return err
		}
		toolsDir = filepath.Join(home, ".cache", "gowatchtower", "tools")
	}
	plats, err := parsePlatforms(platformList)
	if err != nil {
		return err
	}
	m, err := readMeta(repo, version)
	if err != nil {
		return err
	}
	// No license file today: the label appears by itself once one is added.
	m.Licenses = repoLicense(repo)
	want := map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var lines []string
	for _, s := range specs(repo, version) {
		if len(want) > 0 && !want[s.Short] {
			continue
		}
		start := time.Now()
		r, err := buildImage(s, m, plats, out, toolsDir, caBundle)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Short, err)
		}
		state := "unchanged"
		if r.Written {
			state = "written"
		}
		var sizes []string
		for _, ps := range r.Sizes {
			sizes = append(sizes, fmt.Sprintf("%s %.1f MB", ps.Platform, float64(ps.Bytes)/1e6))
		}
		fmt.Printf("images: %-20s %s@%s  %s  (uncompressed: %s)  %.1fs\n",
			s.Short, "gowatchtower/"+s.Short+":"+version, r.Digest, state, strings.Join(sizes, ", "), time.Since(start).Seconds())
		lines = append(lines, fmt.Sprintf("gowatchtower/%s:%s@%s", s.Short, version, r.Digest))
	}
	if len(want) == 0 {
		return os.WriteFile(filepath.Join(out, "digests.txt"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	}
	return nil
}

// repoLicense is the SPDX identifier of the repository's license file, if it has one we know.
func repoLicense(repo string) string {
	for _, name := range []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"} {
		b, err := os.ReadFile(filepath.Join(repo, name))
		if err != nil {
			continue
		}
		switch t := string(b); {
		case strings.Contains(t, "Apache License") && strings.Contains(t, "Version 2.0"):
			return "Apache-2.0"
		case strings.Contains(t, "MIT License") || strings.Contains(t, "Permission is hereby granted, free of charge"):
			return "MIT"
		}
	}
	return ""
}

type platformSize struct {
	Platform string
	Bytes    int64
}

type result struct {
	Name    string // normalized
	Digest  v1.Hash
	Written bool
	Sizes   []platformSize
}

// buildImage builds s for every platform it supports and writes its outputs.
func buildImage(s spec, m meta, plats []v1.Platform, out, toolsDir, caBundle string) (result, error) {
	name, err := normalizedName(s.Short, m.Version)
	if err != nil {
		return result{}, err
	}
	base, baseSize, err := layer(baseFiles(caBundle))
	if err != nil {
		return result{}, err
	}
	labels := m.labels(s)
	work := filepath.Join(out, ".build", s.Short)

	var imgs []platformImage
	var sizes []platformSize
	for _, p := range plats {
		var top []file
		var c config
		switch {
		case s.Go != nil:
			bin := filepath.Join(work, p.OS+"_"+p.Architecture, filepath.Base(s.Binary))
			if _, err := s.Go.build(p.OS, p.Architecture, bin); err != nil {
				return result{}, err
			}
			top = []file{{Path: s.Binary, Type: tar.TypeReg, Mode: 0o755, Src: bin}}
			c = config{Entrypoint: []string{s.Binary}}
		case s.Nginx:
			// Debian's packages for another architecture would need dpkg configured for it
			// (dpkg --add-architecture), which a build must not do to its machine.
			if p.Architecture != runtime.GOARCH {
				continue
			}
			n, err := prepareNginx(toolsDir, filepath.Join(work, p.OS+"_"+p.Architecture), p.Architecture)
			if err != nil {
				return result{}, err
			}
			labels["org.opencontainers.image.description"] = s.Description + " (Debian package " + n.Version + ")"
			top = n.Files
			c = nginxConfig
		}
		l, size, err := layer(top)
		if err != nil {
			return result{}, err
		}
		if s.MaxBytes > 0 && baseSize+size > s.MaxBytes {
			return result{}, fmt.Errorf("%s: %d bytes uncompressed, more than the %d allowed", p, baseSize+size, s.MaxBytes)
		}
		img, err := imageFor(p, []v1.Layer{base, l}, c, labels, m.Created)
		if err != nil {
			return result{}, err
		}
		imgs = append(imgs, platformImage{Platform: p, Image: img})
		sizes = append(sizes, platformSize{Platform: p.String(), Bytes: baseSize + size})
	}
	if len(imgs) == 0 {
		return result{}, fmt.Errorf("none of the platforms %v can be built", plats)
	}
	idx := indexOf(imgs, labels)
	digest, err := idx.Digest()
	if err != nil {
		return result{}, err
	}
	written, err := writeOutputs(idx, filepath.Join(out, s.Short), filepath.Join(out, s.Short+".tar"), name, m.Version)
	if err != nil {
		return result{}, err
	}
	return result{Name: name, Digest: digest, Written: written, Sizes: sizes}, nil
}

// withTag adds tag to tags unless it is there (builder-config.yaml already has timetzdata).
func withTag(tags []string, tag string) []string {
	if slices.Contains(tags, tag) {
		return tags
	}
	return append(tags, tag)
}
