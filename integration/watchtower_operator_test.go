package integration

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/integration/harness"
	wtv1 "github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

const operatorDir = "operator"

func watchtowerScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := wtv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// startKubeWithWatchtowerCRD starts an API server with the Watchtower CRD and the CRDs in the
// extra directories (relative to the repository).
func startKubeWithWatchtowerCRD(t *testing.T, extra ...string) (*harness.Kube, client.Client) {
	tools := harness.MustTools(t)
	dirs := []string{filepath.Join(tools.RepoRoot, operatorDir, "config", "crd", "bases")}
	for _, d := range extra {
		dirs = append(dirs, filepath.Join(tools.RepoRoot, d))
	}
	kube := harness.StartKube(t, harness.WithCRDs(dirs...))
	c, err := client.New(kube.Config, client.Options{Scheme: watchtowerScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	return kube, c
}

func validWatchtower(name string) *wtv1.Watchtower {
	return &wtv1.Watchtower{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: wtv1.WatchtowerSpec{
			Kafka:         wtv1.KafkaSpec{Brokers: []string{"kafka:9092"}},
			TracesBackend: wtv1.TracesBackendSpec{Endpoint: "jaeger-collector:4317", Insecure: true},
		},
	}
}

// TestWatchtowerValidationRejectsBadSpecs: the API server refuses bad Watchtowers through the
// CRD's OpenAPI and CEL rules, each with a message that names the field; a minimal one gets the
// documented defaults.
func TestWatchtowerValidationRejectsBadSpecs(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	_, c := startKubeWithWatchtowerCRD(t)
	ctx := ctxTimeout(t, time.Minute)
	for _, tc := range []struct {
		name string
		edit func(*wtv1.WatchtowerSpec)
		want string
	}{
		{"no-brokers", func(s *wtv1.WatchtowerSpec) { s.Kafka.Brokers = nil }, "spec.kafka.brokers: Required value"},
		{"broker-without-port", func(s *wtv1.WatchtowerSpec) { s.Kafka.Brokers = []string{"kafka"} }, "spec.kafka.brokers: each broker is host:port"},
		{"endpoint-with-scheme", func(s *wtv1.WatchtowerSpec) { s.TracesBackend.Endpoint = "http://jaeger:4317" }, "spec.tracesBackend.endpoint is host:port"},
		{"gateway-replicas-without-sampler", func(s *wtv1.WatchtowerSpec) { s.Gateway.Replicas = ptr.To[int32](3) }, "spec.gateway.replicas: Invalid value"},
		{"sampler-beyond-partitions", func(s *wtv1.WatchtowerSpec) {
			s.Sampler = wtv1.SamplerSpec{Enabled: true, Replicas: ptr.To[int32](4)}
		}, "spec.sampler.replicas may not exceed spec.kafka.topics.spans.partitions"},
		{"same-topic-twice", func(s *wtv1.WatchtowerSpec) {
			s.Kafka.Topics = &wtv1.KafkaTopics{Spans: &wtv1.KafkaTopic{Name: "otlp", Partitions: 3}, Metrics: &wtv1.KafkaTopic{Name: "otlp", Partitions: 1}}
		}, "spec.kafka.topics.spans.name and spec.kafka.topics.metrics.name must differ"},
		{"bad-topic-name", func(s *wtv1.WatchtowerSpec) {
			s.Kafka.Topics = &wtv1.KafkaTopics{Spans: &wtv1.KafkaTopic{Name: "spans topic", Partitions: 3}, Metrics: &wtv1.KafkaTopic{Name: "m", Partitions: 1}}
		}, "spec.kafka.topics.spans.name: Invalid value"},
		{"zero-partitions", func(s *wtv1.WatchtowerSpec) {
			s.Kafka.Topics = &wtv1.KafkaTopics{Spans: &wtv1.KafkaTopic{Name: "s", Partitions: -1}, Metrics: &wtv1.KafkaTopic{Name: "m", Partitions: 1}}
		}, "spec.kafka.topics.spans.partitions: Invalid value"},
		{"sasl-mechanism", func(s *wtv1.WatchtowerSpec) {
			s.Kafka.SASL = &wtv1.KafkaSASL{Mechanism: "GSSAPI", SecretName: "kafka"}
		}, `spec.kafka.sasl.mechanism: Unsupported value: "GSSAPI"`},
		{"mtls-half", func(s *wtv1.WatchtowerSpec) {
			s.Kafka.TLS = &wtv1.KafkaTLS{SecretName: "kafka-tls", CertKey: "tls.crt"}
		}, "spec.kafka.tls.certKey and spec.kafka.tls.keyKey go together"},
		{"slow-threshold", func(s *wtv1.WatchtowerSpec) {
			s.Sampling.SlowThreshold = &metav1.Duration{Duration: 2 * time.Hour}
		}, "spec.sampling.slowThreshold must be between 1ms and 1h"},
		{"decision-wait", func(s *wtv1.WatchtowerSpec) {
			s.Sampling.DecisionWait = &metav1.Duration{Duration: 100 * time.Millisecond}
		}, "spec.sampling.decisionWait must be between 1s and 5m"},
		{"baseline-percent", func(s *wtv1.WatchtowerSpec) { s.Sampling.BaselinePercent = "150" }, "spec.sampling.baselinePercent: Invalid value"},
		{"receiver-type", func(s *wtv1.WatchtowerSpec) {
			s.Alerting.Receivers = []wtv1.AlertReceiver{{Name: "wa", Type: "WhatsApp", URLSecret: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "url"}}}
		}, `spec.alerting.receivers[0].type: Unsupported value: "WhatsApp"`},
		{"channel-not-slack", func(s *wtv1.WatchtowerSpec) {
			s.Alerting.Receivers = []wtv1.AlertReceiver{{Name: "hook", Type: "Webhook", Channel: "#ops", URLSecret: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "url"}}}
		}, "spec.alerting.receivers[0].channel: Invalid value"},
		{"served-namespace", func(s *wtv1.WatchtowerSpec) { s.ServedNamespaces = []string{"Team_A"} }, "spec.servedNamespaces[0]: Invalid value"},
	} {
		wt := validWatchtower(tc.name)
		tc.edit(&wt.Spec)
		err := c.Create(ctx, wt)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an Invalid error containing %q", tc.name, err, tc.want)
		}
	}
	// The documented sample (operator/config/samples, the walkthrough of docs/operator.md).
	sample, err := os.ReadFile(filepath.Join(harness.MustTools(t).RepoRoot, operatorDir, "config", "samples", "watchtower.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var fromDocs wtv1.Watchtower
	if err := yaml.UnmarshalStrict(sample, &fromDocs); err != nil {
		t.Fatalf("the sample is not a Watchtower: %v", err)
	}
	fromDocs.Namespace = "default"
	if err := c.Create(ctx, &fromDocs); err != nil {
		t.Errorf("the documented sample was refused: %v", err)
	}
	ok := validWatchtower("minimal")
	if err := c.Create(ctx, ok); err != nil {
		t.Fatalf("a minimal Watchtower was refused: %v", err)
	}
	topics := ok.Spec.Kafka.Topics
	if topics == nil || topics.Spans == nil || topics.Metrics == nil {
		t.Fatalf("no topic defaults: %+v", topics)
	}
	if topics.Spans.Name != "otlp_spans" || topics.Spans.Partitions != 3 || topics.Metrics.Name != "otlp_metrics" || topics.Metrics.Partitions != 1 {
		t.Errorf("topic defaults: %+v", topics)
	}
	if s := ok.Spec.Sampling; s.SlowThreshold == nil || s.SlowThreshold.Duration != time.Second || s.BaselinePercent != "1" || s.DecisionWait == nil || s.DecisionWait.Duration != 10*time.Second {
		t.Errorf("sampling defaults: %+v", s)
	}
}

// TestWatchtowerOperatorWiresThePipeline runs the operator's binary against a real API server,
// a real Kafka with a SASL_SSL listener, Jaeger, Prometheus and Alertmanager, and does what a
// platform team does: apply a Watchtower → the collectors' objects (the chart's, owned by the
// Watchtower), the topics created in Kafka, the endpoint for the served namespaces, the alert
// routing; change the slow threshold → the collectors' pods change; break the Kafka password →
// KafkaReachable=False with a reason and an alert delivered to a webhook receiver through the
// operator's own Alertmanager configuration; fix it → recovered; turn the sampler tier on and
// off → created and pruned; delete → what owner references cannot remove is removed. Pods do
// not run here (no kubelet): TestWatchtowerInCluster runs them.
func TestWatchtowerOperatorWiresThePipeline(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	ctx := ctxTimeout(t, 6*time.Minute)

	// Kafka with SASL_SSL (SCRAM-SHA-512) for the pipeline, as in production.
	const user, password = "watchtower-pipeline", "scram-secret-51c2"
	kafka, caPEM := startSASLSSLKafka(t, user, password, net.IPv4(127, 0, 0, 1))
	jaeger := harness.StartJaeger(t)
	sink := harness.NewWebhookSink(t)

	// The prometheus-operator's ServiceMonitor and PrometheusRule CRDs are installed: the
	// Watchtower gets both. (Its AlertmanagerConfig CRD is not: the routing is a Secret;
	// TestWatchtowerAlertmanagerConfig has it.)
	kube, c := startKubeWithWatchtowerCRD(t, "deploy/crds/monitoring.coreos.com_servicemonitors.yaml", "deploy/crds/monitoring.coreos.com_prometheusrules.yaml")
	metrics := startWatchtowerOperator(t, kube)

	const ns = "observability"
	for _, n := range []string{ns, "team-a"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	secret := func(name string, data map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: data}
	}
	for _, s := range []*corev1.Secret{
		secret("kafka-credentials", map[string]string{"username": user, "password": password}),
		secret("kafka-ca", map[string]string{"ca.crt": string(caPEM)}),
		secret("ops-webhook", map[string]string{"url": sink.URL}),
	} {
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	wt := &wtv1.Watchtower{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pipeline"},
		Spec: wtv1.WatchtowerSpec{
			Kafka: wtv1.KafkaSpec{
				Brokers: []string{kafka.SecureBootstrap},
				Topics: &wtv1.KafkaTopics{
					Spans:   &wtv1.KafkaTopic{Name: "otlp_spans", Partitions: 3, Retention: &metav1.Duration{Duration: 24 * time.Hour}},
					Metrics: &wtv1.KafkaTopic{Name: "otlp_metrics", Partitions: 1},
				},
				SASL: &wtv1.KafkaSASL{Mechanism: "SCRAM-SHA-512", SecretName: "kafka-credentials"},
				TLS:  &wtv1.KafkaTLS{SecretName: "kafka-ca"},
			},
			TracesBackend:    wtv1.TracesBackendSpec{Endpoint: jaeger.OTLPGRPC, Insecure: true},
			Sampling:         wtv1.SamplingSpec{SlowThreshold: &metav1.Duration{Duration: time.Second}},
			ServedNamespaces: []string{"team-a"},
			Agent:            wtv1.AgentSpec{Enabled: true},
			Alerting: wtv1.AlertingSpec{Receivers: []wtv1.AlertReceiver{{
				Name: "ops", Type: "Webhook", Severities: []string{"critical"},
				URLSecret: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "ops-webhook"}, Key: "url"},
			}}},
		},
	}
	if err := c.Create(ctx, wt); err != nil {
		t.Fatal(err)
	}
	wtKey := client.ObjectKeyFromObject(wt)
	cond := func(w *wtv1.Watchtower, typ string) metav1.Condition {
		if c := meta.FindStatusCondition(w.Status.Conditions, typ); c != nil {
			return *c
		}
		return metav1.Condition{}
	}
	waitStatus := func(what string, ok func(*wtv1.Watchtower) bool) *wtv1.Watchtower {
		t.Helper()
		var w wtv1.Watchtower
		waitFor(t, ctx, what, func() (bool, error) {
			if err := c.Get(ctx, wtKey, &w); err != nil {
				return false, err
			}
			return ok(&w), fmt.Errorf("status %+v", w.Status)
		})
		return &w
	}

	// update changes the Watchtower as kubectl edit would, retrying on the operator's own writes.
	update := func(edit func(*wtv1.Watchtower)) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var w wtv1.Watchtower
			if err := c.Get(ctx, wtKey, &w); err != nil {
				return err
			}
			edit(&w)
			return c.Update(ctx, &w)
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// Applied: Kafka reached with the pipeline's credentials, the topics created as specified.
	got := waitStatus("KafkaReachable=True", func(w *wtv1.Watchtower) bool {
		return cond(w, wtv1.ConditionKafkaReachable).Status == metav1.ConditionTrue && w.Status.ObservedGeneration == w.Generation
	})
	waitTopicPartitions(t, ctx, kafka, map[string]int{"otlp_spans": 3, "otlp_metrics": 1})
	adm := kadm.NewClient(kafka.Client(t))
	cfgs, err := adm.DescribeTopicConfigs(ctx, "otlp_spans")
	if err != nil {
		t.Fatal(err)
	}
	if rc, err := cfgs.On("otlp_spans", nil); err != nil || !slices.ContainsFunc(rc.Configs, func(c kadm.Config) bool {
		return c.Key == "retention.ms" && c.Value != nil && *c.Value == "86400000"
	}) {
		t.Errorf("otlp_spans retention.ms is not the spec's 24h: %v %+v", err, rc.Configs)
	}
	if !slices.ContainsFunc(got.Status.Topics, func(s wtv1.TopicStatus) bool { return s.Name == "otlp_spans" && s.Created && s.Partitions == 3 }) {
		t.Errorf("status.topics %+v", got.Status.Topics)
	}
	if e := got.Status.OTLPEndpoint; e == nil || e.GRPC != "pipeline-gateway.observability.svc:4317" || e.HTTP != "http://pipeline-gateway.observability.svc:4318" {
		t.Errorf("status.otlpEndpoint %+v", e)
	}
	if b := cond(got, wtv1.ConditionBackendReachable); b.Status != metav1.ConditionTrue {
		t.Errorf("BackendReachable %+v with Jaeger up", b)
	}
	// No kubelet here: the gateway's pods never become ready, and Ready says which workload waits.
	if r := cond(got, wtv1.ConditionReady); r.Status != metav1.ConditionFalse || r.Reason != "RollingOut" || !strings.Contains(r.Message, "Deployment pipeline-gateway: 0 of 1 pods ready") {
		t.Errorf("Ready %+v", r)
	}

	// The chart's objects, owned by the Watchtower.
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-gateway"}, &dep); err != nil {
		t.Fatal(err)
	}
	if len(dep.OwnerReferences) != 1 || dep.OwnerReferences[0].UID != got.UID || !ptr.Deref(dep.OwnerReferences[0].Controller, false) {
		t.Errorf("the gateway Deployment's owner references %+v", dep.OwnerReferences)
	}
	envOf := func(d *appsv1.Deployment) map[string]string {
		out := map[string]string{}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			out[e.Name] = e.Value
		}
		return out
	}
	if e := envOf(&dep); e["WATCHTOWER_KAFKA_BROKERS"] != kafka.SecureBootstrap || e["WATCHTOWER_SLOW_THRESHOLD_MS"] != "1000" || e["WATCHTOWER_TRACES_ENDPOINT"] != jaeger.OTLPGRPC {
		t.Errorf("gateway env %v", e)
	}
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != "gowatchtower/otelcol-watchtower:0.1.0" {
		t.Errorf("gateway image %s", img)
	}
	for _, o := range []client.Object{&corev1.ConfigMap{}, &corev1.Service{}, &networkingv1.NetworkPolicy{}, &corev1.ServiceAccount{}} {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-gateway"}, o); err != nil {
			t.Errorf("%T pipeline-gateway: %v", o, err)
		}
	}
	for kind, name := range map[string]string{"ServiceMonitor": "pipeline-gateway", "PrometheusRule": "pipeline"} {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: kind})
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
			t.Errorf("%s %s with the prometheus-operator's CRDs installed: %v", kind, name, err)
		}
	}
	// The agent's ClusterRole: cluster-scoped, so no owner reference; the finalizer removes it.
	var agentRole rbacv1.ClusterRole
	if err := c.Get(ctx, client.ObjectKey{Name: "observability-pipeline-agent"}, &agentRole); err != nil {
		t.Errorf("the agent's ClusterRole: %v", err)
	}
	var endpoint corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "watchtower-otlp"}, &endpoint); err != nil {
		t.Fatalf("the served namespace's endpoint ConfigMap: %v", err)
	}
	if endpoint.Data["OTEL_EXPORTER_OTLP_ENDPOINT"] != got.Status.OTLPEndpoint.HTTP {
		t.Errorf("team-a's endpoint %v, status says %s", endpoint.Data, got.Status.OTLPEndpoint.HTTP)
	}

	// The alert routing: a real Alertmanager runs the operator's configuration, and Prometheus
	// evaluates GoWatchtower's rules on the operator's own metrics.
	var amSecret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-alertmanager"}, &amSecret); err != nil {
		t.Fatal(err)
	}
	am := harness.StartAlertmanagerWithConfig(t, amSecret.Data["alertmanager.yaml"])
	tools := harness.MustTools(t)
	prom := harness.StartPrometheus(t,
		harness.WithScrapeTarget("watchtower-operator", metrics, "/metrics"),
		harness.WithRuleFiles(filepath.Join(tools.RepoRoot, "deploy", "alerts", "watchtower-rules.yaml")),
		harness.WithAlertmanager(am.Addr))

	// A new slow threshold reaches the collectors' pods: they roll.
	hash := got.Status.ConfigHash
	update(func(w *wtv1.Watchtower) { w.Spec.Sampling.SlowThreshold = &metav1.Duration{Duration: 3 * time.Second} })
	waitFor(t, ctx, "the gateway's pods to get the new slow threshold", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-gateway"}, &dep); err != nil {
			return false, err
		}
		return envOf(&dep)["WATCHTOWER_SLOW_THRESHOLD_MS"] == "3000", fmt.Errorf("env %v", envOf(&dep))
	})
	waitStatus("a new status.configHash", func(w *wtv1.Watchtower) bool { return w.Status.ConfigHash != "" && w.Status.ConfigHash != hash })
	secretsHash := dep.Spec.Template.Annotations["observability.gowatchtower.io/secrets-hash"]

	// A wrong password: KafkaReachable=False with the reason, the collectors roll onto the new
	// Secret, and the alert reaches the receiver.
	var creds corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "kafka-credentials"}, &creds); err != nil {
		t.Fatal(err)
	}
	creds.Data["password"] = []byte("not-the-password")
	if err := c.Update(ctx, &creds); err != nil {
		t.Fatal(err)
	}
	broken := time.Now()
	got = waitStatus("KafkaReachable=False after the password changed", func(w *wtv1.Watchtower) bool {
		return cond(w, wtv1.ConditionKafkaReachable).Status == metav1.ConditionFalse
	})
	t.Logf("KafkaReachable=False %s after the Secret changed", time.Since(broken).Round(100*time.Millisecond))
	if k := cond(got, wtv1.ConditionKafkaReachable); k.Reason != "AuthenticationFailed" || !strings.Contains(k.Message, `Secret "kafka-credentials"`) {
		t.Errorf("KafkaReachable %+v: want reason AuthenticationFailed and the Secret named", k)
	}
	if d := cond(got, wtv1.ConditionDegraded); d.Status != metav1.ConditionTrue || d.Reason != "KafkaUnreachable" {
		t.Errorf("Degraded %+v", d)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-gateway"}, &dep); err != nil {
		t.Fatal(err)
	}
	if h := dep.Spec.Template.Annotations["observability.gowatchtower.io/secrets-hash"]; h == "" || h == secretsHash {
		t.Errorf("the gateway's pods did not roll with the Secret: secrets-hash %q → %q", secretsHash, h)
	}
	alert, err := sink.WaitFor(ctx, func(m harness.WebhookMessage, a harness.WebhookAlert) bool {
		return a.Status == "firing" && a.Labels["alertname"] == "WatchtowerPipelineUnhealthy" && a.Labels["reason"] == "AuthenticationFailed"
	})
	if err != nil {
		t.Fatalf("the alert did not reach the webhook receiver: %v", err)
	}
	t.Logf("alert %s delivered %s after the password changed: %s", alert.Labels["alertname"], time.Since(broken).Round(time.Second), alert.Annotations["summary"])

	// Fixed: recovered, and the gauge says so.
	creds.Data["password"] = []byte(password)
	if err := c.Update(ctx, &creds); err != nil {
		t.Fatal(err)
	}
	waitStatus("KafkaReachable=True after the password was fixed", func(w *wtv1.Watchtower) bool {
		return cond(w, wtv1.ConditionKafkaReachable).Status == metav1.ConditionTrue
	})
	if _, err := prom.WaitForQuery(ctx, `sum(watchtower_operator_pipelines{condition="KafkaReachable",status="True"})`, func(s []harness.Sample) bool {
		return len(s) == 1 && s[0].Value == 1
	}); err != nil {
		t.Error(err)
	}

	// The sampler tier, on then off: created, then pruned.
	update(func(w *wtv1.Watchtower) {
		w.Spec.Gateway.Replicas = ptr.To[int32](2)
		w.Spec.Sampler = wtv1.SamplerSpec{Enabled: true, Replicas: ptr.To[int32](2)}
	})
	waitFor(t, ctx, "the sampler Deployment", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-sampler"}, &appsv1.Deployment{})
		return err == nil, err
	})
	update(func(w *wtv1.Watchtower) {
		w.Spec.Gateway.Replicas = nil
		w.Spec.Sampler = wtv1.SamplerSpec{}
	})
	waitFor(t, ctx, "the sampler Deployment to be pruned", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pipeline-sampler"}, &appsv1.Deployment{})
		return apierrors.IsNotFound(err), err
	})

	// Deleted: the finalizer removes what is outside the Watchtower's namespace; the rest has
	// the Watchtower as owner (the garbage collector, absent here, removes it in a cluster).
	if err := c.Delete(ctx, got); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the Watchtower, the served namespace's ConfigMap and the agent's ClusterRole to be gone", func() (bool, error) {
		errW := c.Get(ctx, wtKey, &wtv1.Watchtower{})
		errC := c.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "watchtower-otlp"}, &corev1.ConfigMap{})
		errR := c.Get(ctx, client.ObjectKey{Name: "observability-pipeline-agent"}, &rbacv1.ClusterRole{})
		return apierrors.IsNotFound(errW) && apierrors.IsNotFound(errC) && apierrors.IsNotFound(errR),
			fmt.Errorf("watchtower: %v, configmap: %v, clusterrole: %v", errW, errC, errR)
	})
}

// startSASLSSLKafka starts Kafka with a SASL_SSL listener (SCRAM-SHA-512) whose certificate is
// for ip, knowing one user, and returns it with the CA's PEM; opts go to StartKafka.
func startSASLSSLKafka(t *testing.T, user, password string, ip net.IP, opts ...harness.KafkaOption) (*harness.Kafka, []byte) {
	t.Helper()
	pki := newTestPKI(t)
	cert, key := pki.issue(t, "kafka", pki.ca, pki.key, func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{ip}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var keystore, caPEM bytes.Buffer
	_ = pem.Encode(&keystore, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	_ = pem.Encode(&keystore, &pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw})
	_ = pem.Encode(&keystore, &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	_ = pem.Encode(&caPEM, &pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw})
	if err := os.WriteFile(pki.path("kafka-keystore.pem"), keystore.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	kafka := harness.StartKafka(t, append(opts, harness.WithKafkaSASLSSL(harness.KafkaSASLSSL{
		KeystorePEM: pki.path("kafka-keystore.pem"), Users: map[string]string{user: password},
	}))...)
	return kafka, caPEM.Bytes()
}

// startWatchtowerOperator runs the operator's binary against kube and returns the address of
// its /metrics.
func startWatchtowerOperator(t *testing.T, kube *harness.Kube) string {
	t.Helper()
	bin := harness.BuildBinary(t, "./"+operatorDir+"/cmd")
	metrics, probe := harness.Loopback(harness.FreePort(t)), harness.Loopback(harness.FreePort(t))
	harness.StartProcess(t, harness.ProcessSpec{
		Name: "watchtower-operator",
		Path: bin,
		Args: []string{"--metrics-bind-address=" + metrics, "--health-probe-bind-address=" + probe, "--collector-image-tag=0.1.0"},
		// No collector: the operator's SDK must neither block nor crash it.
		Env: []string{"KUBECONFIG=" + kubeconfigFor(t, kube), "OTEL_SERVICE_NAME=watchtower-operator", "OTEL_EXPORTER_OTLP_ENDPOINT=http://" + harness.Loopback(harness.FreePort(t))},
	}).MustWaitReady(t, 60*time.Second, harness.HTTPStatusOK("http://"+probe+"/readyz"))
	return metrics
}

// TestWatchtowerAlertmanagerConfig: with the prometheus-operator's CRDs installed, a
// Watchtower's alert routing is an AlertmanagerConfig that the real CRD's schema keeps whole,
// referring to the receivers' Secrets instead of copying their URLs, and no Secret is written.
func TestWatchtowerAlertmanagerConfig(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	ctx := ctxTimeout(t, 2*time.Minute)
	kube, c := startKubeWithWatchtowerCRD(t, "deploy/crds")
	startWatchtowerOperator(t, kube)
	wt := validWatchtower("routed")
	wt.Spec.Alerting.Receivers = []wtv1.AlertReceiver{
		{Name: "oncall", Type: "Slack", Channel: "#operators", Severities: []string{"critical"},
			URLSecret: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "slack"}, Key: "url"}},
		{Name: "teams", Type: "MSTeams", URLSecret: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "teams"}, Key: "url"}},
		{Name: "whatsapp-bridge", Type: "Webhook", URLSecret: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "bridge"}, Key: "url"}},
	}
	if err := c.Create(ctx, wt); err != nil {
		t.Fatal(err)
	}
	amc := &unstructured.Unstructured{}
	amc.SetGroupVersionKind(schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1alpha1", Kind: "AlertmanagerConfig"})
	waitFor(t, ctx, "the AlertmanagerConfig routed-alertmanager", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "routed-alertmanager"}, amc)
		return err == nil, err
	})
	receivers, _, _ := unstructured.NestedSlice(amc.Object, "spec", "receivers")
	byName := map[string]map[string]any{}
	for _, r := range receivers {
		m := r.(map[string]any)
		byName[m["name"].(string)] = m
	}
	for name, want := range map[string][]string{
		"oncall":          {"slackConfigs", "apiURL", "slack", "url"},
		"teams":           {"msteamsConfigs", "webhookUrl", "teams", "url"},
		"whatsapp-bridge": {"webhookConfigs", "urlSecret", "bridge", "url"},
	} {
		cfgs, _, _ := unstructured.NestedSlice(byName[name], want[0])
		if len(cfgs) != 1 {
			t.Errorf("receiver %s: %s = %v (the CRD dropped or never got it)", name, want[0], byName[name])
			continue
		}
		ref, _, _ := unstructured.NestedStringMap(cfgs[0].(map[string]any), want[1])
		if ref["name"] != want[2] || ref["key"] != want[3] {
			t.Errorf("receiver %s: %s.%s = %v, want the Secret %s key %s", name, want[0], want[1], ref, want[2], want[3])
		}
	}
	if ch, _, _ := unstructured.NestedSlice(byName["oncall"], "slackConfigs"); len(ch) == 1 && ch[0].(map[string]any)["channel"] != "#operators" {
		t.Errorf("the Slack receiver lost its channel: %v", ch[0])
	}
	routes, _, _ := unstructured.NestedSlice(amc.Object, "spec", "route", "routes")
	if len(routes) != 3 {
		t.Errorf("%d routes, want one per receiver: %v", len(routes), routes)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "routed-alertmanager"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Secret routed-alertmanager was written beside the AlertmanagerConfig: %v", err)
	}
}

// waitTopicPartitions waits until Kafka's metadata has each topic with its partitions: a topic
// just created reaches every broker's metadata a moment later.
func waitTopicPartitions(t *testing.T, ctx context.Context, kafka *harness.Kafka, want map[string]int) {
	t.Helper()
	adm := kadm.NewClient(kafka.Client(t))
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	waitFor(t, ctx, fmt.Sprintf("the topics %v in Kafka's metadata", want), func() (bool, error) {
		details, err := adm.ListTopics(ctx, names...)
		if err != nil {
			return false, err
		}
		for n, p := range want {
			if got := len(details[n].Partitions); got != p {
				return false, fmt.Errorf("%s has %d partitions, want %d", n, got, p)
			}
		}
		return true, nil
	})
}
