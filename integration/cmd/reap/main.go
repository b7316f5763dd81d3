// Command reap is the backstop hack/reap.sh runs after the integration suite. It kills every
// process that carries the harness' owner marker (harness.OwnerEnv) while its test binary is
// gone, tears down the test clusters and removes the CPU-limit cgroups whose test is gone,
// prints what the test binaries' watchdogs already reaped, and exits 1 if it found anything: a
// component that outlives its test is a harness defect, even when a watchdog caught it.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gowatchtower/watchtower/integration/harness"
)

func main() {
	found := false
	reports, _ := filepath.Glob(filepath.Join(harness.WatchdogReportDir, "*.log"))
	for _, r := range reports {
		if b, err := os.ReadFile(r); err == nil {
			fmt.Fprint(os.Stderr, "reap: ", string(b))
			found = true
		}
		_ = os.Remove(r)
	}
	for _, o := range harness.ReapProcesses() {
		fmt.Fprintf(os.Stderr, "reap: test component outlived its test and was killed: %s\n", o)
		found = true
	}
	for _, err := range append(harness.ReapClusters(), harness.ReapCPULimits()...) {
		fmt.Fprintln(os.Stderr, "reap:", err)
		found = true
	}
	if found {
		os.Exit(1)
	}
}
