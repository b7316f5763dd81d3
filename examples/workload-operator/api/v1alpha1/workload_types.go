package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WorkloadType selects what a Workload runs.
// +kubebuilder:validation:Enum=stress-cpu;memory-load;nginx
type WorkloadType string

const (
	// StressCPU runs a CPU burner.
	StressCPU WorkloadType = "stress-cpu"
	// MemoryLoad runs a memory hog.
	MemoryLoad WorkloadType = "memory-load"
	// Nginx runs nginx behind a Service.
	Nginx WorkloadType = "nginx"
)

// FailureMode makes reconciles fail on purpose, to demonstrate failing reconciles.
// +kubebuilder:validation:Enum=transient;terminal
type FailureMode string

const (
	// FailTransient returns an error: controller-runtime retries with backoff.
	FailTransient FailureMode = "transient"
	// FailTerminal returns a terminal error: not retried until the spec changes.
	FailTerminal FailureMode = "terminal"
)

// WorkloadSpec is the desired state of a Workload.
type WorkloadSpec struct {
	// Type is what the Workload runs: stress-cpu, memory-load or nginx.
	// +required
	Type WorkloadType `json:"type"`

	// Replicas of the Deployment.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=50
	// +kubebuilder:default=1
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Resources of the workload's container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// ReconcileDelay makes every reconcile of this Workload wait this long before it acts — a
	// slow reconcile, on purpose, for the demo (e.g. "750ms"). At most 10s.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s))+$`
	// +optional
	ReconcileDelay string `json:"reconcileDelay,omitempty"`

	// FailWith makes every reconcile of this Workload fail, on purpose, for the demo: transient
	// (retried with backoff) or terminal (not retried).
	// +optional
	FailWith FailureMode `json:"failWith,omitempty"`
}

// WorkloadStatus is the observed state of a Workload.
type WorkloadStatus struct {
	// ObservedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ReadyReplicas of the Deployment.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// Conditions: Reconciled tells whether the last reconcile succeeded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Workload runs a demo workload (a CPU burner, a memory hog or nginx) as a Deployment.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Reconciled",type=string,JSONPath=`.status.conditions[?(@.type=="Reconciled")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Workload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WorkloadSpec   `json:"spec"`
	Status WorkloadStatus `json:"status,omitempty"`
}

// WorkloadList is a list of Workloads.
// +kubebuilder:object:root=true
type WorkloadList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Workload `json:"items"`
}
