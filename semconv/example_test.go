package semconv_test

import (
	"fmt"

	"github.com/gowatchtower/watchtower/semconv"
)

// The names a query, a dashboard or an alert uses come from the registry too: the OpenTelemetry
// instrument name and the name Prometheus shows for it.
func Example() {
	fmt.Println(semconv.ReconcilesName, "->", semconv.ReconcilesPrometheusName)
	fmt.Println(semconv.ReconcileDurationName, "->", semconv.ReconcileDurationPrometheusName, semconv.ReconcileDurationUnit)
	fmt.Println(semconv.ReconcileSpanName("workload"))
	fmt.Println(semconv.ReconcileResultTerminalError.Key, "=", semconv.ReconcileResultTerminalError.Value.AsString())
	// Output:
	// watchtower.reconciles -> watchtower_reconciles_total
	// watchtower.reconcile.duration -> watchtower_reconcile_duration_seconds s
	// reconcile workload
	// watchtower.reconcile.result = terminal_error
}
