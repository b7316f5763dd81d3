package otelctrl

import (
	"sync"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// activeKey names an object by its API group, kind, namespace and name: a ConfigMap and a
// Workload of the same name are different objects.
type activeKey struct {
	gk schema.GroupKind
	types.NamespacedName
}

// activeSet maps an object to the reconcile in progress for it, so that an event recorder —
// whose methods take no context — can attach a Kubernetes Event to the span of the reconcile
// that emitted it. There is one set per manager (NewManager): reconciles of another manager in
// the same process never receive its Events. controller-runtime never reconciles one object
// concurrently within a controller; across controllers of the same kind the most recent
// reconcile of the object wins. The set holds only reconciles in flight, so its size is bounded
// by the total number of workers.
type activeSet struct {
	mu sync.Mutex
	// m holds the newest reconcile per object; older concurrent ones (other controllers) hang
	// off its prevActive chain. A map of pointers keeps add and remove allocation-free.
	m map[activeKey]*reconcileState
}

func newActiveSet() *activeSet { return &activeSet{m: map[activeKey]*reconcileState{}} }

func (a *activeSet) add(st *reconcileState) {
	a.mu.Lock()
	st.prevActive = a.m[st.object]
	a.m[st.object] = st
	a.mu.Unlock()
}

func (a *activeSet) remove(st *reconcileState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	head := a.m[st.object]
	if head == st {
		if st.prevActive == nil {
			delete(a.m, st.object)
		} else {
			a.m[st.object] = st.prevActive
		}
		return
	}
	for s := head; s != nil; s = s.prevActive {
		if s.prevActive == st {
			s.prevActive = st.prevActive
			return
		}
	}
}

// lookup returns the newest reconcile in progress for the object, or nil.
func (a *activeSet) lookup(k activeKey) *reconcileState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m[k]
}
