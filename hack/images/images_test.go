package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// pauseSpec is the smallest image: a standard-library binary, quick to build for two platforms.
func pauseSpec(t *testing.T) (spec, string) {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs(repo, "0.0.0-test") {
		if s.Short == "pause" {
			return s, repo
		}
	}
	t.Fatal("no pause image in specs")
	return spec{}, ""
}

func testMeta() meta {
	return meta{Version: "0.0.0-test", Revision: "0123456789abcdef", Created: layerEpoch.AddDate(56, 0, 0)}
}

func build(t *testing.T, out string) result {
	t.Helper()
	s, _ := pauseSpec(t)
	plats, err := parsePlatforms("linux/arm64,linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	r, err := buildImage(s, testMeta(), plats, out, t.TempDir(), "/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatalf("buildImage: %v", err)
	}
	return r
}

// The same inputs give the same digest wherever they are built, and a second build into the
// same place writes nothing.
func TestImagesAreReproducible(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	ra := build(t, a)
	rb := build(t, b)
	if ra.Digest != rb.Digest {
		t.Fatalf("two builds of the same inputs differ: %s and %s", ra.Digest, rb.Digest)
	}
	if !ra.Written {
		t.Error("the first build reports it wrote nothing")
	}
	ta, err := os.ReadFile(filepath.Join(a, "pause.tar"))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := os.ReadFile(filepath.Join(b, "pause.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ta, tb) {
		t.Error("the two builds' tarballs differ byte for byte")
	}
	again := build(t, a)
	if again.Written || again.Digest != ra.Digest {
		t.Errorf("rebuild of unchanged inputs: written=%v digest=%s, want unchanged %s", again.Written, again.Digest, ra.Digest)
	}
	// A changed label is a new image.
	s, _ := pauseSpec(t)
	m := testMeta()
	m.Revision = "fedcba9876543210"
	plats, _ := parsePlatforms("linux/amd64,linux/arm64")
	rc, err := buildImage(s, m, plats, t.TempDir(), t.TempDir(), "/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatal(err)
	}
	if rc.Digest == ra.Digest {
		t.Error("a different revision label gave the same digest")
	}
}

// What a cluster and a user see of the image: its name as containerd imports it, both
// platforms, the non-root user, the OCI labels, a static binary as entrypoint and no shell.
func TestImageContents(t *testing.T) {
	out := t.TempDir()
	r := build(t, out)

	p, err := layout.FromPath(filepath.Join(out, "pause"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want 1", len(tm.Manifests))
	}
	entry := tm.Manifests[0]
	if entry.Digest != r.Digest {
		t.Errorf("index.json names %s, the build reported %s", entry.Digest, r.Digest)
	}
	name := entry.Annotations[annotationContainerdName]
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		t.Fatalf("containerd name %q: %v", name, err)
	}
	if named.String() != name {
		t.Errorf("containerd name %q is not normalized (%q): the kubelet would not find it", name, named.String())
	}
	if got := reference.FamiliarString(named); got != "gowatchtower/pause:0.0.0-test" {
		t.Errorf("image name %q, want gowatchtower/pause:0.0.0-test", got)
	}

	idx, err := top.ImageIndex(entry.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, d := range im.Manifests {
		plats = append(plats, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, d.Platform, img)
	}
	if strings.Join(plats, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("platforms %v, want linux/amd64 and linux/arm64", plats)
	}
	if im.Annotations["org.opencontainers.image.revision"] != "0123456789abcdef" {
		t.Errorf("index annotations %v lack the revision", im.Annotations)
	}

	// The tarball is the same layout: what `ctr images import` reads.
	f, err := os.Open(filepath.Join(out, "pause.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	for name := range readTar(t, f) {
		names[name] = true
	}
	for _, want := range []string{"oci-layout", "index.json", "blobs/sha256/" + r.Digest.Hex} {
		if !names[want] {
			t.Errorf("pause.tar has no %s", want)
		}
	}
}

func checkImage(t *testing.T, p *v1.Platform, img v1.Image) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != p.Architecture || cf.OS != "linux" {
		t.Errorf("%s: config says %s/%s", p, cf.OS, cf.Architecture)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("%s: user %q, want 65532:65532", p, cf.Config.User)
	}
	for _, k := range []string{"source", "version", "revision", "created", "title"} {
		if cf.Config.Labels["org.opencontainers.image."+k] == "" {
			t.Errorf("%s: no org.opencontainers.image.%s label", p, k)
		}
	}
	if got := cf.Config.Labels["org.opencontainers.image.version"]; got != "0.0.0-test" {
		t.Errorf("%s: version label %q", p, got)
	}
	if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/pause" {
		t.Errorf("%s: entrypoint %v, want [/pause]", p, cf.Config.Entrypoint)
	}
	files := flatten(t, img)
	if _, ok := files["bin/sh"]; ok {
		t.Errorf("%s: the image has a shell", p)
	}
	bin, ok := files["pause"]
	if !ok {
		t.Fatalf("%s: no /pause in the image", p)
	}
	if bin.mode&0o111 == 0 {
		t.Errorf("%s: /pause is not executable (mode %o)", p, bin.mode)
	}
	ef, err := elf.NewFile(bytes.NewReader(bin.data))
	if err != nil {
		t.Fatalf("%s: /pause is not an ELF file: %v", p, err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Architecture]
	if ef.Machine != want {
		t.Errorf("%s: /pause is built for %s", p, ef.Machine)
	}
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s: /pause is dynamically linked: the image has no loader", p)
		}
	}
	if _, ok := files["etc/ssl/certs/ca-certificates.crt"]; !ok {
		t.Errorf("%s: no CA bundle", p)
	}
	if !strings.Contains(string(files["etc/passwd"].data), "nonroot:x:65532:65532") {
		t.Errorf("%s: /etc/passwd has no nonroot user 65532", p)
	}
}

type entry struct {
	mode int64
	data []byte
}

// readTar is every entry of a tar stream, by name (a directory's without its trailing slash).
func readTar(t *testing.T, r io.Reader) map[string]entry {
	t.Helper()
	entries := map[string]entry{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		entries[strings.TrimSuffix(h.Name, "/")] = entry{mode: h.Mode, data: b}
	}
}

// flatten reads every layer, later layers winning, as a container's root file system would.
func flatten(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]entry{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		for name, e := range readTar(t, rc) {
			files[name] = e
		}
		rc.Close()
	}
	return files
}
