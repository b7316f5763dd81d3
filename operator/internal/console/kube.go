package console

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// operatorInstalled says whether the API server serves the Watchtower resource, i.e. the
// operator's CRD is installed. Asked at most every 5 s: the CRD may be installed while the
// console runs.
func (c *Console) operatorInstalled(ctx context.Context) (bool, error) {
	if c.kube == nil || c.discovery == nil {
		return false, nil
	}
	return c.crd.get(5*time.Second, func() (bool, error) {
		gv := v1alpha1.GroupVersion.String()
		res, err := c.discovery.ServerResourcesForGroupVersion(gv)
		switch {
		case apierrors.IsNotFound(err):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("asking Kubernetes whether %s is served: %w", gv, err)
		}
		return slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == "watchtowers" }), nil
	})
}

func (c *Console) listWatchtowers(ctx context.Context) ([]v1alpha1.Watchtower, error) {
	var l v1alpha1.WatchtowerList
	if err := c.kube.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("listing the Watchtowers in Kubernetes: %w", err)
	}
	slices.SortFunc(l.Items, func(a, b v1alpha1.Watchtower) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return l.Items, nil
}
