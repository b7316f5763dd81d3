package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildPause compiles this package the way `make images` does: static, no cgo.
func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestPauseExitsZeroOnTermAndInt(t *testing.T) {
	bin := buildPause(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(bin)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			// It must block, not exit on its own.
			select {
			case err := <-done:
				t.Fatalf("pause exited before any signal: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause after %v: %v, want exit status 0", sig, err)
				}
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("pause did not exit within 5s of %v", sig)
			}
		})
	}
}

// TestPauseReapsOrphans runs pause as PID 1 of a new PID namespace, as in a pod, and makes an
// orphan inside it: a shell that starts `sleep` in the background and exits at once. The
// kernel hands the orphan to pause; once it has exited it must not stay a zombie.
func TestPauseReapsOrphans(t *testing.T) {
	// Never skipped: the suite runs as root (the cluster tests need it too), and a skip would
	// hide that pause stopped reaping.
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a new PID namespace and nsenter): run the suite as root, as the cluster tests require")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatalf("nsenter (util-linux) is needed: %v", err)
	}
	bin := buildPause(t)
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	pid := cmd.Process.Pid

	orphan := exec.Command(nsenter, "--target", strconv.Itoa(pid), "--pid", "--", "/bin/sh", "-c", "sleep 1 >/dev/null 2>&1 & exit 0")
	// sleep's output goes elsewhere: holding the pipe open would make CombinedOutput wait for it.
	if out, err := orphan.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v\n%s", err, out)
	}
	// The orphan must have been handed to pause, else this test proves nothing.
	if kids := children(t, pid); len(kids) != 1 {
		t.Fatalf("pause has children %v, want the one orphaned sleep", kids)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		kids := children(t, pid)
		if len(kids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pause left children %v (state Z is an unreaped zombie)", kids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// children lists "pid:state" of every process whose parent is ppid, from /proc.
func children(t *testing.T, ppid int) []string {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the process ended meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 2 || fields[1] != strconv.Itoa(ppid) {
			continue
		}
		kids = append(kids, strings.Fields(s)[0]+":"+fields[0])
	}
	return kids
}
