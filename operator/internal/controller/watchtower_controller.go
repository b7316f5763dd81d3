// Package controller is the Watchtower operator's reconciler: it renders a Watchtower into the
// collectors' objects (the otelcol-watchtower chart, see package render), applies them, prunes
// what the spec no longer asks for, creates the Kafka topics, checks the traces backend, and
// reports all of it in the Watchtower's status.
package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	otelctrl "github.com/gowatchtower/watchtower/instrumentation/controllerruntime"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/operator/internal/kafka"
	"github.com/gowatchtower/watchtower/operator/internal/render"
)

const (
	// FieldOwner is the operator's server-side-apply field manager.
	FieldOwner = "watchtower-operator"
	// Finalizer removes what owner references cannot: cluster-scoped objects (the agent's
	// ClusterRole) and the endpoint ConfigMaps in the served namespaces.
	Finalizer = "observability.gowatchtower.io/cleanup"
	// EndpointConfigMap is the ConfigMap written into each served namespace.
	EndpointConfigMap = "watchtower-otlp"
	// secretsHashAnnotation on the collectors' pod templates rolls them when a Secret they read
	// at start (Kafka credentials, TLS files) changes: the chart's checksum/config covers only
	// the ConfigMap.
	secretsHashAnnotation = "observability.gowatchtower.io/secrets-hash"
)

// Requeue intervals: the operator re-checks Kafka and the backend, which it cannot watch.
const (
	healthyRecheck   = 60 * time.Second
	unhealthyRecheck = 10 * time.Second
)

// managedKinds are the kinds the chart and the operator create, for pruning and deletion.
// PersistentVolumeClaims are not among them: queued data outlives its Watchtower (the chart
// keeps them too).
var managedKinds = []schema.GroupVersionKind{
	{Version: "v1", Kind: "ConfigMap"},
	{Version: "v1", Kind: "Secret"},
	{Version: "v1", Kind: "Service"},
	{Version: "v1", Kind: "ServiceAccount"},
	{Group: "apps", Version: "v1", Kind: "Deployment"},
	{Group: "apps", Version: "v1", Kind: "StatefulSet"},
	{Group: "apps", Version: "v1", Kind: "DaemonSet"},
	{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"},
	{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"},
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"},
	{Group: "monitoring.coreos.com", Version: "v1alpha1", Kind: "AlertmanagerConfig"},
}

// WatchtowerReconciler reconciles Watchtowers.
type WatchtowerReconciler struct {
	Client client.Client
	// APIReader reads Secrets from the API server: caching every Secret of the cluster to read
	// a few would cost memory and a cluster-wide watch.
	APIReader client.Reader
	// Discovery tells which optional APIs (the prometheus-operator's) the cluster serves.
	Discovery discovery.DiscoveryInterface
	// Render sets the collector image.
	Render render.Options
	// Instrumentation are otelctrl's options for this controller.
	Instrumentation []otelctrl.Option

	states     *pipelineStates
	collectors *collectorReader
	// kafkaChecks remembers the last Kafka check of each Watchtower: its collectors' status
	// changes (a rollout) reconcile it often, and Kafka need not be asked each time.
	kafkaChecks sync.Map // types.NamespacedName → kafkaCheck
}

// kafkaCheck is one check of a Watchtower's Kafka, valid for its generation and Secrets.
type kafkaCheck struct {
	generation int64
	secrets    string
	at         time.Time
	topics     []v1alpha1.TopicStatus
	err        error
}

// kafkaCheckTTL is how long a check stands for the same spec and Secrets.
const kafkaCheckTTL = 5 * time.Second

// checkKafka connects with the pipeline's credentials and creates the missing topics, or
// returns the last result when it is recent and nothing it depends on changed.
func (r *WatchtowerReconciler) checkKafka(ctx context.Context, wt *v1alpha1.Watchtower, creds kafka.Credentials, secretsHash string) ([]v1alpha1.TopicStatus, error) {
	key := client.ObjectKeyFromObject(wt)
	if v, ok := r.kafkaChecks.Load(key); ok {
		c := v.(kafkaCheck)
		if c.generation == wt.Generation && c.secrets == secretsHash && time.Since(c.at) < kafkaCheckTTL {
			return c.topics, c.err
		}
	}
	kctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	topics, err := kafka.Ensure(kctx, wt.Spec.Kafka, creds, topicsOf(wt))
	r.kafkaChecks.Store(key, kafkaCheck{generation: wt.Generation, secrets: secretsHash, at: time.Now(), topics: topics, err: err})
	return topics, err
}

// +kubebuilder:rbac:groups=observability.gowatchtower.io,resources=watchtowers,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=observability.gowatchtower.io,resources=watchtowers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=observability.gowatchtower.io,resources=watchtowers/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=configmaps;secrets;services;serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=servicemonitors;prometheusrules;alertmanagerconfigs,verbs=get;list;watch;create;update;patch;delete
// The collectors' pods, for their own metrics; and what the agent's ClusterRole grants (no one
// may grant a permission they do not hold).
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one Watchtower's pipeline to its spec and reports what it found.
func (r *WatchtowerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	wt := &v1alpha1.Watchtower{}
	if err := r.Client.Get(ctx, req.NamespacedName, wt); err != nil {
		if apierrors.IsNotFound(err) {
			r.states.forget(req.NamespacedName)
			r.kafkaChecks.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !wt.DeletionTimestamp.IsZero() {
		r.states.forget(req.NamespacedName)
		if err := r.deleteUnowned(ctx, wt); err != nil {
			return ctrl.Result{}, err
		}
		if controllerutil.RemoveFinalizer(wt, Finalizer) {
			return ctrl.Result{}, r.Client.Update(ctx, wt)
		}
		return ctrl.Result{}, nil
	}
	if controllerutil.AddFinalizer(wt, Finalizer) {
		if err := r.Client.Update(ctx, wt); err != nil {
			return ctrl.Result{}, err
		}
	}

	st := statusBuilder{wt: wt}
	apiVersions, err := r.apiVersions()
	if err != nil {
		return ctrl.Result{}, err
	}
	opts := r.Render
	opts.APIVersions = apiVersions
	res, err := render.Render(wt, opts)
	if err != nil {
		// Nothing is applied from a spec the chart refuses; what runs keeps running.
		st.set(v1alpha1.ConditionReady, false, "InvalidSpec", err.Error())
		st.set(v1alpha1.ConditionDegraded, true, "InvalidSpec", err.Error())
		return ctrl.Result{}, r.writeStatus(ctx, wt, st)
	}

	creds, secretsHash, credErr := r.kafkaCredentials(ctx, wt)
	objs := res.Objects
	extra, err := r.extraObjects(ctx, wt, apiVersions)
	if err != nil {
		st.set(v1alpha1.ConditionDegraded, true, "AlertingInvalid", err.Error())
	}
	objs = append(objs, extra...)
	for _, o := range objs {
		if credErr == nil {
			annotateSecretsHash(o, secretsHash)
		}
		if err := r.apply(ctx, wt, o); err != nil {
			return ctrl.Result{}, fmt.Errorf("applying %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	if err := r.prune(ctx, wt, objs, apiVersions); err != nil {
		return ctrl.Result{}, err
	}
	wt.Status.ConfigHash = res.ConfigHash
	svc := render.GatewayService(wt)
	wt.Status.OTLPEndpoint = &v1alpha1.OTLPEndpoint{
		GRPC: fmt.Sprintf("%s.%s.svc:4317", svc, wt.Namespace),
		HTTP: fmt.Sprintf("http://%s.%s.svc:4318", svc, wt.Namespace),
	}

	// Kafka, with the pipeline's own credentials.
	kafkaOK := false
	if credErr != nil {
		st.set(v1alpha1.ConditionKafkaReachable, false, "CredentialsMissing", credErr.Error())
	} else {
		topics, err := r.checkKafka(ctx, wt, creds, secretsHash)
		var ke *kafka.Error
		switch {
		case errors.As(err, &ke):
			st.set(v1alpha1.ConditionKafkaReachable, false, ke.Reason, ke.Error())
		case err != nil:
			st.set(v1alpha1.ConditionKafkaReachable, false, kafka.ReasonUnreachable, err.Error())
		default:
			kafkaOK = true
			wt.Status.Topics = topics
			var created, differs []string
			for _, t := range topics {
				if t.Created {
					created = append(created, t.Name)
				}
				if t.Differs != "" {
					differs = append(differs, fmt.Sprintf("topic %s: %s", t.Name, t.Differs))
				}
			}
			msg := "the brokers answered and the topics exist"
			if len(created) > 0 {
				msg = "created the topics " + strings.Join(created, ", ")
				log.Info("created Kafka topics", "topics", created)
			}
			st.set(v1alpha1.ConditionKafkaReachable, true, "TopicsReady", msg)
			if len(differs) > 0 {
				st.set(v1alpha1.ConditionDegraded, true, "TopicsDiffer", strings.Join(differs, "; ")+" (existing topics are not changed)")
			}
		}
	}

	// The traces backend: a TCP connection is what the collector's exporter needs first.
	backendOK := true
	if err := dial(ctx, wt.Spec.TracesBackend.Endpoint); err != nil {
		backendOK = false
		st.set(v1alpha1.ConditionBackendReachable, false, "ConnectionFailed",
			fmt.Sprintf("no connection to the traces backend %s: %v; sampled traces wait in the collectors' queue", wt.Spec.TracesBackend.Endpoint, err))
	} else {
		st.set(v1alpha1.ConditionBackendReachable, true, "Connected", "the traces backend "+wt.Spec.TracesBackend.Endpoint+" accepts connections")
	}

	// The collectors.
	components, waiting, problems, err := r.components(ctx, res.Objects)
	if err != nil {
		return ctrl.Result{}, err
	}
	wt.Status.Components = components
	switch {
	case len(waiting) > 0:
		st.set(v1alpha1.ConditionReady, false, "RollingOut", strings.Join(waiting, "; "))
	case !kafkaOK:
		st.set(v1alpha1.ConditionReady, false, "KafkaUnreachable", "the collectors run, but cannot write to Kafka: see condition KafkaReachable")
	default:
		st.set(v1alpha1.ConditionReady, true, "Running", "every collector runs the current configuration")
	}
	if !st.has(v1alpha1.ConditionDegraded) {
		switch {
		case !kafkaOK:
			st.set(v1alpha1.ConditionDegraded, true, "KafkaUnreachable", st.message(v1alpha1.ConditionKafkaReachable))
		case !backendOK:
			st.set(v1alpha1.ConditionDegraded, true, "BackendUnreachable", st.message(v1alpha1.ConditionBackendReachable))
		case len(problems) > 0:
			st.set(v1alpha1.ConditionDegraded, true, "CollectorsFailing", strings.Join(problems, "; "))
		default:
			st.set(v1alpha1.ConditionDegraded, false, "AsExpected", "nothing the pipeline needs is failing")
		}
	}
	if err := r.writeStatus(ctx, wt, st); err != nil {
		return ctrl.Result{}, err
	}
	if len(waiting) > 0 || !kafkaOK || !backendOK {
		return ctrl.Result{RequeueAfter: unhealthyRecheck}, nil
	}
	return ctrl.Result{RequeueAfter: healthyRecheck}, nil
}

// apply server-side-applies o, owned by wt where an owner reference can hold (same namespace).
func (r *WatchtowerReconciler) apply(ctx context.Context, wt *v1alpha1.Watchtower, o *unstructured.Unstructured) error {
	namespaced, err := r.Client.IsObjectNamespaced(o)
	if err != nil {
		return err
	}
	if namespaced && o.GetNamespace() == "" {
		o.SetNamespace(wt.Namespace)
	}
	if namespaced && o.GetNamespace() == wt.Namespace {
		o.SetOwnerReferences([]metav1.OwnerReference{{
			APIVersion: v1alpha1.GroupVersion.String(), Kind: "Watchtower", Name: wt.Name, UID: wt.UID,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}})
	}
	return r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner(FieldOwner), client.ForceOwnership)
}

// prune deletes the objects of wt that it no longer renders (e.g. the sampler once disabled).
func (r *WatchtowerReconciler) prune(ctx context.Context, wt *v1alpha1.Watchtower, keep []*unstructured.Unstructured, apiVersions []string) error {
	want := map[string]bool{}
	for _, o := range keep {
		want[objKey(o)] = true
	}
	return r.eachOwned(ctx, wt, apiVersions, func(o *unstructured.Unstructured) error {
		if want[objKey(o)] {
			return nil
		}
		logf.FromContext(ctx).Info("removing what the spec no longer asks for", "kind", o.GetKind(), "namespace", o.GetNamespace(), "name", o.GetName())
		return client.IgnoreNotFound(r.Client.Delete(ctx, o, client.PropagationPolicy(metav1.DeletePropagationBackground)))
	})
}

// deleteUnowned deletes what the garbage collector will not: wt's cluster-scoped objects and
// those in other namespaces. The rest goes with wt through its owner references.
func (r *WatchtowerReconciler) deleteUnowned(ctx context.Context, wt *v1alpha1.Watchtower) error {
	apiVersions, err := r.apiVersions()
	if err != nil {
		return err
	}
	return r.eachOwned(ctx, wt, apiVersions, func(o *unstructured.Unstructured) error {
		if o.GetNamespace() == wt.Namespace {
			return nil
		}
		return client.IgnoreNotFound(r.Client.Delete(ctx, o))
	})
}

// eachOwned calls fn with every object of the managed kinds labelled as wt's.
func (r *WatchtowerReconciler) eachOwned(ctx context.Context, wt *v1alpha1.Watchtower, apiVersions []string, fn func(*unstructured.Unstructured) error) error {
	sel := client.MatchingLabels{render.LabelWatchtower: wt.Name, render.LabelWatchtowerNamespace: wt.Namespace}
	for _, gvk := range managedKinds {
		if gvk.Group == "monitoring.coreos.com" && !slices.Contains(apiVersions, gvk.GroupVersion().String()) {
			continue
		}
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := r.Client.List(ctx, list, sel); err != nil {
			if meta.IsNoMatchError(err) {
				continue
			}
			return fmt.Errorf("listing %s: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			o := &list.Items[i]
			o.SetGroupVersionKind(gvk)
			if err := fn(o); err != nil {
				return err
			}
		}
	}
	return nil
}

// extraObjects are what the operator adds to the chart: the endpoint ConfigMaps of the served
// namespaces and the alert routing.
func (r *WatchtowerReconciler) extraObjects(ctx context.Context, wt *v1alpha1.Watchtower, apiVersions []string) ([]*unstructured.Unstructured, error) {
	labels := map[string]any{
		"app.kubernetes.io/managed-by": render.ManagedBy, "app.kubernetes.io/part-of": "gowatchtower",
		render.LabelWatchtower: wt.Name, render.LabelWatchtowerNamespace: wt.Namespace,
	}
	var out []*unstructured.Unstructured
	svc := fmt.Sprintf("%s.%s.svc", render.GatewayService(wt), wt.Namespace)
	for _, ns := range wt.Spec.ServedNamespaces {
		out = append(out, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": EndpointConfigMap, "namespace": ns, "labels": labels},
			"data": map[string]any{
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + svc + ":4318",
				"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
			},
		}})
	}
	if len(wt.Spec.Alerting.Receivers) == 0 {
		return out, nil
	}
	name := wt.Name + "-alertmanager"
	if slices.Contains(apiVersions, "monitoring.coreos.com/v1alpha1/AlertmanagerConfig") {
		out = append(out, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "monitoring.coreos.com/v1alpha1", "kind": "AlertmanagerConfig",
			"metadata": map[string]any{"name": name, "namespace": wt.Namespace, "labels": labels},
			"spec":     alertmanagerConfigResource(wt),
		}})
		return out, nil
	}
	urls := map[string]string{}
	for _, rcv := range wt.Spec.Alerting.Receivers {
		s := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: wt.Namespace, Name: rcv.URLSecret.Name}, s); err != nil {
			return out, fmt.Errorf("spec.alerting.receivers[%s].urlSecret: %w", rcv.Name, err)
		}
		urls[rcv.Name] = strings.TrimSpace(string(s.Data[rcv.URLSecret.Key]))
	}
	cfg, err := AlertmanagerConfig(wt.Spec.Alerting, urls)
	if err != nil {
		return out, err
	}
	out = append(out, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata":   map[string]any{"name": name, "namespace": wt.Namespace, "labels": labels},
		"type":       "Opaque",
		"stringData": map[string]any{"alertmanager.yaml": string(cfg)},
	}})
	return out, nil
}

// kafkaCredentials reads the Secrets of the Kafka spec, and hashes them for the collectors'
// pod templates.
func (r *WatchtowerReconciler) kafkaCredentials(ctx context.Context, wt *v1alpha1.Watchtower) (kafka.Credentials, string, error) {
	var c kafka.Credentials
	h := sha256.New()
	get := func(field, name string, keys ...string) ([][]byte, error) {
		s := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: wt.Namespace, Name: name}, s); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("%s: the Secret %s/%s does not exist", field, wt.Namespace, name)
			}
			return nil, fmt.Errorf("%s: reading the Secret %s/%s: %w", field, wt.Namespace, name, err)
		}
		out := make([][]byte, len(keys))
		for i, k := range keys {
			if k == "" {
				continue
			}
			v, ok := s.Data[k]
			if !ok {
				return nil, fmt.Errorf("%s: the Secret %s/%s has no key %q", field, wt.Namespace, name, k)
			}
			out[i] = v
			h.Write([]byte(name + "/" + k + "="))
			h.Write(v)
		}
		return out, nil
	}
	if a := wt.Spec.Kafka.SASL; a != nil {
		v, err := get("spec.kafka.sasl.secretName", a.SecretName, a.UsernameKeyOrDefault(), a.PasswordKeyOrDefault())
		if err != nil {
			return c, "", err
		}
		c.Username, c.Password = string(v[0]), string(v[1])
	}
	if t := wt.Spec.Kafka.TLS; t != nil {
		v, err := get("spec.kafka.tls.secretName", t.SecretName, t.CAKeyOrDefault(), t.CertKey, t.KeyKey)
		if err != nil {
			return c, "", err
		}
		c.CA, c.Cert, c.Key = v[0], v[1], v[2]
	}
	if wt.Spec.Kafka.SASL == nil && wt.Spec.Kafka.TLS == nil {
		return c, "", nil
	}
	return c, hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// annotateSecretsHash puts the Secrets' hash on the pod template of a workload that connects
// to Kafka, so a credential change rolls it.
func annotateSecretsHash(o *unstructured.Unstructured, hash string) {
	if hash == "" {
		return
	}
	switch o.GetKind() {
	case "Deployment", "StatefulSet":
	default:
		return
	}
	if strings.HasSuffix(o.GetName(), "-agent") {
		return
	}
	_ = unstructured.SetNestedField(o.Object, hash, "spec", "template", "metadata", "annotations", secretsHashAnnotation)
}

// components reports each collector workload's readiness; waiting says what is not ready yet.
// problems says what the collectors' own metrics show failing since the last check. objs are
// as applied: their generation is the API server's, which the cache may not have yet.
func (r *WatchtowerReconciler) components(ctx context.Context, objs []*unstructured.Unstructured) (out []v1alpha1.ComponentStatus, waiting, problems []string, err error) {
	for _, o := range objs {
		key := types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
		var cs v1alpha1.ComponentStatus
		var why string
		switch o.GetKind() {
		case "Deployment":
			d := &appsv1.Deployment{}
			if err := r.Client.Get(ctx, key, d); err != nil {
				return nil, nil, nil, err
			}
			want := ptr.Deref(d.Spec.Replicas, 1)
			cs = v1alpha1.ComponentStatus{Name: d.Name, Kind: "Deployment", Desired: want, Ready: min(d.Status.UpdatedReplicas, d.Status.ReadyReplicas)}
			if d.Status.ObservedGeneration < max(d.Generation, o.GetGeneration()) || d.Status.UpdatedReplicas < want || d.Status.ReadyReplicas < want || d.Status.Replicas > want {
				why = fmt.Sprintf("Deployment %s: %d of %d pods ready with the current configuration", d.Name, cs.Ready, want)
			}
		case "StatefulSet":
			s := &appsv1.StatefulSet{}
			if err := r.Client.Get(ctx, key, s); err != nil {
				return nil, nil, nil, err
			}
			want := ptr.Deref(s.Spec.Replicas, 1)
			cs = v1alpha1.ComponentStatus{Name: s.Name, Kind: "StatefulSet", Desired: want, Ready: min(s.Status.UpdatedReplicas, s.Status.ReadyReplicas)}
			if s.Status.ObservedGeneration < max(s.Generation, o.GetGeneration()) || s.Status.UpdatedReplicas < want || s.Status.ReadyReplicas < want {
				why = fmt.Sprintf("StatefulSet %s: %d of %d pods ready with the current configuration", s.Name, cs.Ready, want)
			}
		case "DaemonSet":
			d := &appsv1.DaemonSet{}
			if err := r.Client.Get(ctx, key, d); err != nil {
				return nil, nil, nil, err
			}
			want := d.Status.DesiredNumberScheduled
			cs = v1alpha1.ComponentStatus{Name: d.Name, Kind: "DaemonSet", Desired: want, Ready: min(d.Status.UpdatedNumberScheduled, d.Status.NumberReady)}
			if d.Status.ObservedGeneration < max(d.Generation, o.GetGeneration()) || d.Status.UpdatedNumberScheduled < want || d.Status.NumberReady < want {
				why = fmt.Sprintf("DaemonSet %s: %d of %d pods ready with the current configuration", d.Name, cs.Ready, want)
			}
		default:
			continue
		}
		if sel, ok, _ := unstructured.NestedStringMap(o.Object, "spec", "selector", "matchLabels"); ok && r.APIReader != nil {
			spans, found, err := r.collectors.read(ctx, r.APIReader, key.Namespace, sel, o.GetKind()+" "+o.GetName())
			if err != nil {
				return nil, nil, nil, err
			}
			cs.Spans = spans
			problems = append(problems, found...)
		}
		out = append(out, cs)
		if why != "" {
			waiting = append(waiting, why)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, waiting, problems, nil
}

// apiVersions lists what the cluster serves in the optional groups, as Helm's capabilities.
func (r *WatchtowerReconciler) apiVersions() ([]string, error) {
	if r.Discovery == nil {
		return nil, nil
	}
	var out []string
	for _, gv := range []string{"monitoring.coreos.com/v1", "monitoring.coreos.com/v1alpha1"} {
		list, err := r.Discovery.ServerResourcesForGroupVersion(gv)
		if err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("discovering %s: %w", gv, err)
		}
		out = append(out, gv)
		for _, res := range list.APIResources {
			if !strings.Contains(res.Name, "/") {
				out = append(out, gv+"/"+res.Kind)
			}
		}
	}
	return out, nil
}

func topicsOf(wt *v1alpha1.Watchtower) []kafka.Topic {
	var out []kafka.Topic
	for _, t := range []v1alpha1.KafkaTopic{wt.Spec.Kafka.SpansTopic(), wt.Spec.Kafka.MetricsTopic()} {
		kt := kafka.Topic{Name: t.Name, Partitions: max(t.Partitions, 1)}
		if t.ReplicationFactor != nil {
			kt.ReplicationFactor = *t.ReplicationFactor
		}
		if t.Retention != nil {
			kt.Retention = t.Retention.Duration
		}
		out = append(out, kt)
	}
	return out
}

func dial(ctx context.Context, endpoint string) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", endpoint)
	if err != nil {
		return err
	}
	return conn.Close()
}

func objKey(o *unstructured.Unstructured) string {
	return o.GroupVersionKind().GroupKind().String() + "/" + o.GetNamespace() + "/" + o.GetName()
}

// statusBuilder collects the conditions of one reconcile.
type statusBuilder struct {
	wt    *v1alpha1.Watchtower
	conds []metav1.Condition
}

func (s *statusBuilder) set(typ string, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	if len(msg) > 1024 {
		msg = msg[:1021] + "..."
	}
	s.conds = slices.DeleteFunc(s.conds, func(c metav1.Condition) bool { return c.Type == typ })
	s.conds = append(s.conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: s.wt.Generation})
}

func (s *statusBuilder) has(typ string) bool {
	return slices.ContainsFunc(s.conds, func(c metav1.Condition) bool { return c.Type == typ })
}

func (s *statusBuilder) message(typ string) string {
	for _, c := range s.conds {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
}

// writeStatus writes the status; conditions keep their last transition time unless they change.
func (r *WatchtowerReconciler) writeStatus(ctx context.Context, wt *v1alpha1.Watchtower, st statusBuilder) error {
	for _, c := range st.conds {
		meta.SetStatusCondition(&wt.Status.Conditions, c)
	}
	wt.Status.ObservedGeneration = wt.Generation
	if err := r.Client.Status().Update(ctx, wt); err != nil {
		return err
	}
	r.states.set(client.ObjectKeyFromObject(wt), wt.Status.Conditions)
	return nil
}

// SetupWithManager registers the controller: a Watchtower is reconciled when it or one of its
// collector workloads changes.
func (r *WatchtowerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.states = newPipelineStates()
	r.collectors = newCollectorReader()
	if err := metrics.Registry.Register(r.states); err != nil {
		return err
	}
	return otelctrl.NewControllerManagedBy(mgr, r.Instrumentation...).
		For(&v1alpha1.Watchtower{}).
		Owns(&appsv1.Deployment{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&appsv1.DaemonSet{}).
		// The Secrets a Watchtower refers to (Kafka credentials, receivers' URLs): a fixed
		// password is acted on at once. Metadata only: no Secret's data is cached.
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.watchtowersUsing)).
		Named("watchtower").
		Complete(r)
}

// watchtowersUsing maps a Secret to the Watchtowers of its namespace that refer to it.
func (r *WatchtowerReconciler) watchtowersUsing(ctx context.Context, secret client.Object) []reconcile.Request {
	var list v1alpha1.WatchtowerList
	if err := r.Client.List(ctx, &list, client.InNamespace(secret.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, wt := range list.Items {
		if slices.Contains(secretsOf(&wt), secret.GetName()) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&wt)})
		}
	}
	return out
}

// secretsOf lists the Secrets wt refers to.
func secretsOf(wt *v1alpha1.Watchtower) []string {
	var out []string
	if a := wt.Spec.Kafka.SASL; a != nil {
		out = append(out, a.SecretName)
	}
	if t := wt.Spec.Kafka.TLS; t != nil {
		out = append(out, t.SecretName)
	}
	for _, rcv := range wt.Spec.Alerting.Receivers {
		out = append(out, rcv.URLSecret.Name)
	}
	return out
}
