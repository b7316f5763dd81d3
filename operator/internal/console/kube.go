package console

import (
	"context"
	"fmt"
	"slices"
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
	c.mu.Lock()
	if time.Since(c.crdAt) < 5*time.Second {
		v := c.crdVal
		c.mu.Unlock()
		return v, nil
	}
	c.mu.Unlock()
	gv := v1alpha1.GroupVersion.String()
	res, err := c.discovery.ServerResourcesForGroupVersion(gv)
	installed := false
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return false, fmt.Errorf("asking Kubernetes whether %s is served: %w", gv, err)
	default:
		installed = slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == "watchtowers" })
	}
	c.mu.Lock()
	c.crdAt, c.crdVal = time.Now(), installed
	c.mu.Unlock()
	return installed, nil
}

func (c *Console) listWatchtowers(ctx context.Context) ([]v1alpha1.Watchtower, error) {
	var l v1alpha1.WatchtowerList
	if err := c.kube.List(ctx, &l); err != nil {
		return nil, fmt.Errorf("listing the Watchtowers in Kubernetes: %w", err)
	}
	slices.SortFunc(l.Items, func(a, b v1alpha1.Watchtower) int {
		if a.Namespace != b.Namespace {
			return compareStrings(a.Namespace, b.Namespace)
		}
		return compareStrings(a.Name, b.Name)
	})
	return l.Items, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
