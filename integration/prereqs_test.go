package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestPrereqsNameTheMissingPackage: on a machine without gcc (go test -race needs it) `make
// test`'s first step, hack/tools.sh --check, fails in seconds naming the package and the install
// line, before anything is compiled; with everything present it passes.
func TestPrereqsNameTheMissingPackage(t *testing.T) {
	root := harness.MustTools(t).RepoRoot
	// A PATH holding everything the check looks for, and what the script itself runs, but gcc.
	bin := t.TempDir()
	for _, cmd := range []string{"bash", "env", "dirname", "sed", "awk", "uname", "mkdir", "sort", "tr", "cat", "head",
		"go", "java", "mvn", "containerd", "ctr", "runc", "nsenter", "unshare", "flock", "ip", "iptables", "curl", "apt-get", "make", "git", "chromium", "python3", "gcc"} {
		p, err := exec.LookPath(cmd)
		if cmd == "python3" {
			// Debian's, which the README installs; a version manager's shim needs its own PATH.
			if _, err := os.Stat("/usr/bin/python3"); err == nil {
				p = "/usr/bin/python3"
			}
		}
		if err != nil {
			t.Fatalf("this machine lacks %s, which the check itself needs: %v", cmd, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, cmd)); err != nil {
			t.Fatal(err)
		}
	}
	check := func() (string, error) {
		cmd := exec.Command(filepath.Join(root, "hack", "tools.sh"), "--check")
		cmd.Env = append(os.Environ(), "PATH="+bin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := check(); err != nil {
		t.Fatalf("with every prerequisite on PATH the check failed: %v\n%s", err, out)
	}
	if err := os.Remove(filepath.Join(bin, "gcc")); err != nil {
		t.Fatal(err)
	}
	out, err := check()
	if err == nil {
		t.Fatalf("without gcc the check passed:\n%s", out)
	}
	for _, want := range []string{"missing host packages: gcc", "apt-get install -y containerd runc containernetworking-plugins iptables iproute2 util-linux curl gcc make git openjdk-17-jdk-headless maven chromium python3-venv"} {
		if !strings.Contains(out, want) {
			t.Errorf("without gcc the check says\n%s\nwant it to say %q", out, want)
		}
	}
}
