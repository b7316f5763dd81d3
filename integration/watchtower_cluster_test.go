package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gowatchtower/watchtower/integration/harness"
	wtv1 "github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// TestWatchtowerInCluster is the Watchtower operator as a platform team runs it, in a real node
// with the images `make images` built: kubectl apply -k the operator, apply a Watchtower → the
// collector pods Running and Ready, the topics created in a real Kafka (SASL_SSL), Ready=True
// with the endpoint → the example operator, pointed at that endpoint through the served
// namespace's ConfigMap, gets its slow reconcile into Jaeger and its metrics to the gateway's
// Prometheus exporter → a new slow threshold rolls the collectors, nothing sent before or after
// is lost from Kafka → a wrong Kafka password makes KafkaReachable=False with its reason, a fixed
// one recovers → deleting the Watchtower removes everything it created.
func TestWatchtowerInCluster(t *testing.T) {
	// Beside the parallel tests, taking turns with TestClusterEndToEnd for the process' one
	// cluster (StartCluster waits for it).
	t.Parallel()
	tools := harness.MustTools(t)
	root := tools.RepoRoot
	images := harness.ImageArchives(t, "pause", "otelcol-watchtower", "watchtower-operator", "workload-operator", "memory-load")
	ctx := ctxTimeout(t, 15*time.Minute)
	c := harness.StartCluster(t, harness.WithClusterImages(images...))
	begin := time.Now()
	// phase says how far into the test (after its cluster) a step ended, to see what takes long.
	phase := func(what string) { t.Logf("watchtower: %s at %s", what, time.Since(begin).Round(100*time.Millisecond)) }
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := c.Kubectl(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cl, err := client.New(c.Config, client.Options{Scheme: watchtowerScheme(t)})
	if err != nil {
		t.Fatal(err)
	}

	// Kafka (SASL_SSL for the pipeline; the plaintext listener for the test's reads) and Jaeger
	// beside the node, in its network.
	nodeNet := c.Network()
	const user, password = "watchtower-pipeline", "scram-secret-0d41"
	kafka, caPEM := startSASLSSLKafka(t, user, password, net.ParseIP(nodeNet.Host), harness.WithKafkaNetwork(nodeNet))
	jaeger := harness.StartJaeger(t, harness.WithJaegerNetwork(nodeNet))

	// The alert receiver: a webhook on the test's end of the node's network.
	sink := harness.NewWebhookSinkOn(t, c.HostIP())

	start := time.Now()
	kubectl("apply", "-k", filepath.Join(root, operatorDir, "config/default"))
	kubectl("-n", "watchtower-system", "rollout", "status", "deployment/watchtower-operator", "--timeout=2m")
	t.Logf("watchtower: operator rolled out in %s", time.Since(start).Round(100*time.Millisecond))

	const ns, servedNS = "observability", "workload-operator-system"
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: v1
kind: Namespace
metadata: {name: %[2]s}
---
apiVersion: v1
kind: Secret
metadata: {name: kafka-credentials, namespace: %[1]s}
stringData: {username: %[3]s, password: %[4]s}
---
apiVersion: v1
kind: Secret
metadata: {name: kafka-ca, namespace: %[1]s}
stringData:
  ca.crt: |
%[5]s
---
apiVersion: v1
kind: Secret
metadata: {name: ops-webhook, namespace: %[1]s}
stringData: {url: %[8]q}
---
apiVersion: observability.gowatchtower.io/v1alpha1
kind: Watchtower
metadata: {name: pipeline, namespace: %[1]s}
spec:
  kafka:
    brokers: [%[6]q]
    topics:
      spans: {name: otlp_spans, partitions: 2}
      metrics: {name: otlp_metrics, partitions: 1}
    sasl: {mechanism: SCRAM-SHA-512, secretName: kafka-credentials}
    tls: {secretName: kafka-ca}
  tracesBackend: {endpoint: %[7]q, insecure: true}
  sampling: {slowThreshold: 1s, baselinePercent: "0", decisionWait: 5s}
  gateway:
    resources:
      requests: {cpu: 100m, memory: 128Mi}
      limits: {cpu: "1", memory: 1Gi}
  servedNamespaces: [%[2]s, watchtower-system]
  alerting:
    receivers:
    - name: ops
      type: Webhook
      severities: [critical]
      urlSecret: {name: ops-webhook, key: url}
`, ns, servedNS, user, password, indent(string(caPEM), "    "), kafka.SecureBootstrap, jaeger.OTLPGRPC, sink.URL)
	mf := filepath.Join(t.TempDir(), "watchtower.yaml")
	if err := os.WriteFile(mf, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	kubectl("apply", "-f", mf)
	wtKey := client.ObjectKey{Namespace: ns, Name: "pipeline"}
	var wt wtv1.Watchtower
	waitStatus := func(what string, ok func(*wtv1.Watchtower) bool) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		defer cancel()
		waitFor(t, wctx, what, func() (bool, error) {
			if err := cl.Get(ctx, wtKey, &wt); err != nil {
				return false, err
			}
			return ok(&wt), fmt.Errorf("conditions %s; pods: %s", conditions(&wt), podStates(listPods(t, ctx, c, ns, "app.kubernetes.io/component=gateway")))
		})
	}
	isTrue := func(w *wtv1.Watchtower, typ string) bool {
		return meta.IsStatusConditionTrue(w.Status.Conditions, typ) && w.Status.ObservedGeneration == w.Generation
	}
	waitStatus("the Watchtower Ready", func(w *wtv1.Watchtower) bool { return isTrue(w, wtv1.ConditionReady) })
	t.Logf("watchtower: Ready=True %s after kubectl apply; status %s", time.Since(start).Round(100*time.Millisecond), conditions(&wt))
	gateway := waitPodsReady(t, ctx, c, ns, "app.kubernetes.io/component=gateway", 1)
	if wt.Status.OTLPEndpoint == nil || wt.Status.OTLPEndpoint.HTTP != "http://pipeline-gateway.observability.svc:4318" {
		t.Fatalf("status.otlpEndpoint %+v", wt.Status.OTLPEndpoint)
	}
	waitTopicPartitions(t, ctx, kafka, map[string]int{"otlp_spans": 2, "otlp_metrics": 1})

	// The Watchtower operator is its own first user: its reconciles go to the pipeline it made.
	kubectl("-n", "watchtower-system", "set", "env", "deployment/watchtower-operator", "--from=configmap/watchtower-otlp")
	kubectl("-n", "watchtower-system", "rollout", "status", "deployment/watchtower-operator", "--timeout=2m")

	// The example operator, as its users deploy it, takes the endpoint from the ConfigMap the
	// Watchtower wrote into its namespace.
	kubectl("apply", "-k", filepath.Join(root, "examples/workload-operator/config/default"))
	kubectl("-n", servedNS, "set", "env", "deployment/workload-operator", "--from=configmap/watchtower-otlp")
	kubectl("-n", servedNS, "rollout", "status", "deployment/workload-operator", "--timeout=2m")
	phase("the example operator rolled out with the endpoint")
	kubectl("apply", "-f", filepath.Join(root, "examples/workload-operator/config/samples/slow-memory.yaml"))
	waitFor(t, ctx, "the slow reconcile of slow-memory in Jaeger, through the Watchtower's gateway", func() (bool, error) {
		traces, err := jaeger.FindTraces(ctx, harness.TraceQuery{Service: "workload-operator", Operation: "reconcile workload",
			MinDuration: time.Second, Tags: map[string]string{"watchtower.object.name": "slow-memory"}, Limit: 1})
		return err == nil && len(traces) > 0, err
	})
	phase("the slow reconcile in Jaeger")
	var svc corev1.Service
	if err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-gateway"}, &svc); err != nil {
		t.Fatal(err)
	}
	// Prometheus and Alertmanager in the node's network: the gateway's exporter through its
	// Service, the Watchtower operator's own /metrics on its pod, GoWatchtower's rules, and the
	// Alertmanager configuration the operator rendered for the Watchtower.
	var amSecret corev1.Secret
	if err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-alertmanager"}, &amSecret); err != nil {
		t.Fatal(err)
	}
	am := harness.StartAlertmanagerWithConfig(t, amSecret.Data["alertmanager.yaml"], harness.WithAlertmanagerNetwork(nodeNet))
	opPod := waitPodsReady(t, ctx, c, "watchtower-system", "app.kubernetes.io/name=watchtower-operator", 1)[0]
	prom := harness.StartPrometheus(t, harness.WithPrometheusNetwork(nodeNet), harness.WithScrapeInterval(2*time.Second),
		harness.WithScrapeTarget("otelcol-watchtower", svc.Spec.ClusterIP+":8889", "/metrics"),
		harness.WithScrapeTarget("watchtower-operator", net.JoinHostPort(opPod.Status.PodIP, "8080"), "/metrics"),
		harness.WithRuleFiles(filepath.Join(root, "deploy", "alerts", "watchtower-rules.yaml")),
		harness.WithAlertmanager(am.Addr))
	qctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = prom.WaitForQuery(qctx, `sum(watchtower_reconciles_total{exported_job="workload-operator"}) > 0`, func(s []harness.Sample) bool { return len(s) > 0 })
	cancel()
	if err != nil {
		t.Errorf("the example operator's metrics through the Watchtower's gateway: %v", err)
	}

	phase("the example operator's metrics in Prometheus")

	// The console, as its users deploy it (the operator's image in its console mode), reading
	// this test's Jaeger and Prometheus; reached through the API server's service proxy, as
	// `kubectl port-forward` would.
	kubectl("apply", "-k", filepath.Join(root, operatorDir, "config/console"))
	kubectl("-n", "watchtower-system", "patch", "deployment/watchtower-console", "--type=json", "-p",
		fmt.Sprintf(`[{"op":"replace","path":"/spec/template/spec/containers/0/args","value":["-listen=:8090","-jaeger-url=%s","-prometheus-url=%s"]}]`, jaeger.QueryURL, prom.URL))
	kubectl("-n", "watchtower-system", "rollout", "status", "deployment/watchtower-console", "--timeout=2m")
	console := newProxiedConsole(t, c)
	if page := console.get(ctx, "/pipeline"); !strings.Contains(page, "observability/pipeline") || !strings.Contains(page, "applied by the operator") {
		t.Errorf("the console's Pipeline page in the cluster does not show the applied Watchtower observability/pipeline:\n%s", page)
	}
	phase("the console in the cluster")
	// A new slow threshold: the collectors roll onto it, and nothing is lost from Kafka.
	telemetrygen := tools.Path(t, "telemetrygen", "TELEMETRYGEN_VERSION", "telemetrygen")
	sent := 0
	send := func(service string) {
		t.Helper()
		const traces, children = 200, 4
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+nodeNet.NetNS, telemetrygen, "traces", "--otlp-endpoint", svc.Spec.ClusterIP+":4317",
			"--otlp-insecure", "--service", service, "--traces", strconv.Itoa(traces), "--child-spans", strconv.Itoa(children), "--rate", "500").CombinedOutput()
		if err != nil {
			t.Fatalf("telemetrygen: %v\n%s", err, out)
		}
		sent += traces * (1 + children)
	}
	service := colUniqueService("watchtower-roll")
	send(service)
	hash := wt.Status.ConfigHash
	// The change is made in the console's Configure form, as a platform engineer would.
	if err := cl.Get(ctx, wtKey, &wt); err != nil {
		t.Fatal(err)
	}
	console.saveSlowThreshold(ctx, &wt, "4s")
	if err := cl.Get(ctx, wtKey, &wt); err != nil {
		t.Fatal(err)
	}
	if d := wt.Spec.Sampling.SlowThreshold; d == nil || d.Duration != 4*time.Second || len(wt.Spec.Alerting.Receivers) == 0 {
		t.Fatalf("after the console saved a 4s threshold the Watchtower has %v and receivers %+v", d, wt.Spec.Alerting.Receivers)
	}
	start = time.Now()
	waitStatus("the collectors rolled onto the new threshold", func(w *wtv1.Watchtower) bool {
		return w.Status.ConfigHash != hash && isTrue(w, wtv1.ConditionReady)
	})
	t.Logf("watchtower: the gateway rolled onto slowThreshold 4s in %s", time.Since(start).Round(100*time.Millisecond))
	if page := console.get(ctx, "/pipeline"); !strings.Contains(page, "Slow threshold 4s") || !strings.Contains(page, "applied by the operator") {
		t.Errorf("after the roll, the console's Pipeline page does not show the applied 4s threshold:\n%s", page)
	}
	rolled := waitPodsReady(t, ctx, c, ns, "app.kubernetes.io/component=gateway", 1)
	if rolled[0].Name == gateway[0].Name {
		t.Errorf("the gateway pod %s did not roll", rolled[0].Name)
	}
	var dep appsv1.Deployment
	if err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-gateway"}, &dep); err != nil {
		t.Fatal(err)
	}
	if !containsEnv(dep.Spec.Template.Spec.Containers[0].Env, "WATCHTOWER_SLOW_THRESHOLD_MS", "4000") {
		t.Errorf("the gateway's env after the change: %v", dep.Spec.Template.Spec.Containers[0].Env)
	}
	// The new threshold applies: after the roll, a 4.5 s reconcile is kept and a 1.5 s one,
	// kept under the old 1 s threshold, is not. (The margins are wide: a reconcile is its delay
	// plus its API calls, which a loaded machine slows.) The 1.5 s one reaches the gateway
	// first, so it is decided first: once the 4.5 s one is in Jaeger, the other's is decided.
	workload := func(name, delay string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), name+".yaml")
		if err := os.WriteFile(f, []byte(fmt.Sprintf(`apiVersion: demo.gowatchtower.io/v1alpha1
kind: Workload
metadata: {name: %s, namespace: default}
spec: {type: memory-load, replicas: 0, load: 8Mi, reconcileDelay: %s}
`, name, delay)), 0o644); err != nil {
			t.Fatal(err)
		}
		kubectl("apply", "-f", f)
	}
	reconcileSpans := func(name string) (int, error) {
		tds, err := kafka.ReadAllTraces(ctx, "otlp_spans")
		if err != nil {
			return 0, err
		}
		n := 0
		for _, td := range tds {
			for i := 0; i < td.ResourceSpans().Len(); i++ {
				for j := 0; j < td.ResourceSpans().At(i).ScopeSpans().Len(); j++ {
					spans := td.ResourceSpans().At(i).ScopeSpans().At(j).Spans()
					for k := 0; k < spans.Len(); k++ {
						if v, ok := spans.At(k).Attributes().Get("watchtower.object.name"); ok && v.AsString() == name && spans.At(k).Name() == "reconcile workload" {
							n++
						}
					}
				}
			}
		}
		return n, nil
	}
	var kept []string // what Jaeger holds of under-threshold, for the failure message
	inJaeger := func(name string) (int, error) {
		traces, err := jaeger.FindTraces(ctx, harness.TraceQuery{Service: "workload-operator", Operation: "reconcile workload",
			Tags: map[string]string{"watchtower.object.name": name}, Limit: 10})
		kept = kept[:0]
		for _, tr := range traces {
			for _, sp := range tr.Spans {
				if sp.OperationName == "reconcile workload" {
					kept = append(kept, fmt.Sprintf("trace %s: %.2fs %v", tr.TraceID, float64(sp.Duration)/1e6, sp.Tags))
				}
			}
		}
		return len(traces), err
	}
	workload("under-threshold", "1500ms")
	waitFor(t, ctx, "under-threshold's reconcile at the gateway (in Kafka)", func() (bool, error) {
		n, err := reconcileSpans("under-threshold")
		return n > 0, err
	})
	workload("over-threshold", "4500ms")
	waitFor(t, ctx, "over-threshold's 4.5 s reconcile in Jaeger", func() (bool, error) {
		n, err := inJaeger("over-threshold")
		return n > 0, err
	})
	if n, err := inJaeger("under-threshold"); err != nil || n != 0 {
		t.Errorf("under-threshold's 1.5 s reconciles: %d traces in Jaeger (%v), want none under the 4 s threshold: %v", n, err, kept)
	}
	phase("the new threshold applied")
	send(service)
	kctx, kcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer kcancel()
	waitFor(t, kctx, "every span sent before and after the roll in Kafka, and the Watchtower operator's reconciles", func() (bool, error) {
		n, own := 0, 0
		tds, err := kafka.ReadAllTraces(ctx, "otlp_spans")
		if err != nil {
			return false, err
		}
		for _, td := range tds {
			for i := 0; i < td.ResourceSpans().Len(); i++ {
				rs := td.ResourceSpans().At(i)
				s, _ := rs.Resource().Attributes().Get("service.name")
				for j := 0; j < rs.ScopeSpans().Len(); j++ {
					spans := rs.ScopeSpans().At(j).Spans()
					switch s.AsString() {
					case service:
						n += spans.Len()
					case "watchtower-operator":
						for k := 0; k < spans.Len(); k++ {
							if spans.At(k).Name() == "reconcile watchtower" {
								own++
							}
						}
					}
				}
			}
		}
		if n < sent || own == 0 {
			return false, fmt.Errorf("%d of %d spans; %d reconciles of the Watchtower operator", n, sent, own)
		}
		t.Logf("watchtower: %d spans sent across the roll, %d in Kafka; %d reconciles of the Watchtower operator", sent, n, own)
		return true, nil
	})

	// The operator reads the collectors' own counters: the rolled gateway accepted at least
	// the spans sent to it since. They are read at each reconcile (every minute when all is
	// well); any change to the Watchtower, such as an annotation, reconciles it at once.
	kubectl("-n", ns, "annotate", "watchtower", "pipeline", "example.com/refreshed="+time.Now().Format(time.RFC3339Nano), "--overwrite")
	waitStatus("the gateway's accepted spans in status.components", func(w *wtv1.Watchtower) bool {
		for _, cs := range w.Status.Components {
			if cs.Name == "pipeline-gateway" && cs.Spans != nil && cs.Spans.Accepted >= int64(sent/2) {
				t.Logf("watchtower: status.components[pipeline-gateway].spans %+v", *cs.Spans)
				return true
			}
		}
		return false
	})

	phase("the gateway's counters in the status")
	// A wrong password, then the right one again.
	patch := func(p string) {
		t.Helper()
		kubectl("-n", ns, "patch", "secret", "kafka-credentials", "--type=merge", "-p", fmt.Sprintf(`{"stringData":{"password":%q}}`, p))
	}
	patch("not-the-password")
	start = time.Now()
	waitStatus("KafkaReachable=False", func(w *wtv1.Watchtower) bool {
		return meta.IsStatusConditionFalse(w.Status.Conditions, wtv1.ConditionKafkaReachable)
	})
	k := meta.FindStatusCondition(wt.Status.Conditions, wtv1.ConditionKafkaReachable)
	t.Logf("watchtower: KafkaReachable=False %s after the password changed: %s: %s", time.Since(start).Round(100*time.Millisecond), k.Reason, k.Message)
	if k.Reason != "AuthenticationFailed" || !strings.Contains(k.Message, `Secret "kafka-credentials"`) {
		t.Errorf("KafkaReachable %s: %s; want AuthenticationFailed naming the Secret", k.Reason, k.Message)
	}
	alert, err := sink.WaitFor(ctx, func(_ harness.WebhookMessage, a harness.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == "WatchtowerPipelineUnhealthy" && a.Labels["reason"] == "AuthenticationFailed"
	})
	if err != nil {
		t.Fatalf("the alert did not reach the webhook receiver: %v", err)
	}
	t.Logf("watchtower: alert delivered %s after the password changed, through the operator's Alertmanager configuration: %s",
		time.Since(start).Round(time.Second), alert.Annotations["summary"])
	phase("the alert delivered")
	patch(password)
	start = time.Now()
	waitStatus("recovered: KafkaReachable and Ready True", func(w *wtv1.Watchtower) bool {
		return isTrue(w, wtv1.ConditionKafkaReachable) && isTrue(w, wtv1.ConditionReady)
	})
	t.Logf("watchtower: recovered %s after the password was fixed", time.Since(start).Round(100*time.Millisecond))

	// Deleted: everything it created goes, and nothing else.
	kubectl("-n", ns, "delete", "watchtower", "pipeline", "--wait=true", "--timeout=2m")
	sel := "observability.gowatchtower.io/watchtower=pipeline"
	waitFor(t, ctx, "everything the Watchtower created to be gone", func() (bool, error) {
		out, err := c.Kubectl(ctx, "get", "deployments,statefulsets,daemonsets,services,configmaps,secrets,serviceaccounts,networkpolicies,clusterroles,clusterrolebindings,pods", "-A", "-l", sel, "-o", "name")
		if err != nil {
			return false, err
		}
		pods := listPods(t, ctx, c, ns, "app.kubernetes.io/component=gateway")
		return strings.TrimSpace(out) == "" && len(pods) == 0, fmt.Errorf("left: %s; gateway pods: %s", out, podStates(pods))
	})
	phase("everything removed")
	for _, s := range []string{"kafka-credentials", "kafka-ca"} {
		if err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: s}, &corev1.Secret{}); apierrors.IsNotFound(err) {
			t.Errorf("the user's Secret %s was deleted with the Watchtower", s)
		}
	}
}

func conditions(w *wtv1.Watchtower) string {
	var b strings.Builder
	for _, c := range w.Status.Conditions {
		fmt.Fprintf(&b, "[%s=%s %s: %s] ", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

func containsEnv(env []corev1.EnvVar, name, value string) bool {
	for _, e := range env {
		if e.Name == name && e.Value == value {
			return true
		}
	}
	return false
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}
