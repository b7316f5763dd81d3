package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"
	"github.com/gowatchtower/watchtower/integration/harness"
	"github.com/gowatchtower/watchtower/semconv"
)

// apiserverLinkedPolicy is the tail-sampling policy docs/instrumenting-an-operator.md tells a
// user to add to the gateway (or sampler) so that the API server's traces of a ServiceAccount
// operator's requests are kept: each is a trace of its own whose root span links to the
// operator's wire span, and none of the default policies (slow, errors, baseline) keeps a fast,
// successful request.
const apiserverLinkedPolicy = `      - name: apiserver-linked
        type: ottl_condition
        ottl_condition:
          error_mode: ignore
          span:
            - resource.attributes["service.name"] == "apiserver" and Len(span.links) > 0
`

// TestAPIServerSpansForAServiceAccount checks what docs/instrumenting-an-operator.md says of the
// API server's spans when the operator runs as a ServiceAccount: kube-apiserver (started with
// samplingRatePerMillion: 1000000) does not continue the operator's trace but starts a trace of
// its own whose root span links to the operator's wire span; the same request as a caller in
// system:masters (envtest's admin) or system:monitoring is a child in the operator's trace. The
// spans go the way a user's do: kube-apiserver and the operator export OTLP to otelcol-watchtower
// (deploy/collector/gateway.yaml plus the documented apiserver-linked policy), which
// tail-samples into Jaeger, where the test looks them up as a user would.
func TestAPIServerSpansForAServiceAccount(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	tools := harness.MustTools(t)
	const slowThreshold = time.Second

	// The gateway's pipeline with one policy added. The baseline is 0 so that nothing is kept
	// by chance: the operator's traces are kept by the errors policy (each reconcile fails after
	// its write), the API server's linked traces only by the added policy.
	gateway, err := os.ReadFile(filepath.Join(tools.RepoRoot, "deploy", "collector", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "    policies:\n"
	if strings.Count(string(gateway), anchor) != 1 {
		t.Fatalf("deploy/collector/gateway.yaml no longer has exactly one %q line to add the policy under", anchor)
	}
	gatewayConfig := filepath.Join(t.TempDir(), "gateway-apiserver-linked.yaml")
	if err := os.WriteFile(gatewayConfig, []byte(strings.Replace(string(gateway), anchor, anchor+apiserverLinkedPolicy, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	kafka := harness.StartKafka(t)
	const spansTopic, metricsTopic = "watchtower-apiserver-spans", "watchtower-apiserver-metrics"
	kafka.CreateTopic(t, spansTopic, 1)
	kafka.CreateTopic(t, metricsTopic, 1)
	jaeger := harness.StartJaeger(t)
	gw := harness.StartCollector(t, "otelcol-gateway", gatewayConfig, map[string]string{
		"WATCHTOWER_KAFKA_BROKERS":             kafka.Bootstrap,
		"WATCHTOWER_KAFKA_SPANS_TOPIC":         spansTopic,
		"WATCHTOWER_KAFKA_METRICS_TOPIC":       metricsTopic,
		"WATCHTOWER_TRACES_ENDPOINT":           jaeger.OTLPGRPC,
		"WATCHTOWER_SLOW_THRESHOLD_MS":         fmt.Sprint(slowThreshold.Milliseconds()),
		"WATCHTOWER_SAMPLING_BASELINE_PERCENT": "0",
		// The decision wait is the default 10 s, not a shorter one for speed: kube-apiserver's
		// batch span processor exports every 5 s, so a request's children (which end first)
		// can reach the gateway seconds before its root span, the one with the link; a trace
		// decided before its root arrives is dropped, root included.
	})

	// The API server records every request it does not get a trusted sampled parent for.
	tracingConfig := filepath.Join(t.TempDir(), "tracing.yaml")
	if err := os.WriteFile(tracingConfig, []byte(fmt.Sprintf(
		"apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\nendpoint: %s\nsamplingRatePerMillion: 1000000\n", gw.OTLPGRPC)), 0o644); err != nil {
		t.Fatal(err)
	}
	kube := harness.StartKube(t, harness.WithAPIServerFlag("tracing-config-file", tracingConfig))
	ctx := ctxTimeout(t, 4*time.Minute)

	// The operator's telemetry: OTLP to the gateway, as the sdk package would send it; a
	// recorder beside the exporter tells the test the IDs to look for.
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(gw.OTLPGRPC), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	operatorService := colUniqueService("apiserver-links-operator")
	recorded := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSpanProcessor(recorded),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", operatorService))))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	opts := []otelctrl.Option{otelctrl.WithTracerProvider(tp), otelctrl.WithPropagator(propagation.TraceContext{})}

	// The identities: a ServiceAccount allowed to get and create ConfigMaps in its namespace,
	// with a token from the TokenRequest API and no client certificate; a user in
	// system:monitoring with the same Role (a client certificate envtest issues); envtest's admin.
	admin, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	const ns, saName, monitoringUser = "default", "configmap-writer", "monitoring-operator"
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: saName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "configmap-writer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "configmap-writer"},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "configmap-writer"},
		Subjects: []rbacv1.Subject{
			{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: saName},
			{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: monitoringUser},
		}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC's authorizer reads the bindings from an informer: wait until it allows both, so that
	// each identity makes exactly one request in its reconcile (a 403 would be one too).
	for _, subject := range []struct {
		user   string
		groups []string
	}{{"system:serviceaccount:" + ns + ":" + saName, []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}, {monitoringUser, []string{"system:monitoring", "system:authenticated"}}} {
		waitFor(t, ctx, subject.user+" allowed to create ConfigMaps", func() (bool, error) {
			sar, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: subject.user, Groups: subject.groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "configmaps"},
			}}, metav1.CreateOptions{})
			if err != nil {
				return false, err
			}
			return sar.Status.Allowed, fmt.Errorf("denied: %s", sar.Status.Reason)
		})
	}
	token, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, saName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	monitoring, err := kube.Env.AddUser(envtest.User{Name: monitoringUser, Groups: []string{"system:monitoring"}}, nil)
	if err != nil {
		t.Fatal(err)
	}

	type identity struct {
		name    string
		cfg     *rest.Config
		trusted bool // in system:masters or system:monitoring: the API server continues the trace
		groups  []string
	}
	identities := []*identity{
		{name: "serviceaccount", cfg: &rest.Config{Host: kube.Config.Host, BearerToken: token.Status.Token,
			TLSClientConfig: rest.TLSClientConfig{CAData: kube.Config.CAData}}},
		{name: "admin", cfg: rest.CopyConfig(kube.Config), trusted: true},
		{name: "monitoring", cfg: monitoring.Config(), trusted: true},
	}
	since := time.Now() // envtest's anonymous readiness checks were before: they are new roots too
	for _, id := range identities {
		// A user agent of its own: what a user searches the API server's spans by in Jaeger.
		id.cfg.UserAgent = "apiserver-links-" + id.name
		cs, err := kubernetes.NewForConfig(id.cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Who the API server thinks the caller is (outside any reconcile: no traceparent).
		review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: SelfSubjectReview: %v", id.name, err)
		}
		id.groups = review.Status.UserInfo.Groups
		privileged := slices.Contains(id.groups, "system:masters") || slices.Contains(id.groups, "system:monitoring")
		if privileged != id.trusted {
			t.Fatalf("%s authenticates as %q in groups %v: want privileged=%v", id.name, review.Status.UserInfo.Username, id.groups, id.trusted)
		}
		t.Logf("%s: user %q, groups %v", id.name, review.Status.UserInfo.Username, id.groups)
	}

	// One unit of work per identity, as the operator's reconcile would be: a root span in the
	// test process, with the request made through a client built from a config wrapped by
	// otelctrl.WrapConfig, the transport that sends traceparent. It creates a ConfigMap (one
	// request to the API server) and fails, so that the gateway's errors policy keeps the
	// operator's trace.
	tracer := tp.Tracer("apiserver-links-test")
	type reconcileIDs struct{ traceID, reconcileSpan, wireSpan string }
	ids := map[string]reconcileIDs{}
	for _, id := range identities {
		cs, err := kubernetes.NewForConfig(otelctrl.WrapConfig(id.cfg, opts...))
		if err != nil {
			t.Fatal(err)
		}
		name := "by-" + id.name
		rctx, span := tracer.Start(ctx, "reconcile apiserver-links", trace.WithNewRoot(), trace.WithAttributes(semconv.ObjectName(name)))
		_, err = cs.CoreV1().ConfigMaps(ns).Create(rctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string]string{"by": id.name}}, metav1.CreateOptions{})
		span.SetStatus(codes.Error, "failing on purpose: the errors policy keeps this trace")
		span.End()
		if err != nil {
			t.Fatalf("%s: create ConfigMap %s: %v", id.name, name, err)
		}
		got := reconcileIDs{traceID: span.SpanContext().TraceID().String(), reconcileSpan: span.SpanContext().SpanID().String()}
		var root sdktrace.ReadOnlySpan
		for _, s := range recorded.Ended() {
			if s.SpanContext().SpanID() == span.SpanContext().SpanID() {
				root = s
			}
		}
		// The span whose context went out in traceparent: the transport's wire span.
		if wire := childrenOf(recorded.Ended(), root); len(wire) == 1 && wire[0].Name() == "POST" {
			got.wireSpan = wire[0].SpanContext().SpanID().String()
		} else {
			t.Fatalf("%s: the request must have one POST wire span under the reconcile span, got %v", id.name, names(wire))
		}
		ids[id.name] = got
	}

	apiserverSpans := func(tr harness.JaegerTrace) []harness.JaegerSpan {
		var out []harness.JaegerSpan
		for _, s := range tr.Spans {
			if tr.Processes[s.ProcessID].ServiceName == "apiserver" {
				out = append(out, s)
			}
		}
		return out
	}
	const createOp = "POST /api/v1/namespaces/{:namespace}/configmaps"

	// Trusted callers: the API server's span of the POST is a child of the wire span, in the
	// reconcile's trace, without links.
	for _, id := range identities {
		if !id.trusted {
			continue
		}
		want := ids[id.name]
		var child harness.JaegerSpan
		waitFor(t, ctx, id.name+": the API server's span in the reconcile's trace in Jaeger", func() (bool, error) {
			tr, found, err := jaeger.Trace(ctx, want.traceID)
			if err != nil || !found {
				return false, err
			}
			for _, s := range apiserverSpans(tr) {
				if s.ParentSpanID() == want.wireSpan {
					child = s
					return true, nil
				}
			}
			return false, fmt.Errorf("trace %s has %d spans, %d of the API server", want.traceID, len(tr.Spans), len(apiserverSpans(tr)))
		})
		if child.OperationName != createOp {
			t.Errorf("%s: the API server's child span is %q, want %q", id.name, child.OperationName, createOp)
		}
		for _, ref := range child.References {
			if ref.RefType != "CHILD_OF" {
				t.Errorf("%s: the API server's span in the reconcile's trace has a %s reference to %s/%s: a trusted caller's request must not be linked", id.name, ref.RefType, ref.TraceID, ref.SpanID)
			}
		}
		t.Logf("%s (groups %v): API server span %q %s is a CHILD_OF the POST wire span %s in the reconcile's trace %s",
			id.name, id.groups, child.OperationName, child.SpanID, want.wireSpan, want.traceID)
	}

	// The ServiceAccount: searching Jaeger as a user would (service apiserver, the operation,
	// the operator's user agent) finds a trace of the API server's own whose root span has a
	// FOLLOWS_FROM reference to the operator's wire span.
	sa := identities[0]
	want := ids[sa.name]
	var linked harness.JaegerTrace
	var root harness.JaegerSpan
	var candidates int
	waitFor(t, ctx, "the API server's trace linked to the ServiceAccount's wire span in Jaeger", func() (bool, error) {
		traces, err := jaeger.FindTraces(ctx, harness.TraceQuery{Service: "apiserver", Operation: createOp,
			Tags: map[string]string{"user_agent.original": sa.cfg.UserAgent}})
		if err != nil {
			return false, err
		}
		candidates = len(traces)
		for _, tr := range traces {
			for _, s := range tr.Spans {
				for _, ref := range s.References {
					if ref.RefType == "FOLLOWS_FROM" && ref.TraceID == want.traceID && ref.SpanID == want.wireSpan {
						linked, root = tr, s
						return true, nil
					}
				}
			}
		}
		return false, fmt.Errorf("%d apiserver traces of %s by %s, none linked to %s/%s", len(traces), createOp, sa.cfg.UserAgent, want.traceID, want.wireSpan)
	})
	if root.TraceID == want.traceID {
		t.Errorf("the ServiceAccount's API server span is in the reconcile's trace %s: the API server continued an untrusted caller's trace", want.traceID)
	}
	if p := root.ParentSpanID(); p != "" {
		t.Errorf("the ServiceAccount's API server span %s has parent %s: want the root of its own trace", root.SpanID, p)
	}
	if len(root.References) != 1 {
		t.Errorf("the ServiceAccount's API server span has references %+v: want exactly the one link", root.References)
	}
	if root.OperationName != createOp {
		t.Errorf("the linked API server span is %q, want %q", root.OperationName, createOp)
	}
	// Only the added policy can have kept it: it is neither slow nor an error.
	if d := time.Duration(root.Duration) * time.Microsecond; d >= slowThreshold {
		t.Errorf("the linked API server span took %s, over the slow threshold: the test cannot tell which policy kept it", d)
	}
	if v, ok := root.Tag("otel.status_code"); ok && v == "ERROR" {
		t.Errorf("the linked API server span has status ERROR: the test cannot tell which policy kept it")
	}
	// What the user sees when opening the reconcile's trace: no span of the API server.
	recTrace, found, err := jaeger.Trace(ctx, want.traceID)
	if err != nil || !found {
		t.Fatalf("the ServiceAccount's reconcile trace %s is not in Jaeger (found %v): %v", want.traceID, found, err)
	}
	if n := len(apiserverSpans(recTrace)); n != 0 {
		t.Errorf("the ServiceAccount's reconcile trace %s holds %d API server spans, want none", want.traceID, n)
	}
	t.Logf("serviceaccount (groups %v): reconcile trace %s has %d spans, none of the API server; Jaeger search service=apiserver operation=%q user_agent.original=%s found %d trace(s); trace %s (%d spans of the API server) has root %s (%s, %dµs) with FOLLOWS_FROM %s/%s = the POST wire span",
		sa.groups, want.traceID, len(recTrace.Spans), createOp, sa.cfg.UserAgent, candidates, linked.TraceID, len(apiserverSpans(linked)), root.SpanID, root.OperationName, root.Duration, want.traceID, want.wireSpan)

	// The added policy kept exactly the one linked trace: the trusted callers' spans joined the
	// reconciles' traces, and the API server's other traces (its own loopback requests, the
	// test's admin calls without traceparent) have no link.
	kept, err := gw.WaitSelfMetric(ctx, "otelcol_processor_tail_sampling_count_traces_sampled",
		map[string]string{"policy": "apiserver-linked", "sampled": "true"}, func(v float64) bool { return v >= 1 })
	if err != nil {
		t.Fatal(err)
	}
	if kept != 1 {
		t.Errorf("the apiserver-linked policy kept %v traces, want exactly the ServiceAccount's one", kept)
	}

	// The cost, from Kafka, where the gateway writes every span before sampling: every request
	// the API server records is a trace, and some are two: the authentication filter's span is
	// started before WithTracing (DefaultBuildHandlerChain's filterlatency.TrackStarted
	// "authentication"), so it is the parent of the request's span only when that span neither
	// continues a traceparent nor is a new root; otherwise it is the lone span of a trace of its
	// own. So the one-span authentication traces since the identities' first request are as many
	// as the requests whose span is a new root (an untrusted caller's) or continues a
	// traceparent (a trusted caller's, or one of the API server's own loopback calls); among
	// them the four this test made: the ServiceAccount's SelfSubjectReview and POST, the
	// trusted callers' POSTs.
	known := map[string]int{
		"apiserver-links-serviceaccount root POST /apis/authentication.k8s.io/v1/selfsubjectreviews": 1,
		"apiserver-links-serviceaccount root " + createOp:                                            1,
		"apiserver-links-admin continued " + createOp:                                                1,
		"apiserver-links-monitoring continued " + createOp:                                           1,
	}
	var api apiserverSpanStats
	kctx, kcancel := context.WithTimeout(ctx, time.Minute)
	defer kcancel()
	waitFor(t, kctx, "as many one-span authentication traces of the API server in Kafka as requests that are new roots or continue a traceparent", func() (bool, error) {
		api = countAPIServerSpans(readSpans(t, kctx, kafka, spansTopic), since)
		for k, n := range known {
			if api.unchained[k] < n {
				return false, fmt.Errorf("%+v: no %q yet", api, k)
			}
		}
		return api.loneAuthentication == api.unchainedRequests, fmt.Errorf("%+v", api)
	})
	received, _, _ := gw.SelfMetric(ctx, "otelcol_receiver_accepted_spans", map[string]string{"receiver": "otlp"})
	sent, _, _ := gw.SelfMetric(ctx, "otelcol_exporter_sent_spans", map[string]string{"exporter": "otlp_grpc/traces_backend"})
	t.Logf("cost: Kafka holds %d API server spans in %d traces for %d requests (%.1f spans per request); %d one-span authentication traces = %d requests that are new roots or continue a traceparent %v; the gateway accepted %v spans, sent %v to Jaeger; the apiserver-linked policy kept %v trace(s)",
		api.spans, api.traces, api.requests, float64(api.spans)/float64(max(api.requests, 1)), api.loneAuthentication, api.unchainedRequests, api.unchained, received, sent, kept)
}

type apiserverSpanStats struct {
	spans, traces, requests, loneAuthentication, unchainedRequests int
	// unchained counts the requests since the cut-off whose span is not the child of its
	// authentication span (a new root, or the continuation of a traceparent), by
	// "user agent, root|continued, span name".
	unchained map[string]int
}

// countAPIServerSpans counts the API server's spans, its traces (root spans) and the requests
// it served (server spans); and, from since on, the traces that are a lone "authentication"
// span and the requests whose span is not a child of its authentication span.
func countAPIServerSpans(spans []kafkaSpan, since time.Time) apiserverSpanStats {
	st := apiserverSpanStats{unchained: map[string]int{}}
	perTrace := map[string]int{}
	authRoots := map[string]bool{}
	names := map[string]string{}
	for _, s := range spans {
		if s.service == "apiserver" {
			names[s.span.SpanID().String()] = s.span.Name()
		}
	}
	for _, s := range spans {
		if s.service != "apiserver" {
			continue
		}
		st.spans++
		tid := s.span.TraceID().String()
		perTrace[tid]++
		recent := !s.span.StartTimestamp().AsTime().Before(since)
		parent := s.span.ParentSpanID()
		if s.span.Kind() == ptrace.SpanKindServer {
			st.requests++
			// The API server's own loopback requests continue a span of the API server (its
			// client's): "continued" covers them as well as the callers' traceparent.
			if recent && names[parent.String()] != "authentication" {
				how := "root"
				if !parent.IsEmpty() {
					how = "continued"
				}
				st.unchainedRequests++
				st.unchained[s.attr("user_agent.original")+" "+how+" "+s.span.Name()]++
			}
		}
		if parent.IsEmpty() {
			st.traces++
			if s.span.Name() == "authentication" && recent {
				authRoots[tid] = true
			}
		}
	}
	for tid := range authRoots {
		if perTrace[tid] == 1 {
			st.loneAuthentication++
		}
	}
	return st
}
