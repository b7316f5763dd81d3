package otelctrl_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/semconv"
)

// noDemoConfigMaps is a validating webhook as kubebuilder scaffolds them.
type noDemoConfigMaps struct{}

func (noDemoConfigMaps) ValidateCreate(_ context.Context, cm *corev1.ConfigMap) (admission.Warnings, error) {
	if strings.HasPrefix(cm.Name, "demo-") {
		return nil, errors.New("demo ConfigMaps are not allowed here")
	}
	return nil, nil
}

func (noDemoConfigMaps) ValidateUpdate(context.Context, *corev1.ConfigMap, *corev1.ConfigMap) (admission.Warnings, error) {
	return nil, nil
}

func (noDemoConfigMaps) ValidateDelete(context.Context, *corev1.ConfigMap) (admission.Warnings, error) {
	return nil, nil
}

// Webhooks registered on the manager NewManager returns — here by ctrl.NewWebhookManagedBy,
// unchanged — get a SERVER span per request that continues the API server's trace, with the
// admission decision on it. The API server's request is simulated with an AdmissionReview
// carrying a traceparent, as kube-apiserver sends it when started with --tracing-config-file.
func ExampleNewManager_webhooks() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	mux := http.NewServeMux()
	mgr, err := otelctrl.NewManager(&rest.Config{Host: "https://127.0.0.1:6443"}, ctrl.Options{
		Metrics:       metricsserver.Options{BindAddress: "0"},
		WebhookServer: webhook.NewServer(webhook.Options{WebhookMux: mux}),
	}, otelctrl.WithTracerProvider(tp), otelctrl.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		panic(err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &corev1.ConfigMap{}).WithValidator(noDemoConfigMaps{}).Complete(); err != nil {
		panic(err)
	}

	// What kube-apiserver sends (the manager would serve mux over TLS).
	server := httptest.NewServer(mux)
	defer server.Close()
	object, _ := json.Marshal(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "demo-settings"}})
	review, _ := json.Marshal(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "705ab4f5", Operation: admissionv1.Create, Namespace: "default", Name: "demo-settings",
			Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"},
			Object: runtime.RawExtension{Raw: object},
		},
	})
	req, _ := http.NewRequest(http.MethodPost, server.URL+"/validate--v1-configmap", strings.NewReader(string(review)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()

	s := spans.Ended()[0]
	fmt.Println(s.Name(), s.SpanKind(), s.SpanContext().TraceID(), "parent", s.Parent().SpanID())
	for _, kv := range s.Attributes() {
		switch kv.Key {
		case semconv.AdmissionAllowedKey, semconv.AdmissionCodeKey, semconv.AdmissionMessageKey:
			fmt.Printf("%s=%s\n", kv.Key, kv.Value.String())
		}
	}
	// Output:
	// POST /validate--v1-configmap server 4bf92f3577b34da6a3ce929d0e0e4736 parent 00f067aa0ba902b7
	// watchtower.admission.allowed=false
	// watchtower.admission.code=403
	// watchtower.admission.message=demo ConfigMaps are not allowed here
}
