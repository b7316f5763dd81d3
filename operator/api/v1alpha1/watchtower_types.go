package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Watchtower is one GoWatchtower pipeline: the collectors that receive the operators' telemetry
// (a gateway, optionally a Kafka-sharded sampler tier and a per-node agent), the Kafka topics they
// write, where sampled traces go, and what Prometheus and Alertmanager get. The operator renders
// the otelcol-watchtower Helm chart from it, so a Watchtower and a `helm install` with the same
// settings run the same collectors.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wt,categories=gowatchtower
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Kafka",type=string,JSONPath=`.status.conditions[?(@.type=="KafkaReachable")].status`
// +kubebuilder:printcolumn:name="Backend",type=string,JSONPath=`.status.conditions[?(@.type=="BackendReachable")].status`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.otlpEndpoint.grpc`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Watchtower struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WatchtowerSpec   `json:"spec"`
	Status WatchtowerStatus `json:"status,omitempty"`
}

// WatchtowerSpec is what a platform team decides; everything else has the chart's defaults.
//
// +kubebuilder:validation:XValidation:rule="!has(self.gateway) || !has(self.gateway.replicas) || self.gateway.replicas <= 1 || (has(self.sampler) && has(self.sampler.enabled) && self.sampler.enabled)",message="spec.gateway.replicas above 1 needs spec.sampler.enabled: tail sampling needs every span of a trace in one process, and only the Kafka-sharded sampler tier gives that to several collectors",fieldPath=".gateway.replicas"
// +kubebuilder:validation:XValidation:rule="!has(self.sampler) || !has(self.sampler.enabled) || !self.sampler.enabled || !has(self.sampler.replicas) || self.sampler.replicas <= self.kafka.topics.spans.partitions",message="spec.sampler.replicas may not exceed spec.kafka.topics.spans.partitions: a consumer group gives each partition to one replica, so replicas beyond the partition count sit idle",fieldPath=".sampler.replicas"
type WatchtowerSpec struct {
	// Gateway is the tier every operator sends OTLP to.
	// +optional
	Gateway GatewaySpec `json:"gateway,omitempty"`
	// Sampler, when enabled, moves tail sampling from the gateway to a tier that reads the spans
	// topic as one consumer group, so the gateway can run several replicas.
	// +optional
	Sampler SamplerSpec `json:"sampler,omitempty"`
	// Agent, when enabled, runs a collector on every node (a DaemonSet) that adds the sending
	// pod's Kubernetes metadata and forwards to the gateway.
	// +optional
	Agent AgentSpec `json:"agent,omitempty"`
	// Kafka is where every span and metric point is written.
	Kafka KafkaSpec `json:"kafka"`
	// TracesBackend is the Jaeger or Tempo OTLP/gRPC endpoint that receives the sampled traces.
	TracesBackend TracesBackendSpec `json:"tracesBackend"`
	// Sampling decides which traces reach the traces backend.
	// +optional
	Sampling SamplingSpec `json:"sampling,omitempty"`
	// Prometheus says what to create for a prometheus-operator, when its CRDs exist.
	// +optional
	Prometheus PrometheusSpec `json:"prometheus,omitempty"`
	// Dashboards says whether to create the Grafana dashboards as ConfigMaps for Grafana's sidecar.
	// +optional
	Dashboards DashboardsSpec `json:"dashboards,omitempty"`
	// Alerting routes the Watchtower alerts to receivers.
	// +optional
	Alerting AlertingSpec `json:"alerting,omitempty"`
	// ServedNamespaces are the namespaces whose operators may send OTLP to the gateway (its
	// NetworkPolicy admits them, and each gets a ConfigMap "watchtower-otlp" with the endpoint
	// for envFrom). Empty: operators of any namespace may send, and no ConfigMap is written.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:items:MaxLength=63
	ServedNamespaces []string `json:"servedNamespaces,omitempty"`
}

// GatewaySpec sizes the gateway tier.
type GatewaySpec struct {
	// Replicas of the gateway; above 1 needs the sampler tier.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=50
	Replicas *int32 `json:"replicas,omitempty"`
	// Resources of the collector container; the memory limiter follows the memory limit.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
}

// SamplerSpec sizes the optional sampler tier.
type SamplerSpec struct {
	// Enabled runs the sampler tier.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// Replicas of the sampler, at most the spans topic's partitions.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=50
	Replicas *int32 `json:"replicas,omitempty"`
	// Resources of the collector container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
}

// AgentSpec turns the per-node agent on.
type AgentSpec struct {
	// Enabled runs the agent DaemonSet.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
}

// KafkaSpec is the Kafka cluster the pipeline writes to, and its topics.
//
// +kubebuilder:validation:XValidation:rule="self.topics.spans.name != self.topics.metrics.name",message="spec.kafka.topics.spans.name and spec.kafka.topics.metrics.name must differ: spans and metrics are decoded differently",fieldPath=".topics.metrics.name"
type KafkaSpec struct {
	// Brokers are the bootstrap brokers, host:port each.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=260
	// +kubebuilder:validation:XValidation:rule="self.all(b, b.matches('^[A-Za-z0-9.\\\\[\\\\]:_-]+:[0-9]{1,5}$'))",message="spec.kafka.brokers: each broker is host:port, e.g. kafka-0.kafka:9092"
	Brokers []string `json:"brokers"`
	// Topics the gateway writes; the operator creates the missing ones.
	// +optional
	// +kubebuilder:default={}
	Topics *KafkaTopics `json:"topics,omitempty"`
	// SASL authentication, with credentials from a Secret.
	// +optional
	SASL *KafkaSASL `json:"sasl,omitempty"`
	// TLS to the brokers, with the CA (and a client certificate) from a Secret.
	// +optional
	TLS *KafkaTLS `json:"tls,omitempty"`
}

// KafkaTopics names the two topics.
type KafkaTopics struct {
	// Spans is the topic of every span, keyed by trace ID.
	// +optional
	// +kubebuilder:default={name: otlp_spans, partitions: 3}
	Spans *KafkaTopic `json:"spans,omitempty"`
	// Metrics is the topic of every metric point.
	// +optional
	// +kubebuilder:default={name: otlp_metrics, partitions: 1}
	Metrics *KafkaTopic `json:"metrics,omitempty"`
}

// SpansTopic is the spans topic, with the defaults the API server applies.
func (k *KafkaSpec) SpansTopic() KafkaTopic {
	if k.Topics != nil && k.Topics.Spans != nil {
		return *k.Topics.Spans
	}
	return KafkaTopic{Name: "otlp_spans", Partitions: 3}
}

// MetricsTopic is the metrics topic, with the defaults the API server applies.
func (k *KafkaSpec) MetricsTopic() KafkaTopic {
	if k.Topics != nil && k.Topics.Metrics != nil {
		return *k.Topics.Metrics
	}
	return KafkaTopic{Name: "otlp_metrics", Partitions: 1}
}

// KafkaTopic is how a topic is created when it is missing. An existing topic is never changed:
// a difference is reported in the status.
type KafkaTopic struct {
	// Name of the topic.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._-]{1,249}$`
	Name string `json:"name"`
	// Partitions of the topic; the sampler tier runs at most this many useful replicas.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Partitions int32 `json:"partitions,omitempty"`
	// ReplicationFactor of the topic; unset: the broker's default.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=7
	ReplicationFactor *int32 `json:"replicationFactor,omitempty"`
	// Retention of the topic's records (retention.ms); unset: the broker's default.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="retention must be at least 1m"
	Retention *metav1.Duration `json:"retention,omitempty"`
}

// KafkaSASL is SASL authentication to the brokers.
type KafkaSASL struct {
	// Mechanism of SASL.
	// +optional
	// +kubebuilder:default=SCRAM-SHA-512
	// +kubebuilder:validation:Enum=PLAIN;SCRAM-SHA-256;SCRAM-SHA-512
	Mechanism string `json:"mechanism,omitempty"`
	// SecretName is the Secret, in the Watchtower's namespace, with the username and password.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
	// UsernameKey is the Secret's key of the username.
	// +optional
	// +kubebuilder:default=username
	UsernameKey string `json:"usernameKey,omitempty"`
	// PasswordKey is the Secret's key of the password.
	// +optional
	// +kubebuilder:default=password
	PasswordKey string `json:"passwordKey,omitempty"`
}

// The Secret keys and mechanism with the defaults the API server applies, for objects built in
// Go, which skip defaulting.

// MechanismOrDefault is the SASL mechanism, SCRAM-SHA-512 when unset.
func (a *KafkaSASL) MechanismOrDefault() string { return orDefault(a.Mechanism, "SCRAM-SHA-512") }

// UsernameKeyOrDefault is the Secret's key of the username, "username" when unset.
func (a *KafkaSASL) UsernameKeyOrDefault() string { return orDefault(a.UsernameKey, "username") }

// PasswordKeyOrDefault is the Secret's key of the password, "password" when unset.
func (a *KafkaSASL) PasswordKeyOrDefault() string { return orDefault(a.PasswordKey, "password") }

// CAKeyOrDefault is the Secret's key of the CA bundle, "ca.crt" when unset.
func (t *KafkaTLS) CAKeyOrDefault() string { return orDefault(t.CAKey, "ca.crt") }

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// KafkaTLS is TLS to the brokers.
//
// +kubebuilder:validation:XValidation:rule="has(self.certKey) == has(self.keyKey)",message="spec.kafka.tls.certKey and spec.kafka.tls.keyKey go together: set both for mutual TLS, or neither"
type KafkaTLS struct {
	// SecretName is the Secret, in the Watchtower's namespace, with the CA bundle (and the
	// client certificate and key for mutual TLS).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
	// CAKey is the Secret's key of the CA bundle.
	// +optional
	// +kubebuilder:default=ca.crt
	CAKey string `json:"caKey,omitempty"`
	// CertKey is the Secret's key of the client certificate (mutual TLS).
	// +optional
	CertKey string `json:"certKey,omitempty"`
	// KeyKey is the Secret's key of the client key (mutual TLS).
	// +optional
	KeyKey string `json:"keyKey,omitempty"`
	// ServerName overrides the name the brokers' certificates are checked against.
	// +optional
	ServerName string `json:"serverName,omitempty"`
}

// TracesBackendSpec is where sampled traces go: Jaeger's or Tempo's OTLP/gRPC receiver.
type TracesBackendSpec struct {
	// Endpoint is host:port of the backend's OTLP/gRPC receiver, e.g. jaeger-collector:4317.
	// +kubebuilder:validation:MaxLength=260
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9.\\\\[\\\\]:_-]+:[0-9]{1,5}$')",message="spec.tracesBackend.endpoint is host:port, e.g. jaeger-collector.tracing:4317 (no scheme)"
	Endpoint string `json:"endpoint"`
	// Insecure sends without TLS.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// SamplingSpec is the tail-sampling policy: every slow or failed reconcile's trace, and a
// baseline share of the others.
type SamplingSpec struct {
	// SlowThreshold: a trace with a reconcile at least this long is kept.
	// +optional
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="spec.sampling.slowThreshold must be between 1ms and 1h"
	SlowThreshold *metav1.Duration `json:"slowThreshold,omitempty"`
	// BaselinePercent of the other traces kept, 0 to 100 (decimals allowed, e.g. "0.5").
	// +optional
	// +kubebuilder:default="1"
	// +kubebuilder:validation:Pattern=`^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)$`
	BaselinePercent string `json:"baselinePercent,omitempty"`
	// DecisionWait is how long a trace's spans are collected before it is decided.
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('5m')",message="spec.sampling.decisionWait must be between 1s and 5m"
	DecisionWait *metav1.Duration `json:"decisionWait,omitempty"`
}

// PrometheusSpec says what the prometheus-operator gets. Nothing is created when its CRDs
// (monitoring.coreos.com/v1) are not installed; the status says so.
type PrometheusSpec struct {
	// ServiceMonitors for the collectors' metrics.
	// +optional
	// +kubebuilder:default=true
	ServiceMonitors *bool `json:"serviceMonitors,omitempty"`
	// PrometheusRules with the Watchtower alert rules.
	// +optional
	// +kubebuilder:default=true
	PrometheusRules *bool `json:"prometheusRules,omitempty"`
}

// DashboardsSpec says whether the Grafana dashboards are written as ConfigMaps that Grafana's
// sidecar imports (label grafana_dashboard: "1").
type DashboardsSpec struct {
	// ConfigMaps with the dashboards.
	// +optional
	// +kubebuilder:default=true
	ConfigMaps *bool `json:"configMaps,omitempty"`
}

// AlertingSpec routes the Watchtower alerts. With the prometheus-operator's AlertmanagerConfig
// CRD installed it becomes an AlertmanagerConfig; otherwise the operator writes a complete
// Alertmanager configuration into the Secret <name>-alertmanager (key alertmanager.yaml).
type AlertingSpec struct {
	// Receivers get every Watchtower alert of their severities.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Receivers []AlertReceiver `json:"receivers,omitempty"`
}

// AlertReceiver is one destination of alerts. WhatsApp has no Alertmanager receiver: use a
// webhook receiver pointing at a WhatsApp bridge (docs/operator.md).
//
// +kubebuilder:validation:XValidation:rule="!has(self.channel) || self.type == 'Slack'",message="channel is only for type Slack",fieldPath=".channel"
type AlertReceiver struct {
	// Name of the receiver.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Type of the receiver.
	// +kubebuilder:validation:Enum=Slack;MSTeams;Webhook
	Type string `json:"type"`
	// URLSecret is the Secret key, in the Watchtower's namespace, holding the receiver's URL
	// (a Slack or Teams incoming-webhook URL, or the webhook's URL): URLs with tokens are secrets.
	URLSecret corev1.SecretKeySelector `json:"urlSecret"`
	// Channel overrides the Slack webhook's channel.
	// +optional
	Channel string `json:"channel,omitempty"`
	// Severities routed to this receiver; empty: all.
	// +optional
	// +listType=set
	// +kubebuilder:validation:items:Enum=critical;warning;info
	Severities []string `json:"severities,omitempty"`
}

// WatchtowerStatus is what the operator observed.
type WatchtowerStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, KafkaReachable, BackendReachable, Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// OTLPEndpoint is where operators send their telemetry.
	// +optional
	OTLPEndpoint *OTLPEndpoint `json:"otlpEndpoint,omitempty"`
	// ConfigHash identifies the rendered collector configuration; it changes when the collectors
	// roll.
	// +optional
	ConfigHash string `json:"configHash,omitempty"`
	// Topics as found in Kafka.
	// +optional
	// +listType=map
	// +listMapKey=name
	Topics []TopicStatus `json:"topics,omitempty"`
	// Components are the collector workloads and their readiness.
	// +optional
	// +listType=map
	// +listMapKey=name
	Components []ComponentStatus `json:"components,omitempty"`
}

// OTLPEndpoint is the gateway's OTLP endpoints inside the cluster.
type OTLPEndpoint struct {
	// GRPC is host:port of OTLP/gRPC (OTEL_EXPORTER_OTLP_ENDPOINT with http://, or the gRPC target).
	GRPC string `json:"grpc"`
	// HTTP is the base URL of OTLP/HTTP.
	HTTP string `json:"http"`
}

// TopicStatus is one topic as Kafka reports it.
type TopicStatus struct {
	// Name of the topic.
	Name string `json:"name"`
	// Partitions in Kafka.
	Partitions int32 `json:"partitions"`
	// ReplicationFactor in Kafka.
	ReplicationFactor int32 `json:"replicationFactor"`
	// Created is true when this operator created the topic.
	// +optional
	Created bool `json:"created,omitempty"`
	// Differs says how the existing topic differs from the spec; the operator does not change
	// existing topics.
	// +optional
	Differs string `json:"differs,omitempty"`
}

// ComponentStatus is one collector workload.
type ComponentStatus struct {
	// Name of the workload.
	Name string `json:"name"`
	// Kind of the workload: Deployment, StatefulSet or DaemonSet.
	Kind string `json:"kind"`
	// Desired pods.
	Desired int32 `json:"desired"`
	// Ready pods running the current configuration.
	Ready int32 `json:"ready"`
	// Spans are the spans its running pods have counted since they started, from their own
	// metrics (the telemetry port).
	// +optional
	Spans *SpanCounts `json:"spans,omitempty"`
}

// SpanCounts are a collector workload's span counters, summed over its pods.
type SpanCounts struct {
	// Accepted by its receivers.
	Accepted int64 `json:"accepted"`
	// Refused by its receivers (memory limiter, full queue): the senders retry or drop them.
	Refused int64 `json:"refused"`
	// SendFailed by its exporters (Kafka, the traces backend) after their retries.
	SendFailed int64 `json:"sendFailed"`
}

// WatchtowerList is a list of Watchtowers.
//
// +kubebuilder:object:root=true
type WatchtowerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Watchtower `json:"items"`
}

// The condition types of a Watchtower's status.
const (
	// ConditionReady: every collector workload runs the current configuration with all its pods
	// ready, and Kafka is reachable.
	ConditionReady = "Ready"
	// ConditionKafkaReachable: the operator reached the brokers with the pipeline's credentials
	// and found (or created) the topics.
	ConditionKafkaReachable = "KafkaReachable"
	// ConditionBackendReachable: the traces backend accepts connections.
	ConditionBackendReachable = "BackendReachable"
	// ConditionDegraded: something the pipeline needs is failing; the reason says what.
	ConditionDegraded = "Degraded"
)
