// Package v1alpha1 is the API of the Watchtower operator: the Watchtower kind in the
// observability.gowatchtower.io/v1alpha1 group, one resource per GoWatchtower pipeline.
// +kubebuilder:object:generate=true
// +groupName=observability.gowatchtower.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the Watchtower kind.
	GroupVersion = schema.GroupVersion{Group: "observability.gowatchtower.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this group-version.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types in this group-version to the given scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Watchtower{}, &WatchtowerList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
