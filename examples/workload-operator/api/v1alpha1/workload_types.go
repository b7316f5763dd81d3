package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WorkloadType selects what a Workload runs.
// +kubebuilder:validation:Enum=stress-cpu;memory-load;nginx
type WorkloadType string

const (
	// StressCPU runs a CPU burner (image stress-cpu) that burns spec.load CPUs.
	StressCPU WorkloadType = "stress-cpu"
	// MemoryLoad runs a memory hog (image memory-load) that holds spec.load bytes.
	MemoryLoad WorkloadType = "memory-load"
	// Nginx runs nginx (image nginx, listening on 8080) behind a Service on port 80.
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

// The validation rules compare quantities with CEL's quantity library, so that a bad load is
// refused by the API server with a message naming the field, not found later in a pod's log.
// (This comment is apart from the doc comment so that it stays out of the CRD's description.)
// +kubebuilder:validation:XValidation:rule="!has(self.load) || self.type != 'nginx'",message="load applies to the stress-cpu and memory-load types only",fieldPath=".load"
// +kubebuilder:validation:XValidation:rule="!has(self.load) || self.type != 'stress-cpu' || (quantity(string(self.load)).isGreaterThan(quantity('0')) && quantity(string(self.load)).compareTo(quantity('4')) <= 0)",message="load of a stress-cpu Workload is CPU: more than 0 and at most 4 (e.g. 100m, 1)",fieldPath=".load"
// +kubebuilder:validation:XValidation:rule="!has(self.load) || self.type != 'memory-load' || (quantity(string(self.load)).compareTo(quantity('1Mi')) >= 0 && quantity(string(self.load)).compareTo(quantity('1Gi')) <= 0)",message="load of a memory-load Workload is memory: at least 1Mi and at most 1Gi (e.g. 32Mi)",fieldPath=".load"

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

	// Load is how much the workload asks for: CPUs to burn for stress-cpu (e.g. "500m"; default
	// 100m), bytes to allocate and hold for memory-load (e.g. "64Mi"; default 32Mi). nginx takes
	// no load. The container's limits, not the load, bound what it really gets: a stress-cpu
	// Workload whose load exceeds its CPU limit is throttled, and a memory-load Workload whose load
	// exceeds its memory limit is OOMKilled.
	// +optional
	Load *resource.Quantity `json:"load,omitempty"`

	// Resources of the workload's container. For each of cpu and memory for which it sets neither a
	// request nor a limit, the operator sets a small default so that the demo Workloads cannot eat
	// the node:
	//
	//   - stress-cpu: limits cpu 200m, memory 32Mi; requests cpu 10m, memory 32Mi
	//   - memory-load: limits cpu 100m, memory load+32Mi (64Mi for the default load); requests cpu
	//     10m, memory as the limit
	//   - nginx: limits cpu 100m, memory 64Mi; requests cpu 10m, memory 32Mi
	//
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

	// HotLoop makes every reconcile of this Workload write a new status.lastReconcileTime, on
	// purpose, for the demo: the status write is an update event of the Workload, which
	// triggers the next reconcile — a hot loop, as a real operator gets by writing a timestamp.
	// Pair it with reconcileDelay to keep the loop from hammering the API server.
	// +optional
	HotLoop bool `json:"hotLoop,omitempty"`
}

// WorkloadStatus is the observed state of a Workload.
type WorkloadStatus struct {
	// ObservedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ReadyReplicas of the Deployment.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// LastReconcileTime is when the last reconcile ran, to the microsecond (a new value on
	// every write); written only for spec.hotLoop.
	// +optional
	LastReconcileTime *metav1.MicroTime `json:"lastReconcileTime,omitempty"`

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
