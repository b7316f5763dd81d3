package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/integration/harness"
	"github.com/gowatchtower/watchtower/semconv"
)

// configMapPolicy is a validating webhook of the kind operators write: it looks something up in
// the API server (the object's Namespace, read past the cache) and denies ConfigMaps that ask
// for it.
type configMapPolicy struct{ reader client.Reader }

func (p configMapPolicy) ValidateCreate(ctx context.Context, cm *corev1.ConfigMap) (admission.Warnings, error) {
	var ns corev1.Namespace
	if err := p.reader.Get(ctx, client.ObjectKey{Name: cm.Namespace}, &ns); err != nil {
		return nil, err
	}
	if cm.Data["deny"] == "true" {
		return nil, fmt.Errorf("ConfigMap %s asks to be denied", cm.Name)
	}
	return nil, nil
}

func (configMapPolicy) ValidateUpdate(context.Context, *corev1.ConfigMap, *corev1.ConfigMap) (admission.Warnings, error) {
	return nil, nil
}

func (configMapPolicy) ValidateDelete(context.Context, *corev1.ConfigMap) (admission.Warnings, error) {
	return nil, nil
}

// TestWebhookSpansContinueTheAPIServersTrace serves a validating webhook from a manager built
// by otelctrl.NewManager (registered the kubebuilder way, ctrl.NewWebhookManagedBy) to a real
// kube-apiserver started with --tracing-config-file. A client in system:masters (whose
// traceparent the API server trusts) creates one allowed and one denied ConfigMap; in Jaeger,
// where the API server and the operator export directly, each webhook request is a SERVER span
// in the client's trace, a child of a kube-apiserver span, with the decision on it, and the
// webhook's own API call continues the trace below it.
func TestWebhookSpansContinueTheAPIServersTrace(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	jaeger := harness.StartJaeger(t)
	tracingConfig := filepath.Join(t.TempDir(), "tracing.yaml")
	// samplingRatePerMillion unset: the API server samples nothing on its own and follows the
	// sampled parent in the client's traceparent.
	if err := os.WriteFile(tracingConfig, []byte(fmt.Sprintf("apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: %s\n", jaeger.OTLPGRPC)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The path ctrl.NewWebhookManagedBy gives a validating webhook for core/v1 ConfigMap.
	const path = "/validate--v1-configmap"
	const label = "watchtower-webhook-test"
	kube := harness.StartKube(t,
		harness.WithAPIServerFlag("tracing-config-file", tracingConfig),
		harness.WithValidatingWebhooks(&admissionregv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: label},
			Webhooks: []admissionregv1.ValidatingWebhook{{
				Name:         "configmaps.webhook-test.gowatchtower.io",
				ClientConfig: admissionregv1.WebhookClientConfig{Service: &admissionregv1.ServiceReference{Namespace: "default", Name: "webhook", Path: ptr.To(path)}},
				Rules: []admissionregv1.RuleWithOperations{{
					Operations: []admissionregv1.OperationType{admissionregv1.Create},
					Rule:       admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
				}},
				// Only the test's ConfigMaps: the control plane's own (kube-root-ca.crt) must
				// not wait for a webhook server that is not up yet.
				ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{label: "yes"}},
				FailurePolicy:           ptr.To(admissionregv1.Fail),
				SideEffects:             ptr.To(admissionregv1.SideEffectClassNone),
				AdmissionReviewVersions: []string{"v1"},
				TimeoutSeconds:          ptr.To[int32](10),
			}},
		}))
	ctx := ctxTimeout(t, 3*time.Minute)

	// Both sides export to Jaeger as a user's would, each under its own service name.
	newProvider := func(service string) *sdktrace.TracerProvider {
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(jaeger.OTLPGRPC), otlptracegrpc.WithInsecure())
		if err != nil {
			t.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return tp
	}
	const operatorService, clientService = "webhook-operator", "webhook-test-client"
	operatorTP, clientTP := newProvider(operatorService), newProvider(clientService)

	mgr, err := otelctrl.NewManager(kube.Config, manager.Options{
		Scheme:        scheme.Scheme,
		Metrics:       metricsserver.Options{BindAddress: "0"},
		WebhookServer: webhook.NewServer(kube.WebhookServerOptions()),
	}, otelctrl.WithTracerProvider(operatorTP), otelctrl.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &corev1.ConfigMap{}).WithValidator(configMapPolicy{reader: mgr.GetAPIReader()}).Complete(); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	started := mgr.GetWebhookServer().StartedChecker()
	waitFor(t, ctx, "the webhook server to serve", func() (bool, error) {
		err := started(nil)
		return err == nil, err
	})

	// The client: envtest's admin (system:masters), its requests carrying the traceparent of a
	// span of its own, one trace per ConfigMap.
	c, err := client.New(otelctrl.WrapConfig(kube.Config, otelctrl.WithTracerProvider(clientTP), otelctrl.WithPropagator(propagation.TraceContext{})), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string, data map[string]string) (traceID string, err error) {
		sctx, span := clientTP.Tracer("webhook-test").Start(ctx, "create ConfigMap "+name)
		defer span.End()
		err = c.Create(sctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{label: "yes"}}, Data: data})
		return span.SpanContext().TraceID().String(), err
	}
	allowedTrace, err := create("allowed", map[string]string{"k": "v"})
	if err != nil {
		t.Fatalf("the allowed ConfigMap was refused: %v", err)
	}
	deniedTrace, err := create("denied", map[string]string{"deny": "true"})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "ConfigMap denied asks to be denied") {
		t.Fatalf("the denied ConfigMap: got %v, want the webhook's denial", err)
	}
	t.Logf("client: %v", err)

	// In Jaeger: the webhook's SERVER span in the client's trace, under a kube-apiserver span.
	webhookSpan := func(traceID string) (harness.JaegerTrace, harness.JaegerSpan) {
		t.Helper()
		var tr harness.JaegerTrace
		var ws harness.JaegerSpan
		waitFor(t, ctx, "the webhook span in trace "+traceID+" in Jaeger", func() (bool, error) {
			var found bool
			var err error
			tr, found, err = jaeger.Trace(ctx, traceID)
			if err != nil || !found {
				return false, err
			}
			ws = harness.JaegerSpan{}
			for _, s := range tr.Spans {
				if tr.Processes[s.ProcessID].ServiceName == operatorService && s.OperationName == "POST "+path {
					ws = s
				}
			}
			if ws.SpanID == "" {
				return false, fmt.Errorf("trace %s has %d spans, none %q of %s", traceID, len(tr.Spans), "POST "+path, operatorService)
			}
			// The two processes export on their own schedules (the API server batches its spans):
			// wait for the webhook span's parent too before judging whose it is.
			for _, s := range tr.Spans {
				if s.SpanID == ws.ParentSpanID() {
					return true, nil
				}
			}
			return false, fmt.Errorf("trace %s has the webhook span but not yet its parent %s", traceID, ws.ParentSpanID())
		})
		if ws.TraceID != traceID {
			t.Errorf("webhook span in trace %s, want the client's %s", ws.TraceID, traceID)
		}
		if kind, _ := ws.Tag("span.kind"); kind != "server" {
			t.Errorf("webhook span kind %v, want server", kind)
		}
		parent := ws.ParentSpanID()
		var ps *harness.JaegerSpan
		for i := range tr.Spans {
			if tr.Spans[i].SpanID == parent {
				ps = &tr.Spans[i]
			}
		}
		if ps == nil || tr.Processes[ps.ProcessID].ServiceName != "apiserver" {
			t.Fatalf("the webhook span's parent %s must be a kube-apiserver span of the trace (found %v)", parent, ps != nil)
		}
		t.Logf("trace %s: webhook span %q (%s, span.kind=server) is a child of kube-apiserver's %q", traceID, ws.OperationName, operatorService, ps.OperationName)
		return tr, ws
	}
	tag := func(s harness.JaegerSpan, key string) string {
		v, ok := s.Tag(key)
		if !ok {
			return "<unset>"
		}
		return fmt.Sprint(v)
	}

	tr, allowed := webhookSpan(allowedTrace)
	for key, want := range map[string]string{
		string(semconv.AdmissionAllowedKey):   "true",
		string(semconv.AdmissionCodeKey):      "200",
		string(semconv.AdmissionOperationKey): "CREATE",
		string(semconv.AdmissionKindKey):      "ConfigMap",
		string(semconv.AdmissionDryRunKey):    "false",
		string(semconv.ObjectNamespaceKey):    "default",
		string(semconv.ObjectNameKey):         "allowed",
		"http.route":                          path,
		"http.response.status_code":           "200",
	} {
		if got := tag(allowed, key); got != want {
			t.Errorf("allowed: %s = %s, want %s", key, got, want)
		}
	}
	// The webhook's Namespace read reached the API server in the same trace, below the webhook.
	byID := map[string]harness.JaegerSpan{}
	for _, s := range tr.Spans {
		byID[s.SpanID] = s
	}
	descends := func(s harness.JaegerSpan, ancestor string) bool {
		for p := s.ParentSpanID(); p != ""; p = byID[p].ParentSpanID() {
			if p == ancestor {
				return true
			}
		}
		return false
	}
	var nsGet string
	for _, s := range tr.Spans {
		if tr.Processes[s.ProcessID].ServiceName == "apiserver" && strings.HasPrefix(s.OperationName, "GET") && descends(s, allowed.SpanID) {
			nsGet = s.OperationName
		}
	}
	if nsGet == "" {
		t.Errorf("no kube-apiserver GET span below the webhook span: the webhook's own API call must continue its trace")
	} else {
		t.Logf("the webhook's Namespace read: kube-apiserver span %q below the webhook span", nsGet)
	}

	_, denied := webhookSpan(deniedTrace)
	for key, want := range map[string]string{
		string(semconv.AdmissionAllowedKey): "false",
		string(semconv.AdmissionCodeKey):    "403",
		string(semconv.AdmissionReasonKey):  "Forbidden",
		string(semconv.AdmissionMessageKey): "ConfigMap denied asks to be denied",
		string(semconv.ObjectNameKey):       "denied",
	} {
		if got := tag(denied, key); got != want {
			t.Errorf("denied: %s = %s, want %s", key, got, want)
		}
	}
	if status, ok := denied.Tag("otel.status_code"); ok && status == "ERROR" {
		t.Errorf("a denial is the webhook's answer, not its failure: the span must not be an error")
	}
	t.Logf("decisions: allowed %s=%s; denied %s=%s %s=%s %s=%q", semconv.AdmissionAllowedKey, tag(allowed, string(semconv.AdmissionAllowedKey)),
		semconv.AdmissionAllowedKey, tag(denied, string(semconv.AdmissionAllowedKey)), semconv.AdmissionCodeKey, tag(denied, string(semconv.AdmissionCodeKey)),
		semconv.AdmissionReasonKey, tag(denied, string(semconv.AdmissionReasonKey)))
}
