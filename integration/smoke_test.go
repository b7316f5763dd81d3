// Smoke tests: one per component, each proving the component really works the way the later
// end-to-end tests use it. They run in `make test` and print one "smoke:" line each.
package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gowatchtower/watchtower/integration/harness"
)

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func smokeOK(t *testing.T, component, versionKey, format string, args ...any) {
	t.Helper()
	v := harness.MustTools(t).Versions[versionKey]
	t.Logf("smoke: %s %s: OK: %s", component, v, fmt.Sprintf(format, args...))
}

func TestSmokeKubeAPIServer(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	start := time.Now()
	kube := harness.StartKube(t)
	started := time.Since(start)
	ctx := ctxTimeout(t, time.Minute)

	dc, err := discovery.NewDiscoveryClientForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if want := harness.MustTools(t).Versions["KUBERNETES_VERSION"]; info.GitVersion != want {
		t.Errorf("API server reports version %q, the pinned version is %q", info.GitVersion, want)
	}

	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: "default", Labels: map[string]string{"app": "watchtower-smoke"}},
		Data:       map[string]string{"greeting": "hello from the smoke test"},
	}
	if err := kube.Client.Create(ctx, cm); err != nil {
		t.Fatalf("create ConfigMap: %v", err)
	}
	var got corev1.ConfigMap
	if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "smoke"}, &got); err != nil {
		t.Fatalf("read back ConfigMap: %v", err)
	}
	if got.Data["greeting"] != cm.Data["greeting"] || got.UID == "" || got.ResourceVersion == "" {
		t.Fatalf("read back %+v, want the data written and a UID and resourceVersion from the server", got)
	}
	var list corev1.ConfigMapList
	if err := kube.Client.List(ctx, &list, client.InNamespace("default"), client.MatchingLabels{"app": "watchtower-smoke"}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("label-selected list returned %d ConfigMaps, want 1", len(list.Items))
	}
	smokeOK(t, "kube-apiserver+etcd", "KUBERNETES_VERSION", "started in %s, server version %s, ConfigMap created (uid %s) and read back", started.Round(time.Millisecond), info.GitVersion, got.UID)
}

func TestSmokeKafka(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	start := time.Now()
	kafka := harness.StartKafka(t)
	started := time.Since(start)
	ctx := ctxTimeout(t, 2*time.Minute)
	const topic, n = "watchtower-smoke", 20
	kafka.CreateTopic(t, topic, 3)

	producer := kafka.Client(t, kgo.DefaultProduceTopic(topic))
	var want []string
	for i := range n {
		v := fmt.Sprintf("record-%02d", i)
		want = append(want, v)
		rec := &kgo.Record{Key: []byte(fmt.Sprintf("key-%d", i%5)), Value: []byte(v)}
		if err := producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", v, err)
		}
	}

	recs, err := kafka.ReadRecords(ctx, topic, n)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	partitionOfKey := map[string]int32{}
	for _, r := range recs {
		got = append(got, string(r.Value))
		if p, ok := partitionOfKey[string(r.Key)]; ok && p != r.Partition {
			t.Errorf("key %s landed in partitions %d and %d; records with one key must share a partition", r.Key, p, r.Partition)
		}
		partitionOfKey[string(r.Key)] = r.Partition
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("franz-go read back %v, want %v", got, want)
	}

	console, err := kafka.ConsoleConsume(ctx, topic, n, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(console)
	if !slices.Equal(console, want) {
		t.Fatalf("kafka-console-consumer read back %v, want %v", console, want)
	}
	smokeOK(t, "kafka", "KAFKA_VERSION", "broker (KRaft) started in %s, %d records produced with franz-go and read back with franz-go and kafka-console-consumer", started.Round(time.Millisecond), n)
}

func TestSmokePrometheus(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# HELP watchtower_smoke_value A value the smoke test serves.\n# TYPE watchtower_smoke_value gauge\nwatchtower_smoke_value{kind=\"answer\"} 42\n")
	}))
	t.Cleanup(target.Close)
	prom := harness.StartPrometheus(t, harness.WithScrapeTarget("smoke", strings.TrimPrefix(target.URL, "http://"), "/metrics"))
	ctx := ctxTimeout(t, time.Minute)

	res, err := prom.WaitForQuery(ctx, `watchtower_smoke_value{job="smoke",kind="answer"}`, func(s []harness.Sample) bool { return len(s) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Value != 42 {
		t.Fatalf("query returned %v, want the served value 42", res[0].Value)
	}
	up, err := prom.Query(ctx, `up{job="smoke"}`)
	if err != nil {
		t.Fatal(err)
	}
	if len(up) != 1 || up[0].Value != 1 {
		t.Fatalf(`up{job="smoke"} = %v, want one series with value 1`, up)
	}
	if _, err := prom.Query(ctx, `sum(`); err == nil || !strings.Contains(err.Error(), "bad_data") {
		t.Fatalf("a malformed query should fail with Prometheus' bad_data error, got %v", err)
	}
	smokeOK(t, "prometheus", "PROMETHEUS_VERSION", "scraped a test target; PromQL returned watchtower_smoke_value=%v and up=1", res[0].Value)
}

func TestSmokeJaeger(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	jaeger := harness.StartJaeger(t)
	ctx := ctxTimeout(t, time.Minute)

	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(jaeger.OTLPGRPC), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "watchtower-smoke"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	tracer := tp.Tracer("smoke")
	rctx, root := tracer.Start(ctx, "reconcile", trace.WithAttributes(attribute.String("smoke.object", "default/demo")))
	_, child := tracer.Start(rctx, "get")
	child.End()
	root.End()
	traceID := root.SpanContext().TraceID().String()

	var tr harness.JaegerTrace
	for {
		var found bool
		tr, found, err = jaeger.Trace(ctx, traceID)
		if err != nil {
			t.Fatal(err)
		}
		if found && len(tr.Spans) == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Jaeger never returned trace %s with 2 spans (last: %+v)", traceID, tr)
		case <-time.After(200 * time.Millisecond):
		}
	}
	byName := map[string]harness.JaegerSpan{}
	for _, s := range tr.Spans {
		byName[s.OperationName] = s
	}
	r, c := byName["reconcile"], byName["get"]
	if r.SpanID != root.SpanContext().SpanID().String() || c.ParentSpanID() != r.SpanID {
		t.Fatalf("want span get as child of reconcile, got %+v", tr.Spans)
	}
	if v, _ := r.Tag("smoke.object"); v != "default/demo" {
		t.Errorf("root span tag smoke.object = %v, want default/demo", v)
	}
	if svc := tr.Processes[r.ProcessID].ServiceName; svc != "watchtower-smoke" {
		t.Errorf("service name %q, want watchtower-smoke", svc)
	}
	found, err := jaeger.FindTraces(ctx, harness.TraceQuery{Service: "watchtower-smoke", Operation: "reconcile"})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].TraceID != traceID {
		t.Fatalf("search by service returned %d traces, want the one sent", len(found))
	}
	smokeOK(t, "jaeger", "JAEGER_VERSION", "accepted an OTLP trace and returned it by trace ID %s and by service search", traceID)
}

func TestSmokeAlertmanager(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	sink := harness.NewWebhookSink(t)
	am := harness.StartAlertmanager(t, sink.URL)
	ctx := ctxTimeout(t, time.Minute)

	labels := map[string]string{"alertname": "WatchtowerSmoke", "severity": "warning", "controller": "workload"}
	if err := am.PostAlert(ctx, labels, map[string]string{"summary": "smoke test alert"}); err != nil {
		t.Fatal(err)
	}
	alert, err := sink.WaitFor(ctx, func(m harness.WebhookMessage, a harness.WebhookAlert) bool {
		return a.Labels["alertname"] == "WatchtowerSmoke"
	})
	if err != nil {
		t.Fatal(err)
	}
	if alert.Status != "firing" || alert.Labels["controller"] != "workload" || alert.Annotations["summary"] != "smoke test alert" {
		t.Fatalf("webhook received %+v, want the firing alert with its labels and annotations", alert)
	}
	smokeOK(t, "alertmanager", "ALERTMANAGER_VERSION", "routed a firing alert to the webhook sink")
}
