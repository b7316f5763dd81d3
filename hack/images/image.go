package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The unprivileged user every image runs as, the same number distroless uses, so that
// runAsNonRoot policies and volume ownership behave as users of those images expect.
const (
	nonrootUID = 65532
	nonrootGID = 65532
)

// file is one entry of a layer. Paths are absolute inside the image.
type file struct {
	Path string
	Type byte  // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	Mode int64 // permission bits, sticky bit included
	UID  int
	GID  int
	Data []byte // contents of a regular file when Src is empty
	Src  string // host file to read a regular file's contents from
	Link string // target of a symlink
}

func regular(p string, mode int64, data []byte) file {
	return file{Path: p, Type: tar.TypeReg, Mode: mode, Data: data}
}

func dir(p string, mode int64) file { return file{Path: p, Type: tar.TypeDir, Mode: mode} }

// layerEpoch is the modification time of every layer entry. It is fixed rather than the
// image's creation time so that a layer's digest depends on its bytes alone: the base layer
// and an unchanged binary keep their digests from commit to commit, and registries and
// containerd store them once.
var layerEpoch = time.Unix(0, 0).UTC()

// layer is a layer holding files, built reproducibly: entries sorted by path, every parent
// directory present, fixed time, numeric owners only, and the modes given (never the build
// machine's umask or ownership). The uncompressed tar is kept in memory: the largest layer,
// the collector binary, is about 100 MB.
func layer(files []file) (v1.Layer, int64, error) {
	byPath := map[string]file{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			return nil, 0, fmt.Errorf("layer: an entry for / itself")
		}
		f.Path = p
		if _, dup := byPath[p]; dup {
			return nil, 0, fmt.Errorf("layer: %s twice", p)
		}
		byPath[p] = f
	}
	// Parents that were not listed explicitly: root-owned 0755, like any distribution's.
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = dir(d, 0o755)
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := byPath[p]
		hdr := &tar.Header{
			Name:     strings.TrimPrefix(p, "/"),
			Typeflag: f.Type,
			Mode:     f.Mode,
			Uid:      f.UID,
			Gid:      f.GID,
			ModTime:  layerEpoch,
		}
		var body []byte
		switch f.Type {
		case tar.TypeDir:
			hdr.Name += "/"
		case tar.TypeSymlink:
			hdr.Linkname = f.Link
		case tar.TypeReg:
			body = f.Data
			if f.Src != "" {
				b, err := os.ReadFile(f.Src)
				if err != nil {
					return nil, 0, err
				}
				body = b
			}
			hdr.Size = int64(len(body))
		default:
			return nil, 0, fmt.Errorf("layer: %s: unsupported type %q", p, f.Type)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, 0, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, 0, err
	}
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	return l, int64(len(raw)), err
}

// baseFiles are what a static Go binary expects around it, and nothing else: no shell, no
// package manager. The CA bundle is the build machine's (see docs/images.md).
func baseFiles(caBundle string) []file {
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonrootUID, nonrootGID)
	group := "root:x:0:\n" +
		"nogroup:x:65534:\n" +
		fmt.Sprintf("nonroot:x:%d:\n", nonrootGID)
	home := dir("/home/nonroot", 0o700)
	home.UID, home.GID = nonrootUID, nonrootGID
	return []file{
		regular("/etc/passwd", 0o644, []byte(passwd)),
		regular("/etc/group", 0o644, []byte(group)),
		{Path: "/etc/ssl/certs/ca-certificates.crt", Type: tar.TypeReg, Mode: 0o644, Src: caBundle},
		dir("/tmp", 0o1777),
		home,
	}
}

// config is the runtime part of an image's configuration.
type config struct {
	Entrypoint   []string
	Env          []string
	ExposedPorts []string // "8080/tcp"
	StopSignal   string
}

// imageFor assembles one platform's image from its layers (base first). Its configuration
// carries the labels, the fixed creation time and the non-root user, and no history: history
// entries would only repeat the creation time and say nothing a label does not.
func imageFor(p v1.Platform, layers []v1.Layer, c config, labels map[string]string, created time.Time) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = p.Architecture
	cf.OS = p.OS
	cf.Variant = p.Variant
	cf.Created = v1.Time{Time: created.UTC()}
	cf.History = nil
	cf.Config = v1.Config{
		Entrypoint: c.Entrypoint,
		Env:        append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, c.Env...),
		User:       fmt.Sprintf("%d:%d", nonrootUID, nonrootGID),
		WorkingDir: "/",
		Labels:     labels,
		StopSignal: c.StopSignal,
	}
	if len(c.ExposedPorts) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, port := range c.ExposedPorts {
			cf.Config.ExposedPorts[port] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, labels).(v1.Image), nil
}

// platformImage is one platform's image of an index.
type platformImage struct {
	Platform v1.Platform
	Image    v1.Image
}

// indexOf is the multi-platform index of images, in the order given (callers sort by
// platform), annotated like its images.
func indexOf(imgs []platformImage, labels map[string]string) v1.ImageIndex {
	adds := make([]mutate.IndexAddendum, 0, len(imgs))
	for _, pi := range imgs {
		p := pi.Platform
		adds = append(adds, mutate.IndexAddendum{Add: pi.Image, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	return mutate.Annotations(idx, labels).(v1.ImageIndex)
}
