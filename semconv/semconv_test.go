package semconv_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/gowatchtower/watchtower/semconv"
	"github.com/gowatchtower/watchtower/semconv/internal/generator"
)

// TestGeneratedFilesAreCurrent fails when registry.yaml changed without `make generate`.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	data, err := os.ReadFile("registry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := generator.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	wantGo, err := reg.GenerateGo()
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string][]byte{
		"semconv.gen.go":                          wantGo,
		"../docs/semconv.md":                      reg.GenerateMarkdown(),
		"../python/gowatchtower_kafka/semconv.py": reg.GeneratePython(),
	} {
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale against registry.yaml: run `make generate` and commit the result", file)
		}
	}
}

func TestPrometheusNamesFollowTheExporterTranslation(t *testing.T) {
	for got, want := range map[string]string{
		semconv.ReconcileDurationPrometheusName: "watchtower_reconcile_duration_seconds",
		semconv.ReconcilesPrometheusName:        "watchtower_reconciles_total",
		semconv.ReconcileActivePrometheusName:   "watchtower_reconcile_active",
		semconv.QueueWaitPrometheusName:         "watchtower_queue_wait_seconds",
		semconv.APIDurationPrometheusName:       "watchtower_api_duration_seconds",
		semconv.EventsPrometheusName:            "watchtower_events_total",
	} {
		if got != want {
			t.Errorf("Prometheus name %q, want %q", got, want)
		}
	}
}

func TestSpanNames(t *testing.T) {
	if got := semconv.ReconcileSpanName("workload"); got != "reconcile workload" {
		t.Errorf("ReconcileSpanName = %q", got)
	}
	if got := semconv.APICallSpanName("get", "Deployment"); got != "get Deployment" {
		t.Errorf("APICallSpanName = %q", got)
	}
}
