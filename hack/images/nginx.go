package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// The nginx image is Debian's nginx: the binary from the `nginx` package (in bookworm that
// package holds /usr/sbin/nginx; nginx-light and nginx-core only add module packages), the
// shared libraries it loads with their loader, mime.types from nginx-common, and a
// configuration of ours. Nothing else of the packages: no shell, no maintainer scripts.

var nginxConfig = config{
	// -e stderr: nginx opens its compiled-in error log (/var/log/nginx/error.log) before it
	// reads the configuration; the image has no such directory and the user could not write it.
	Entrypoint:   []string{"/usr/sbin/nginx", "-e", "stderr"},
	ExposedPorts: []string{"8080/tcp"},
	// SIGQUIT is nginx's graceful shutdown (SIGTERM drops open connections), as in nginx's
	// own images.
	StopSignal: "SIGQUIT",
}

// nginxConfParams are what differs between the image and the smoke test of prepareNginx.
type nginxConfParams struct {
	Listen string // "8080" in the image
	Etc    string // the directory of mime.types
	HTML   string // the document root
	Tmp    string // pid file and temporary files
}

// nginxConf is the image's /etc/nginx/nginx.conf. A non-root user cannot bind port 80, and
// nothing but /tmp is writable for it, so nginx listens on 8080 and keeps its pid and
// temporary files in /tmp; logs go to the container's stdout and stderr.
func nginxConf(p nginxConfParams) string {
	r := strings.NewReplacer("LISTEN", p.Listen, "ETC", p.Etc, "HTML", p.HTML, "TMP", p.Tmp)
	return r.Replace(`# GoWatchtower's nginx workload (built by hack/images). It runs as user 65532.
daemon off;
worker_processes 1;
pid TMP/nginx.pid;
error_log stderr notice;

events {
    worker_connections 256;
}

http {
    include ETC/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    server_tokens off;
    sendfile on;

    client_body_temp_path TMP/nginx-client-body;
    proxy_temp_path TMP/nginx-proxy;
    fastcgi_temp_path TMP/nginx-fastcgi;
    uwsgi_temp_path TMP/nginx-uwsgi;
    scgi_temp_path TMP/nginx-scgi;

    server {
        listen LISTEN;
        root HTML;

        location = /healthz {
            access_log off;
            default_type text/plain;
            return 200 "ok\n";
        }

        location / {
            index index.html;
        }
    }
}
`)
}

const nginxIndexHTML = `<!doctype html>
<html>
<head><title>GoWatchtower nginx workload</title></head>
<body>
<h1>GoWatchtower's nginx workload</h1>
<p>This is the nginx workload of GoWatchtower's example operator: Debian's nginx in an image
built without Docker by <code>make images</code>.</p>
</body>
</html>
`

// nginxRootfs is the top layer of the nginx image.
type nginxRootfs struct {
	Version string // the Debian version of the nginx package
	Files   []file
}

// prepareNginx downloads (once) and verifies the Debian packages, picks the files the image
// needs, and proves that they run: nginx is started from a copy of them on a loopback port and
// must serve / and /healthz with no library from the build machine.
func prepareNginx(toolsDir, work, arch string) (nginxRootfs, error) {
	version, err := aptField("nginx", arch, "Version")
	if err != nil {
		return nginxRootfs{}, err
	}
	debs, err := nginxDebs(filepath.Join(toolsDir, "nginx-debs-"+version), arch)
	if err != nil {
		return nginxRootfs{}, err
	}

	debroot := filepath.Join(work, "debroot")
	if err := os.RemoveAll(debroot); err != nil {
		return nginxRootfs{}, err
	}
	if err := os.MkdirAll(debroot, 0o755); err != nil {
		return nginxRootfs{}, err
	}
	for _, d := range debs {
		if out, err := exec.Command("dpkg-deb", "-x", d, debroot).CombinedOutput(); err != nil {
			return nginxRootfs{}, fmt.Errorf("dpkg-deb -x %s: %v\n%s", d, err, out)
		}
	}

	libDirs := multiarchLibDirs(arch)
	paths, err := elfClosure(debroot, "/usr/sbin/nginx", libDirs)
	if err != nil {
		return nginxRootfs{}, err
	}
	paths = append(paths, "/etc/nginx/mime.types")
	var files []file
	for _, p := range paths {
		f, err := fileFrom(debroot, p)
		if err != nil {
			return nginxRootfs{}, err
		}
		files = append(files, f)
	}
	files = append(files,
		regular("/etc/nginx/nginx.conf", 0o644, []byte(nginxConf(nginxConfParams{
			Listen: "8080", Etc: "/etc/nginx", HTML: "/usr/share/nginx/html", Tmp: "/tmp",
		}))),
		regular("/usr/share/nginx/html/index.html", 0o644, []byte(nginxIndexHTML)),
	)
	interp, err := elfInterp(filepath.Join(debroot, "usr/sbin/nginx"))
	if err != nil {
		return nginxRootfs{}, err
	}
	if err := smokeNginx(files, resolveIn(debroot, interp), libDirs); err != nil {
		return nginxRootfs{}, fmt.Errorf("the extracted nginx does not work: %w", err)
	}
	return nginxRootfs{Version: version, Files: files}, nil
}

// debsManifest, in a cache directory, lists the packages downloaded into it, one
// "package version sha256 file" a line, once all of them are there and verified.
const debsManifest = "packages.txt"

// nginxDebs returns the .deb files of nginx, nginx-common and the libraries nginx depends on,
// from cache, a directory per nginx version. The first run resolves and downloads them (about
// ten apt calls; apt here keeps no binary cache, so each costs a second or two). Later runs
// only check the files against the manifest's SHA256s: the libraries stay at the versions
// first downloaded until nginx's own version changes (or the directory is removed).
func nginxDebs(cache, arch string) ([]string, error) {
	if debs, err := cachedDebs(cache); err == nil {
		return debs, nil
	}
	libs, err := libraryDeps("nginx", arch)
	if err != nil {
		return nil, err
	}
	pkgs := append([]string{"nginx", "nginx-common"}, libs...)
	show, err := aptShow(pkgs, arch)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	var debs []string
	var manifest strings.Builder
	for _, p := range pkgs {
		f := show[p]
		want, version, filename := f["SHA256"], f["Version"], f["Filename"]
		if want == "" || version == "" || filename == "" {
			return nil, fmt.Errorf("apt-cache show %s: no SHA256, Version or Filename", p)
		}
		dst := filepath.Join(cache, path.Base(filename))
		if err := downloadDeb(p+":"+arch+"="+version, want, dst); err != nil {
			return nil, err
		}
		debs = append(debs, dst)
		fmt.Fprintf(&manifest, "%s %s %s %s\n", p, version, want, path.Base(filename))
	}
	return debs, os.WriteFile(filepath.Join(cache, debsManifest), []byte(manifest.String()), 0o644)
}

// cachedDebs are the files of cache's manifest, if every one is there with its SHA256.
func cachedDebs(cache string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(cache, debsManifest))
	if err != nil {
		return nil, err
	}
	var debs []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("%s: bad line %q", debsManifest, line)
		}
		p := filepath.Join(cache, f[3])
		if sum, err := sha256File(p); err != nil || sum != f[2] {
			return nil, fmt.Errorf("%s: not there or not SHA256 %s", p, f[2])
		}
		debs = append(debs, p)
	}
	return debs, nil
}

// downloadDeb fetches pkg (name:arch=version) to dst with apt-get download, unless dst
// already has the SHA256 the package lists give (want).
func downloadDeb(pkg, want, dst string) error {
	if got, err := sha256File(dst); err == nil && got == want {
		return nil
	}
	// apt-get download names the file itself (with the epoch escaped): fetch into an empty
	// directory and take the one file it holds.
	tmp, err := os.MkdirTemp(filepath.Dir(dst), "download-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("apt-get", "download", "-q", pkg)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
	}
	got, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil || len(got) != 1 {
		return fmt.Errorf("apt-get download %s: want one .deb, got %v", pkg, got)
	}
	if sum, err := sha256File(got[0]); err != nil || sum != want {
		return fmt.Errorf("%s: SHA256 %s, the package lists say %s", got[0], sum, want)
	}
	return os.Rename(got[0], dst)
}

// aptShow are the stanzas of the candidate versions of pkgs (apt-cache show
// --no-all-versions), by package name, in one call.
func aptShow(pkgs []string, arch string) (map[string]map[string]string, error) {
	args := []string{"show", "--no-all-versions"}
	for _, p := range pkgs {
		args = append(args, p+":"+arch)
	}
	out, err := exec.Command("apt-cache", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %v: %v (are the package lists there? `apt-get update` as root)", pkgs, err)
	}
	stanzas := map[string]map[string]string{}
	for _, stanza := range strings.Split(string(out), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
				fields[k] = v
			}
		}
		if name := fields["Package"]; name != "" {
			if _, dup := stanzas[name]; !dup {
				stanzas[name] = fields
			}
		}
	}
	for _, p := range pkgs {
		if stanzas[p] == nil {
			return nil, fmt.Errorf("apt-cache show: no package %s for %s (are the package lists there? `apt-get update` as root)", p, arch)
		}
	}
	return stanzas, nil
}

func aptField(pkg, arch, field string) (string, error) {
	show, err := aptShow([]string{pkg}, arch)
	if err != nil {
		return "", err
	}
	if v := show[pkg][field]; v != "" {
		return v, nil
	}
	return "", fmt.Errorf("apt-cache show %s: no %s", pkg, field)
}

// libraryDeps are the packages of section libs that pkg depends on, directly or through
// other such packages. `apt-cache depends --recurse` would also follow nginx's iproute2 and
// nginx-common's debconf into perl and a dozen libraries nginx never loads; which of the
// libraries go into the image is decided afterwards by the binary itself (elfClosure).
func libraryDeps(pkg, arch string) ([]string, error) {
	seen := map[string]bool{pkg: true}
	var out []string
	for frontier := []string{pkg}; len(frontier) > 0; {
		deps, err := aptDepends(frontier, arch)
		if err != nil {
			return nil, err
		}
		var fresh []string
		for _, d := range deps {
			if !seen[d] {
				seen[d] = true
				fresh = append(fresh, d)
			}
		}
		frontier = nil
		if len(fresh) == 0 {
			break
		}
		show, err := aptShow(fresh, arch)
		if err != nil {
			return nil, err
		}
		for _, d := range fresh {
			if show[d]["Section"] == "libs" {
				out = append(out, d)
				frontier = append(frontier, d)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// aptDepends are the hard dependencies (Depends, Pre-Depends; the first of alternatives) of
// pkgs, in one call.
func aptDepends(pkgs []string, arch string) ([]string, error) {
	args := []string{"depends", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}
	for _, p := range pkgs {
		args = append(args, p+":"+arch)
	}
	out, err := exec.Command("apt-cache", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache depends %v: %w", pkgs, err)
	}
	var deps []string
	alternative := false
	for _, line := range strings.Split(string(out), "\n") {
		t := strings.TrimSpace(line)
		first := !alternative
		alternative = strings.HasPrefix(t, "|")
		t = strings.TrimPrefix(t, "|")
		k, v, ok := strings.Cut(t, ": ")
		if !ok || (k != "Depends" && k != "PreDepends") || !first {
			continue
		}
		if strings.HasPrefix(v, "<") {
			continue // a virtual package: never a library here
		}
		v, _, _ = strings.Cut(v, ":")
		deps = append(deps, v)
	}
	return deps, nil
}

func sha256File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// multiarchLibDirs are the directories Debian's dynamic loader searches without an
// ld.so.cache, which the image does not have.
func multiarchLibDirs(arch string) []string {
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[arch]
	return []string{"/lib/" + triplet, "/usr/lib/" + triplet, "/lib", "/usr/lib"}
}

// elfInterp is the program interpreter (dynamic loader) an ELF file names.
func elfInterp(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return "", err
			}
			return strings.TrimRight(string(b), "\x00"), nil
		}
	}
	return "", nil
}

// resolveIn follows symlinks of the image path p inside root and returns the image path of
// the file at the end; absolute link targets are taken inside root.
func resolveIn(root, p string) string {
	for range 16 {
		t, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return p
		}
		if !path.IsAbs(t) {
			t = path.Join(path.Dir(p), t)
		}
		p = path.Clean(t)
	}
	return p
}

// elfClosure is what ldd would list for bin, computed inside root instead of on the build
// machine (so it also works for another architecture): bin, its loader, and every shared
// library reachable through DT_NEEDED, found in libDirs, with the symlinks that lead to them.
// A library that is not in root is an error: the image would not start.
func elfClosure(root, bin string, libDirs []string) ([]string, error) {
	include := map[string]bool{}
	scanned := map[string]bool{}
	// addChain includes p and every symlink on the way to its file, and returns the file.
	addChain := func(p string) string {
		for range 16 {
			include[p] = true
			t, err := os.Readlink(filepath.Join(root, p))
			if err != nil {
				return p // not a symlink
			}
			if !path.IsAbs(t) {
				t = path.Join(path.Dir(p), t)
			}
			p = path.Clean(t)
		}
		return p
	}
	queue := []string{addChain(bin)}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if scanned[p] {
			continue
		}
		scanned[p] = true
		f, err := elf.Open(filepath.Join(root, p))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		needed, err := f.ImportedLibraries()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		interp, err := elfInterp(filepath.Join(root, p))
		if err != nil {
			return nil, err
		}
		if interp != "" {
			if _, err := os.Lstat(filepath.Join(root, interp)); err != nil {
				return nil, fmt.Errorf("%s: loader %s is not in the packages", p, interp)
			}
			queue = append(queue, addChain(interp))
		}
		for _, soname := range needed {
			found := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(root, d, soname)); err == nil {
					found = path.Join(d, soname)
					break
				}
			}
			if found == "" {
				return nil, fmt.Errorf("%s needs %s, which none of the packages has in %v", p, soname, libDirs)
			}
			queue = append(queue, addChain(found))
		}
	}
	var out []string
	for p := range include {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// fileFrom is the layer entry for image path p of root: its symlink as it is, or its file
// with mode 0755 or 0644 whatever the package said about owners.
func fileFrom(root, p string) (file, error) {
	src := filepath.Join(root, p)
	st, err := os.Lstat(src)
	if err != nil {
		return file{}, err
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return file{}, err
		}
		return file{Path: p, Type: tar.TypeSymlink, Mode: 0o777, Link: t}, nil
	case st.Mode().IsRegular():
		mode := int64(0o644)
		if st.Mode()&0o111 != 0 {
			mode = 0o755
		}
		return file{Path: p, Type: tar.TypeReg, Mode: mode, Src: src}, nil
	}
	return file{}, fmt.Errorf("%s: neither a file nor a symlink", p)
}

// materialize writes files under dir, for running them on the build machine.
func materialize(files []file, dir string) error {
	for _, f := range files {
		dst := filepath.Join(dir, f.Path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		switch f.Type {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, os.FileMode(f.Mode)&os.ModePerm); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(f.Link, dst); err != nil {
				return err
			}
		case tar.TypeReg:
			data := f.Data
			if f.Src != "" {
				b, err := os.ReadFile(f.Src)
				if err != nil {
					return err
				}
				data = b
			}
			if err := os.WriteFile(dst, data, os.FileMode(f.Mode)&os.ModePerm); err != nil {
				return err
			}
		}
	}
	return nil
}

// smokeNginx starts nginx from a copy of the image's files under the host's loader-less
// conditions of the image: the bundled loader, only the bundled libraries on its path, and,
// when we are root, the image's user. It must answer / and /healthz, and no shared object it
// mapped may come from outside the copy (a library missing from the image would silently be
// taken from the build machine otherwise).
func smokeNginx(files []file, interp string, libDirs []string) error {
	tmp, err := os.MkdirTemp("", "watchtower-nginx-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// Readable and traversable by the image's user.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	root := filepath.Join(tmp, "rootfs")
	if err := materialize(files, root); err != nil {
		return err
	}
	run := filepath.Join(tmp, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		return err
	}
	asRoot := os.Geteuid() == 0
	if asRoot {
		if err := os.Chown(run, nonrootUID, nonrootGID); err != nil {
			return err
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	conf := filepath.Join(tmp, "nginx.conf")
	err = os.WriteFile(conf, []byte(nginxConf(nginxConfParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", port),
		Etc:    filepath.Join(root, "etc/nginx"),
		HTML:   filepath.Join(root, "usr/share/nginx/html"),
		Tmp:    run,
	})), 0o644)
	if err != nil {
		return err
	}
	var libPath []string
	for _, d := range libDirs {
		libPath = append(libPath, filepath.Join(root, d))
	}
	cmd := exec.Command(filepath.Join(root, interp), "--library-path", strings.Join(libPath, ":"),
		filepath.Join(root, "usr/sbin/nginx"), "-e", "stderr", "-p", run+"/", "-c", conf)
	cmd.Env = []string{}
	// nginx opens /dev/stdout for its access log. runc hands a container's stdio to its user;
	// so do we, else a non-root nginx may not reopen a root-owned pipe.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	var logs bytes.Buffer
	go func() { _, _ = io.Copy(&logs, pr) }()
	if asRoot {
		if err := pw.Chown(nonrootUID, nonrootGID); err != nil {
			return err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nonrootUID, Gid: nonrootGID}}
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		return err
	}
	pw.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	fail := func(format string, args ...any) error {
		stop()
		return fmt.Errorf(format+"\nnginx's output:\n%s", append(args, logs.String())...)
	}

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	var body string
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("nginx exited: %v\nnginx's output:\n%s", err, logs.String())
		default:
		}
		code, b, err := get(client, base+"/")
		if err == nil {
			if code != http.StatusOK {
				return fail("GET /: status %d", code)
			}
			body = b
			break
		}
		if time.Now().After(deadline) {
			return fail("GET /: %v after 10s", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(body, "GoWatchtower") {
		return fail("GET /: the page does not say GoWatchtower: %q", body)
	}
	if code, b, err := get(client, base+"/healthz"); err != nil || code != http.StatusOK || b != "ok\n" {
		return fail("GET /healthz: %d %q %v, want 200 \"ok\\n\"", code, b, err)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid))
	if err != nil {
		return fail("%v", err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		fields := strings.Fields(line)
		// Shared objects only: nginx's shared memory shows up as /dev/zero.
		if len(fields) < 6 || !strings.Contains(path.Base(fields[5]), ".so") {
			continue
		}
		if !strings.HasPrefix(fields[5], root+"/") {
			return fail("nginx mapped %s from the build machine: the image lacks it", fields[5])
		}
	}
	stop()
	return nil
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
