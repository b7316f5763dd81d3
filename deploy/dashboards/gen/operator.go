package main

//lint:file-ignore SA1019 the classic dashboard model is the importable one (see main.go)

import (
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Label matchers every panel of the operator dashboard applies: the variables. The
// watchtower_* metrics carry the controller as watchtower_controller_name, controller-runtime's
// workqueue_* metrics as name.
const (
	opSel = `job=~"$job", namespace=~"$namespace", watchtower_controller_name=~"$controller"`
	wqSel = `job=~"$job", namespace=~"$namespace", name=~"$controller"`
	// The results of a failed reconcile (semconv: watchtower.reconcile.result).
	failed = `watchtower_reconcile_result=~"error|terminal_error|panic"`
)

// operatorReconciles is the "Operator reconciles" dashboard: what the instrumentation in
// instrumentation/controllerruntime records, per controller. Every query works on both paths
// the metrics take to Prometheus (the operator's /metrics, or the collector's Prometheus
// exporter), which the job variable tells apart.
func operatorReconciles() (dashboard.Dashboard, error) {
	return dashboard.NewDashboardBuilder("Operator reconciles").
		Uid("gowatchtower-operator-reconciles").
		Description("Reconciles, queue, API calls and Events of controller-runtime operators instrumented with GoWatchtower, per controller. docs/dashboards.md explains every panel.").
		Tags([]string{"gowatchtower", "kubernetes", "operator"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(datasourceVariable()).
		WithVariable(labelVariable("job", "Job", "job", "watchtower_reconciles_total",
			"Scrape job: the operator's own /metrics, or the collector's Prometheus exporter (there the operator is exported_job). If Prometheus scrapes both, pick one, or every rate counts twice.")).
		WithVariable(labelVariable("namespace", "Namespace", "namespace", `watchtower_reconciles_total{job=~"$job"}`,
			"The namespace label your scrape configuration adds (ServiceMonitor and Kubernetes service discovery do); All also matches series without one.")).
		WithVariable(labelVariable("controller", "Controller", "watchtower_controller_name", `watchtower_reconciles_total{job=~"$job", namespace=~"$namespace"}`,
			"Controllers, as registered with the controller-runtime manager.")).
		WithRow(row("Overview")).
		WithPanel(single("Reconciles per second", "All reconciles of the selected controllers, any result.", "ops",
			query(`sum(rate(watchtower_reconciles_total{`+opSel+`}[$__rate_interval]))`, "reconciles/s"))).
		WithPanel(single("Error ratio", "Share of reconciles that ended in error, terminal_error or panic. The WatchtowerReconcileErrorRatio alert fires above 10% for 15 minutes.", "percentunit",
			query(`
				sum(rate(watchtower_reconciles_total{`+opSel+`, `+failed+`}[$__rate_interval]))
				/
				sum(rate(watchtower_reconciles_total{`+opSel+`}[$__rate_interval]))`, "error ratio"),
			threshold(0.01, "yellow"), threshold(0.1, "red"))).
		WithPanel(single("p99 reconcile duration", "99th percentile of reconcile durations over all selected controllers. WatchtowerReconcileSlow fires above 5s for 15 minutes.", "s",
			query(`histogram_quantile(0.99, sum by (le) (rate(watchtower_reconcile_duration_seconds_bucket{`+opSel+`}[$__rate_interval])))`, "p99"),
			threshold(1, "yellow"), threshold(5, "red"))).
		WithPanel(single("Reconciles in flight", "Reconciles running right now.", "short",
			query(`sum(watchtower_reconcile_active{`+opSel+`})`, "in flight"))).
		WithRow(row("Reconciles")).
		WithPanel(graph("Reconciles per second by result", "Rate of reconciles per controller and result: success, error, terminal_error, conflict, requeue, requeue_after, panic.", "ops",
			query(`sum by (watchtower_controller_name, watchtower_reconcile_result) (rate(watchtower_reconciles_total{`+opSel+`}[$__rate_interval]))`,
				"{{watchtower_controller_name}} {{watchtower_reconcile_result}}"))).
		WithPanel(graph("Failed reconciles per second", "Reconciles that ended in error (requeued with backoff), terminal_error (not requeued) or panic (recovered by controller-runtime).", "ops",
			query(`sum by (watchtower_controller_name, watchtower_reconcile_result) (rate(watchtower_reconciles_total{`+opSel+`, `+failed+`}[$__rate_interval]))`,
				"{{watchtower_controller_name}} {{watchtower_reconcile_result}}"))).
		WithPanel(withThreshold(graph("Error ratio by controller", "Failed reconciles over all reconciles, per controller; the dashed line is the WatchtowerReconcileErrorRatio threshold.", "percentunit",
			query(`
				sum by (watchtower_controller_name) (rate(watchtower_reconciles_total{`+opSel+`, `+failed+`}[$__rate_interval]))
				/
				sum by (watchtower_controller_name) (rate(watchtower_reconciles_total{`+opSel+`}[$__rate_interval]))`,
				"{{watchtower_controller_name}}")), 0.1)).
		WithPanel(withThreshold(graph("Reconcile duration p50 / p95 / p99", "Percentiles of reconcile durations per controller, from the watchtower_reconcile_duration_seconds histogram; the dashed line is the WatchtowerReconcileSlow threshold.", "s",
			query(`histogram_quantile(0.50, sum by (watchtower_controller_name, le) (rate(watchtower_reconcile_duration_seconds_bucket{`+opSel+`}[$__rate_interval])))`, "{{watchtower_controller_name}} p50"),
			query(`histogram_quantile(0.95, sum by (watchtower_controller_name, le) (rate(watchtower_reconcile_duration_seconds_bucket{`+opSel+`}[$__rate_interval])))`, "{{watchtower_controller_name}} p95"),
			query(`histogram_quantile(0.99, sum by (watchtower_controller_name, le) (rate(watchtower_reconcile_duration_seconds_bucket{`+opSel+`}[$__rate_interval])))`, "{{watchtower_controller_name}} p99")), 5)).
		WithPanel(graph("Reconciles in flight", "Reconciles running at the moment of each scrape, per controller (at most its MaxConcurrentReconciles).", "short",
			query(`sum by (watchtower_controller_name) (watchtower_reconcile_active{`+opSel+`})`, "{{watchtower_controller_name}}"))).
		WithRow(row("Hot loops and stuck objects")).
		WithPanel(graph("Hot-looping objects", "Objects each controller keeps reconciling while their generation does not change (20 reconciles within a minute by default). The objects are named at the operator's /debug/watchtower and in its log; WatchtowerControllerHotLooping fires after 5 minutes.", "short",
			query(`sum by (watchtower_controller_name) (watchtower_controller_hot_looping_objects{`+opSel+`})`, "{{watchtower_controller_name}}"))).
		WithPanel(graph("Stuck objects", "Objects whose reconciles have kept failing without a success for longer than the stuck threshold (10 minutes by default). Listed longest first at /debug/watchtower; WatchtowerObjectsStuck fires after 5 minutes.", "short",
			query(`sum by (watchtower_controller_name) (watchtower_controller_stuck_objects{`+opSel+`})`, "{{watchtower_controller_name}}"))).
		WithRow(row("Work queue")).
		WithPanel(graph("Queue wait p50 / p95 / p99", "Time requests waited in the workqueue, from (the latest) enqueue to the start of their reconcile. Growing waits with few reconciles in flight point at MaxConcurrentReconciles or rate limiting.", "s",
			query(`histogram_quantile(0.50, sum by (watchtower_controller_name, le) (rate(watchtower_queue_wait_seconds_bucket{`+opSel+`}[$__rate_interval])))`, "{{watchtower_controller_name}} p50"),
			query(`histogram_quantile(0.95, sum by (watchtower_controller_name, le) (rate(watchtower_queue_wait_seconds_bucket{`+opSel+`}[$__rate_interval])))`, "{{watchtower_controller_name}} p95"),
			query(`histogram_quantile(0.99, sum by (watchtower_controller_name, le) (rate(watchtower_queue_wait_seconds_bucket{`+opSel+`}[$__rate_interval])))`, "{{watchtower_controller_name}} p99"))).
		WithPanel(graph("Queue adds per second by kind", "Why requests entered the workqueue: fresh (a watch event), rate_limited (after an error or Requeue), delayed (RequeueAfter).", "ops",
			query(`sum by (watchtower_controller_name, watchtower_queue_add_kind) (rate(watchtower_queue_adds_total{`+opSel+`}[$__rate_interval]))`,
				"{{watchtower_controller_name}} {{watchtower_queue_add_kind}}"))).
		WithPanel(graph("Queue depth", "Requests ready and waiting in the workqueue (controller-runtime's workqueue_depth). Depth above zero with no reconciles completing is the WatchtowerControllerStalled alert.", "short",
			query(`sum by (name) (workqueue_depth{`+wqSel+`})`, "{{name}}"))).
		WithRow(row("API calls")).
		WithPanel(graph("API server calls per second by verb and code", "Logical client calls the controllers made that reached the API server (get, list, create, update, patch, apply, delete), by HTTP status code; 0 is an error without a status (a timeout).", "ops",
			query(`sum by (watchtower_controller_name, watchtower_api_verb, watchtower_api_code) (rate(watchtower_api_duration_seconds_count{`+opSel+`}[$__rate_interval]))`,
				"{{watchtower_controller_name}} {{watchtower_api_verb}} {{watchtower_api_code}}"))).
		WithPanel(graph("API server call p95 by verb and kind", "95th percentile of the durations of calls that reached the API server.", "s",
			query(`histogram_quantile(0.95, sum by (watchtower_api_verb, watchtower_api_kind, le) (rate(watchtower_api_duration_seconds_bucket{`+opSel+`}[$__rate_interval])))`,
				"{{watchtower_api_verb}} {{watchtower_api_kind}}"))).
		WithPanel(graph("Cache reads per second by kind and code", "Reads the manager's informer cache served without a request to the API server; 404 is an object not in the cache. Reads of a kind here and not above are the cheap ones.", "ops",
			query(`sum by (watchtower_controller_name, watchtower_api_verb, watchtower_api_kind, watchtower_api_code) (rate(watchtower_api_cache_reads_total{`+opSel+`}[$__rate_interval]))`,
				"{{watchtower_controller_name}} {{watchtower_api_verb}} {{watchtower_api_kind}} {{watchtower_api_code}}"))).
		WithRow(row("Events")).
		WithPanel(graph("Events per second by reason", "Kubernetes Events the controllers emitted, by type and reason (each is also a span event on its reconcile's trace).", "ops",
			query(`sum by (watchtower_controller_name, watchtower_event_type, watchtower_event_reason) (rate(watchtower_events_total{`+opSel+`}[$__rate_interval]))`,
				"{{watchtower_controller_name}} {{watchtower_event_type}} {{watchtower_event_reason}}"))).
		WithPanel(bars("Events in the time range by reason", "How many Events of each type and reason the controllers emitted over the dashboard's time range.", "short",
			query(`sort_desc(sum by (watchtower_event_type, watchtower_event_reason) (increase(watchtower_events_total{`+opSel+`}[$__range])))`,
				"{{watchtower_event_type}} {{watchtower_event_reason}}"))).
		Build()
}
