package controller

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// pipelinesDesc counts the Watchtowers by condition, status and reason: a few constant label
// values, never a Watchtower's name (`kubectl get watchtowers -A` names them). The alert
// WatchtowerPipelineUnhealthy (deploy/alerts) fires on it.
var pipelinesDesc = prometheus.NewDesc("watchtower_operator_pipelines",
	"Watchtowers by status condition: type, status and reason of the condition.",
	[]string{"condition", "status", "reason"}, nil)

// pipelineStates is the last status condition set of each Watchtower, exported as
// watchtower_operator_pipelines when scraped.
type pipelineStates struct {
	mu sync.Mutex
	m  map[types.NamespacedName][]metav1.Condition
}

func newPipelineStates() *pipelineStates {
	return &pipelineStates{m: map[types.NamespacedName][]metav1.Condition{}}
}

func (p *pipelineStates) set(key types.NamespacedName, conds []metav1.Condition) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[key] = append([]metav1.Condition(nil), conds...)
}

func (p *pipelineStates) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, key)
}

// Describe implements prometheus.Collector.
func (p *pipelineStates) Describe(ch chan<- *prometheus.Desc) { ch <- pipelinesDesc }

// Collect implements prometheus.Collector.
func (p *pipelineStates) Collect(ch chan<- prometheus.Metric) {
	type key struct{ cond, status, reason string }
	counts := map[key]float64{}
	p.mu.Lock()
	for _, conds := range p.m {
		for _, c := range conds {
			counts[key{c.Type, string(c.Status), c.Reason}]++
		}
	}
	p.mu.Unlock()
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(pipelinesDesc, prometheus.GaugeValue, n, k.cond, k.status, k.reason)
	}
}
