package integration

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/gowatchtower/watchtower/integration/harness"
)

func TestMain(m *testing.M) {
	// The overload test runs this binary again as an operator's SDK (overload_test.go), with
	// OTEL_* variables that the isolation below would remove.
	if spec := os.Getenv(sdkLoadEnv); spec != "" {
		os.Exit(sdkLoad(spec))
	}
	// A developer's OTEL_*, WATCHTOWER_* and KUBECONFIG must not change what a test sees:
	// envtest's etcd and kube-apiserver inherit this process's environment.
	harness.IsolateEnvironment()
	// envtest and the in-process controllers log through controller-runtime's logger; the tests
	// assert on what the components did, not on log lines, and each component's own log is
	// printed by the harness when a test fails. Without a logger controller-runtime prints a
	// stack trace warning into the test output.
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	if demoBinDir != "" {
		os.RemoveAll(demoBinDir)
	}
	os.Exit(code)
}
