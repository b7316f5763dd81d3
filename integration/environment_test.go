package integration

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/gowatchtower/watchtower/integration/harness"
)

const plantedEnvChild = "GWT_TEST_PLANTED_ENV_CHILD"

// planted is what a developer may have in their shell that would change what the API server
// under test does: its OpenTelemetry exporter reads OTEL_EXPORTER_OTLP_*.
var planted = map[string]string{
	"OTEL_EXPORTER_OTLP_HEADERS":   "authorization=developer-secret",
	"OTEL_EXPORTER_OTLP_ENDPOINT":  "http://developer-laptop:4317",
	"WATCHTOWER_SLOW_THRESHOLD_MS": "1",
	"KUBECONFIG":                   "/home/dev/.kube/production",
}

// TestDeveloperEnvironmentNeverReachesEnvtest runs a test binary with a developer's variables
// set, as `make test` in their shell would: envtest starts etcd and kube-apiserver itself, with
// the test process's environment, and neither may see them (TestMain's
// harness.IsolateEnvironment).
func TestDeveloperEnvironmentNeverReachesEnvtest(t *testing.T) {
	if os.Getenv(plantedEnvChild) != "" {
		plantedChild(t)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDeveloperEnvironmentNeverReachesEnvtest$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), plantedEnvChild+"=1")
	for k, v := range planted {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the test binary with the developer's variables set: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "checked the environment of") {
		t.Fatalf("the child did not check its components:\n%s", out.String())
	}
	t.Log(strings.TrimSpace(out.String()[strings.Index(out.String(), "checked the environment of"):]))
}

func plantedChild(t *testing.T) {
	harness.StartKube(t)
	self, err := harness.OwnerOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var checked []string
	for _, p := range harness.ProcessesOwnedBy(self) {
		if !strings.Contains(p.Cmdline, "kube-apiserver") && !strings.Contains(p.Cmdline, "etcd") {
			continue
		}
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/environ")
		if err != nil {
			t.Fatalf("read the environment of %d (%s): %v", p.Pid, p.Cmdline, err)
		}
		for _, kv := range strings.Split(string(raw), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			if _, ok := planted[k]; ok {
				t.Errorf("the developer's %s=%s reached %s", k, v, strings.Fields(p.Cmdline)[0])
			}
		}
		checked = append(checked, strings.Fields(p.Cmdline)[0])
	}
	if len(checked) < 2 {
		t.Fatalf("found %v among the test's processes, want etcd and kube-apiserver", checked)
	}
	t.Logf("checked the environment of %s: none of %d planted variables", strings.Join(checked, ", "), len(planted))
}
