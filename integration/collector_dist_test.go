// Tests of the otelcol-watchtower distribution itself: the committed generated code agrees with
// builder-config.yaml, the binary contains exactly the manifest's components and reports the
// version its build injected, and the pipeline configurations in deploy/collector validate (and
// a wrong value fails with the collector's own error naming the key).
package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// The component type names the distribution must register (REFERENCE: collector v0.155.0).
var colWantComponents = map[string][]string{
	"receivers":  {"kafka", "otlp", "prometheus"},
	"processors": {"attributes", "filter", "k8s_attributes", "memory_limiter", "redaction", "resource", "tail_sampling", "transform"},
	"connectors": {"forward", "span_metrics"},
	"exporters":  {"debug", "kafka", "otlp_grpc", "otlp_http", "prometheus"},
	"extensions": {"bearertokenauth", "file_storage", "health_check", "kafka_topics_check", "pprof", "zpages"},
}

// colRunScript runs hack/otelcol.sh with args and extra environment.
func colRunScript(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	tools := harness.MustTools(t)
	cmd := exec.Command(filepath.Join(tools.RepoRoot, "hack", "otelcol.sh"), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCollectorGeneratedCodeIsCurrent(t *testing.T) {
	tools := harness.MustTools(t)
	tools.Path(t, "builder", "COLLECTOR_VERSION", "builder")

	out, err := colRunScript(t, nil, "check")
	if err != nil {
		t.Fatalf("otelcol-watchtower/ is stale against builder-config.yaml (run `make otelcol-generate` and commit the result): %v\n%s", err, out)
	}

	// The check must be able to fail: a copy of the committed code checked against a manifest
	// with one component less is stale, and the diff names what changed.
	dir := t.TempDir()
	dist := filepath.Join(dir, "otelcol-watchtower")
	if err := os.MkdirAll(dist, 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := colRunScript(t, nil, "files")
	if err != nil {
		t.Fatalf("hack/otelcol.sh files: %v\n%s", err, files)
	}
	for _, f := range strings.Fields(files) {
		b, err := os.ReadFile(filepath.Join(tools.RepoRoot, "otelcol-watchtower", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dist, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	manifest, err := os.ReadFile(filepath.Join(tools.RepoRoot, "builder-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const dropped = "  - gomod: go.opentelemetry.io/collector/exporter/debugexporter v0.155.0\n"
	if !bytes.Contains(manifest, []byte(dropped)) {
		t.Fatalf("builder-config.yaml has no line %q to drop for the negative check", dropped)
	}
	stale := filepath.Join(dir, "builder-config.yaml")
	if err := os.WriteFile(stale, bytes.Replace(manifest, []byte(dropped), nil, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = colRunScript(t, []string{"OTELCOL_MANIFEST=" + stale, "OTELCOL_DIR=" + dist}, "check")
	if err == nil {
		t.Fatalf("check passed for a manifest without the debug exporter against code that has it:\n%s", out)
	}
	if !strings.Contains(out, "-\tdebugexporter \"go.opentelemetry.io/collector/exporter/debugexporter\"") || !strings.Contains(out, "is stale") {
		t.Fatalf("check failed, but its output does not show the removed component in the diff:\n%s", out)
	}
}

// colManifest is the part of builder-config.yaml the tests read.
type colManifest struct {
	Dist struct {
		Name      string `json:"name"`
		Module    string `json:"module"`
		BuildTags string `json:"build_tags"`
	} `json:"dist"`
	Receivers  []colManifestModule `json:"receivers"`
	Processors []colManifestModule `json:"processors"`
	Connectors []colManifestModule `json:"connectors"`
	Exporters  []colManifestModule `json:"exporters"`
	Extensions []colManifestModule `json:"extensions"`
}

// colManifestModule is a component of the manifest: its module and version, and for the
// project's own components (collector/) the local path.
type colManifestModule struct{ GoMod, Path string }

// colComponentsOutput is `otelcol-watchtower components`.
type colComponentsOutput struct {
	BuildInfo struct {
		Command string `json:"command"`
		Version string `json:"version"`
	} `json:"buildinfo"`
	Receivers  []colComponent `json:"receivers"`
	Processors []colComponent `json:"processors"`
	Connectors []colComponent `json:"connectors"`
	Exporters  []colComponent `json:"exporters"`
	Extensions []colComponent `json:"extensions"`
}

type colComponent struct {
	Name   string `json:"name"`
	Module string `json:"module"`
}

func TestCollectorComponentsMatchManifest(t *testing.T) {
	tools := harness.MustTools(t)
	build := harness.BuildCollector(t)

	raw, err := os.ReadFile(filepath.Join(tools.RepoRoot, "builder-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest colManifest
	if err := yaml.Unmarshal(raw, &manifest); err != nil {
		t.Fatalf("builder-config.yaml: %v", err)
	}
	if manifest.Dist.Name != "otelcol-watchtower" || manifest.Dist.Module != "github.com/gowatchtower/watchtower/otelcol-watchtower" || manifest.Dist.BuildTags != "grpcnotrace,remove_all_sd,timetzdata" {
		t.Errorf("builder-config.yaml dist = %+v, want name otelcol-watchtower, its module path, and tags grpcnotrace,remove_all_sd,timetzdata", manifest.Dist)
	}

	out, err := exec.Command(build.Path, "components").Output()
	if err != nil {
		t.Fatalf("%s components: %v", build.Path, err)
	}
	var got colComponentsOutput
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("parse `components` output: %v\n%s", err, out)
	}
	if got.BuildInfo.Command != "otelcol-watchtower" {
		t.Errorf("components reports command %q, want otelcol-watchtower", got.BuildInfo.Command)
	}

	kinds := []struct {
		kind     string
		manifest []colManifestModule
		binary   []colComponent
	}{
		{"receivers", manifest.Receivers, got.Receivers},
		{"processors", manifest.Processors, got.Processors},
		{"connectors", manifest.Connectors, got.Connectors},
		{"exporters", manifest.Exporters, got.Exporters},
		{"extensions", manifest.Extensions, got.Extensions},
	}
	total := 0
	for _, k := range kinds {
		var wantModules, gotModules, gotNames []string
		for _, m := range k.manifest {
			wantModules = append(wantModules, m.GoMod)
		}
		for _, c := range k.binary {
			gotModules = append(gotModules, c.Module)
			gotNames = append(gotNames, c.Name)
		}
		slices.Sort(wantModules)
		slices.Sort(gotModules)
		slices.Sort(gotNames)
		if !slices.Equal(gotModules, wantModules) {
			t.Errorf("%s: the binary has modules\n  %s\nthe manifest lists\n  %s", k.kind, strings.Join(gotModules, "\n  "), strings.Join(wantModules, "\n  "))
		}
		if want := colWantComponents[k.kind]; !slices.Equal(gotNames, want) {
			t.Errorf("%s: the binary registers %v, want exactly %v", k.kind, gotNames, want)
		}
		for _, m := range k.manifest {
			// The project's own components (collector/) are local modules: v0.0.0 and a path.
			if strings.HasPrefix(m.GoMod, "github.com/gowatchtower/watchtower/") {
				mod, _, _ := strings.Cut(m.GoMod, " ")
				if want := "./" + strings.TrimPrefix(mod, "github.com/gowatchtower/watchtower/"); !strings.HasSuffix(m.GoMod, " v0.0.0") || m.Path != want {
					t.Errorf("%s: the project's own %q must be at v0.0.0 with path %s (it has path %q)", k.kind, m.GoMod, want, m.Path)
				}
				continue
			}
			if !strings.HasSuffix(m.GoMod, " v0.155.0") || m.Path != "" {
				t.Errorf("%s: %q is not at the collector release v0.155.0 (path %q)", k.kind, m.GoMod, m.Path)
			}
		}
		total += len(gotNames)
	}
	t.Logf("otelcol-watchtower %s: %d components, exactly the manifest's", got.BuildInfo.Version, total)
}

func TestCollectorVersionComesFromTheBuild(t *testing.T) {
	build := harness.BuildCollector(t)
	tools := harness.MustTools(t)

	out, err := exec.Command(build.Path, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", build.Path, err)
	}
	if got, want := strings.TrimSpace(string(out)), "otelcol-watchtower version "+build.Version; got != want {
		t.Fatalf("--version printed %q, want %q (the version the build injected)", got, want)
	}
	// The committed source holds no version: the generated main.go reads the variable that the
	// build sets, and its default is not what a build reports.
	src, err := os.ReadFile(filepath.Join(tools.RepoRoot, "otelcol-watchtower", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte(`Version:     "" + version + "",`)) {
		t.Errorf("otelcol-watchtower/main.go does not take its version from the variable `version`")
	}
	def, err := os.ReadFile(filepath.Join(tools.RepoRoot, "otelcol-watchtower", "version.go"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(def, []byte(`"`+build.Version+`"`)) {
		t.Errorf("the build's version %q is the source default in version.go: the test cannot tell that the build injected it", build.Version)
	}
	if head, err := exec.Command("git", "-C", tools.RepoRoot, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		if h := strings.TrimSpace(string(head)); !strings.Contains(build.Version, h) {
			t.Logf("version %q does not name HEAD %s (a tag describes it)", build.Version, h)
		}
	}
	t.Logf("otelcol-watchtower reports %s, injected by its build", build.Version)
}

// colValidateEnv is the environment for `validate`: the test process's, without any WATCHTOWER_*
// knob (the configs' defaults apply), plus extra.
func colValidateEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WATCHTOWER_") || strings.HasPrefix(kv, "WATCHTOWER_TOOLS_DIR=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func colRunValidate(t *testing.T, config string, env []string) (string, error) {
	t.Helper()
	build := harness.BuildCollector(t)
	cmd := exec.Command(build.Path, "validate", "--config", config)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCollectorConfigsValidate(t *testing.T) {
	tools := harness.MustTools(t)
	for _, name := range []string{"gateway", "sampler", "agent"} {
		t.Run(name, func(t *testing.T) {
			config := filepath.Join(tools.RepoRoot, "deploy", "collector", name+".yaml")
			// The agent's k8s_attributes reads the node name from KUBE_NODE_NAME (the downward
			// API sets it in the DaemonSet).
			out, err := colRunValidate(t, config, colValidateEnv("KUBE_NODE_NAME=node-1"))
			if err != nil {
				t.Fatalf("otelcol-watchtower validate --config %s: %v\n%s", config, err, out)
			}
		})
	}
}

func TestCollectorConfigErrorsNameTheKey(t *testing.T) {
	tools := harness.MustTools(t)
	dir := t.TempDir()
	gateway := filepath.Join(tools.RepoRoot, "deploy", "collector", "gateway.yaml")
	raw, err := os.ReadFile(gateway)
	if err != nil {
		t.Fatal(err)
	}
	// A gateway that names a processor the distribution does not have (the batch processor is
	// deliberately not in it: batching is done by the exporters).
	unknown := filepath.Join(dir, "unknown-component.yaml")
	withBatch := strings.Replace(string(raw), "processors:\n  memory_limiter:", "processors:\n  batch:\n  memory_limiter:", 1)
	withBatch = strings.Replace(withBatch, "      processors: [memory_limiter]\n      exporters: [span_metrics", "      processors: [memory_limiter, batch]\n      exporters: [span_metrics", 1)
	if withBatch == string(raw) || !strings.Contains(withBatch, "[memory_limiter, batch]") {
		t.Fatal("could not add a batch processor to a copy of gateway.yaml")
	}
	if err := os.WriteFile(unknown, []byte(withBatch), 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, config string
		env          []string
		want         []string // every one must be in the collector's error
	}{
		{"bad decision_wait duration", gateway, []string{"WATCHTOWER_SAMPLING_DECISION_WAIT=ten-seconds"},
			[]string{`'processors' error reading configuration for "tail_sampling"`, `'decision_wait' time: invalid duration`}},
		{"bad batch flush_timeout duration", gateway, []string{"WATCHTOWER_KAFKA_BATCH_TIMEOUT=soon"},
			[]string{`'exporters' error reading configuration for "kafka"`, `'sending_queue'`, `'batch'`, `'flush_timeout' time: invalid duration`}},
		{"bad slow threshold", gateway, []string{"WATCHTOWER_SLOW_THRESHOLD_MS=slow"},
			[]string{`"tail_sampling"`, `'policies[0].latency.threshold_ms' expected type 'int64'`}},
		{"zero queue size", gateway, []string{"WATCHTOWER_KAFKA_QUEUE_BYTES=0"},
			[]string{"exporters::kafka::sending_queue: `queue_size` must be positive"}},
		{"bad topic check settings", gateway, []string{"WATCHTOWER_KAFKA_TOPICS_CHECK=maybe", "WATCHTOWER_KAFKA_TOPICS_CHECK_TIMEOUT=0s"},
			[]string{"extensions::kafka_topics_check: `on_missing` must be \"fail\" or \"warn\", not \"maybe\"; `start_timeout` must be positive, not 0s"}},
		{"a topic name Kafka refuses", gateway, []string{"WATCHTOWER_KAFKA_SPANS_TOPIC=otlp spans"},
			[]string{"extensions::kafka_topics_check: `topics[0]` \"otlp spans\" is not a valid Kafka topic name"}},
		{"unknown processor", unknown, nil,
			[]string{`'processors' unknown type: "batch" for id: "batch"`}},
		{"agent without its node name", filepath.Join(tools.RepoRoot, "deploy", "collector", "agent.yaml"), nil,
			[]string{`processors::k8s_attributes::filter: ` + "`node_from_env_var`" + ` is configured but envvar "KUBE_NODE_NAME" is not set`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := colRunValidate(t, tc.config, colValidateEnv(tc.env...))
			if err == nil {
				t.Fatalf("validate accepted %s with %v:\n%s", tc.config, tc.env, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("validate failed as it should, but its error does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}
