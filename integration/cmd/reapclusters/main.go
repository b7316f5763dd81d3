// Command reapclusters tears down the test clusters (integration/harness StartCluster) whose test
// process is gone, and exits 1 if it found any: a cluster that outlives its test is a harness
// defect, and its containers, mounts, cgroups and veth would otherwise stay on the machine.
// hack/reap.sh runs it after the integration suite.
package main

import (
	"fmt"
	"os"

	"github.com/gowatchtower/watchtower/integration/harness"
)

func main() {
	errs := harness.ReapClusters()
	for _, err := range errs {
		fmt.Fprintln(os.Stderr, "reap:", err)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
}
