package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Annotations on the index.json entry of a layout. containerd's importer (`ctr images import`,
// and so `kind load image-archive`) names the image after the first; the second is the OCI
// layout's own way to tag an entry, which other tools (skopeo, crane) read.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// writeOutputs writes idx as the OCI layout dir and as the tarball of that same layout,
// tar, with its index.json entry naming it fullName (normalized, as containerd stores it) and
// tag. When dir already holds this index under this name and tar exists, nothing is written:
// the digest covers every byte of every blob, so equal digests mean equal outputs.
func writeOutputs(idx v1.ImageIndex, dir, tarPath, fullName, tag string) (written bool, err error) {
	digest, err := idx.Digest()
	if err != nil {
		return false, err
	}
	annotations := map[string]string{annotationContainerdName: fullName, annotationRefName: tag}
	if upToDate(dir, tarPath, digest, annotations) {
		return false, nil
	}

	// Build next to the final paths and rename into place, so that an interrupted run never
	// leaves a layout or tarball that looks complete: the tarball is renamed last, and
	// upToDate requires it.
	tmpDir := dir + ".tmp"
	tmpTar := tarPath + ".tmp"
	for _, p := range []string{tmpDir, tmpTar, tarPath} {
		if err := os.RemoveAll(p); err != nil {
			return false, err
		}
	}
	lp, err := layout.Write(tmpDir, empty.Index)
	if err != nil {
		return false, err
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(annotations)); err != nil {
		return false, err
	}
	if err := tarDir(tmpDir, tmpTar); err != nil {
		return false, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, err
	}
	if err := os.Rename(tmpDir, dir); err != nil {
		return false, err
	}
	return true, os.Rename(tmpTar, tarPath)
}

// upToDate reports whether dir's index.json names exactly idx's digest with these
// annotations and the tarball exists.
func upToDate(dir, tarPath string, digest v1.Hash, annotations map[string]string) bool {
	if _, err := os.Stat(tarPath); err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return false
	}
	var m v1.IndexManifest
	if json.Unmarshal(b, &m) != nil || len(m.Manifests) != 1 || m.Manifests[0].Digest != digest {
		return false
	}
	if len(m.Manifests[0].Annotations) != len(annotations) {
		return false
	}
	for k, v := range annotations {
		if m.Manifests[0].Annotations[k] != v {
			return false
		}
	}
	// The blobs must all be there, not just index.json: a half-deleted layout is rewritten.
	return blobsPresent(dir) == nil
}

// blobsPresent checks that every blob the layout at dir references exists with its size.
// It does not re-hash them: that would cost as much as writing them.
func blobsPresent(dir string) error {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	ii, err := lp.ImageIndex()
	if err != nil {
		return err
	}
	top, err := ii.IndexManifest()
	if err != nil {
		return err
	}
	var descs []v1.Descriptor
	for _, d := range top.Manifests {
		child, err := ii.ImageIndex(d.Digest)
		if err != nil {
			return err
		}
		m, err := child.IndexManifest()
		if err != nil {
			return err
		}
		descs = append(descs, d)
		for _, md := range m.Manifests {
			img, err := child.Image(md.Digest)
			if err != nil {
				return err
			}
			man, err := img.Manifest()
			if err != nil {
				return err
			}
			descs = append(descs, md, man.Config)
			descs = append(descs, man.Layers...)
		}
	}
	for _, d := range descs {
		st, err := os.Stat(filepath.Join(dir, "blobs", d.Digest.Algorithm, d.Digest.Hex))
		if err != nil {
			return err
		}
		if st.Size() != d.Size {
			return fmt.Errorf("blob %s: %d bytes, want %d", d.Digest, st.Size(), d.Size)
		}
	}
	return nil
}

// tarDir writes the tree under dir as an uncompressed tar at out, reproducibly: sorted
// entries, fixed time, root ownership and fixed modes, whatever the file system says.
func tarDir(dir, out string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, p := range paths {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: layerEpoch, Mode: 0o644, Typeflag: tar.TypeReg}
		if st.IsDir() {
			hdr.Name += "/"
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		} else {
			hdr.Size = st.Size()
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !st.IsDir() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			if err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
