// Command pause is GoWatchtower's pause process: the program containerd runs as every pod
// sandbox's first process (its sandbox_image, built by `make images` as gowatchtower/pause).
// No public pause image can be pulled where the project's test clusters run, so we build one.
//
// It holds the pod's namespaces open by doing nothing, and as PID 1 of the pod's PID namespace
// (when the pod shares one) it reaps the zombies that orphaned processes leave behind. SIGTERM
// and SIGINT end it with status 0, which is what the kubelet expects when it stops a sandbox.
//
// It uses the standard library only, so that it builds statically (CGO_ENABLED=0) with nothing
// but the Go toolchain.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 16)
	// SIGCHLD is delivered once for several children that exit together, hence the wait4 loop.
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	// Children that ended before Notify was in place would never be signalled again.
	reap()
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every child that has exited, without blocking on those still running.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		// pid 0: children remain, none exited; ECHILD: no children at all.
		if pid <= 0 || err != nil {
			return
		}
	}
}
