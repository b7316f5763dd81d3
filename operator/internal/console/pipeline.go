package console

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// signalStat is one signal's flow through the collectors, per second.
type signalStat struct {
	Signal                          string
	Accepted, Refused, Failed, Sent float64
	SendFailed, EnqueueFailed       float64
}

type queueStat struct {
	Exporter, DataType string
	Size, Capacity     float64
	Fill               float64
}

type kafkaStat struct {
	Topic, Outcome string
	Rate           float64
}

type collectorStat struct {
	Job, Instance string
	Uptime, RSS   float64
}

type pipelineView struct {
	Range                      string
	Ranges                     []string
	Collectors                 []collectorStat
	Signals                    []signalStat
	Queues                     []queueStat
	Kafka                      []kafkaStat
	KafkaWriteP99              float64
	Lag                        []sample
	Sampled, NotSampled        float64 // decisions per second
	OnMemory, DroppedTooEarly  float64
	AcceptedSeries, SentSeries []point
	Watchtowers                []v1alpha1.Watchtower
	OperatorMode               bool
}

// The collectors' own metrics (otelcol_*), one row of the Signals table per signal.
var signals = []struct{ name, receiverSuffix string }{
	{"spans", "spans"}, {"metric points", "metric_points"}, {"log records", "log_records"},
}

func (c *Console) pipelinePage(w http.ResponseWriter, r *http.Request) error {
	rangeName, span := parseRange(r.URL.Query().Get("range"))
	view := &pipelineView{Range: rangeName, KafkaWriteP99: math.NaN()}
	for _, rg := range ranges {
		view.Ranges = append(view.Ranges, rg.Name)
	}
	d := pageData{Title: "Pipeline", Page: view}
	var errs []error
	var wg sync.WaitGroup
	if c.haveProm() {
		wg.Go(func() { errs = append(errs, c.pipelineMetrics(r.Context(), view, time.Now(), span)...) })
	} else {
		errs = append(errs, errNoPrometheus)
	}
	var kubeErr error
	if c.kube != nil {
		wg.Go(func() {
			ok, err := c.operatorInstalled(r.Context())
			if err != nil || !ok {
				kubeErr = err
				return
			}
			view.OperatorMode = true
			view.Watchtowers, kubeErr = c.listWatchtowers(r.Context())
		})
	}
	wg.Wait()
	d.Errors = messages(append(errs, kubeErr)...)
	c.render(w, r, http.StatusOK, "pipeline", d)
	return nil
}

func (c *Console) pipelineMetrics(ctx context.Context, v *pipelineView, now time.Time, span time.Duration) []error {
	var mu sync.Mutex
	// One query for every signal's counters: each branch labelled with what it counts.
	var branches []string
	for _, s := range signals {
		for _, m := range []struct{ key, metric string }{
			{"accepted", "otelcol_receiver_accepted_"}, {"refused", "otelcol_receiver_refused_"},
			{"failed", "otelcol_receiver_failed_"}, {"sent", "otelcol_exporter_sent_"},
			{"send_failed", "otelcol_exporter_send_failed_"}, {"enqueue_failed", "otelcol_exporter_enqueue_failed_"},
		} {
			branches = append(branches, fmt.Sprintf(`label_replace(label_replace(sum(rate(%s%s[5m])), "what", "%s", "", ""), "signal", "%s", "", "")`,
				m.metric, s.receiverSuffix, m.key, s.name))
		}
	}
	stats := map[string]*signalStat{}
	for _, s := range signals {
		stats[s.name] = &signalStat{Signal: s.name}
	}
	queues := map[string]*queueStat{}
	queue := func(s sample) *queueStat {
		k := s.Labels["exporter"] + "/" + s.Labels["data_type"]
		if queues[k] == nil {
			queues[k] = &queueStat{Exporter: s.Labels["exporter"], DataType: s.Labels["data_type"], Capacity: math.NaN()}
		}
		return queues[k]
	}
	instant := func(expr string, f func([]sample)) func() error { return c.prom.queryInto(ctx, &mu, expr, f) }
	rangeQ := func(expr string, into *[]point) func() error {
		return c.prom.rangeInto(ctx, &mu, expr, now, span, func(res []series) {
			if len(res) > 0 {
				*into = res[0].Points
			}
		})
	}
	collectors := map[string]*collectorStat{}
	collector := func(s sample) *collectorStat {
		k := s.Labels["job"] + "/" + s.Labels["instance"]
		if collectors[k] == nil {
			collectors[k] = &collectorStat{Job: s.Labels["job"], Instance: s.Labels["instance"], RSS: math.NaN()}
		}
		return collectors[k]
	}
	errs := parallel(
		instant(strings.Join(branches, " or "), func(res []sample) {
			for _, s := range res {
				st := stats[s.Labels["signal"]]
				if st == nil {
					continue
				}
				switch s.Labels["what"] {
				case "accepted":
					st.Accepted = s.Value
				case "refused":
					st.Refused = s.Value
				case "failed":
					st.Failed = s.Value
				case "sent":
					st.Sent = s.Value
				case "send_failed":
					st.SendFailed = s.Value
				case "enqueue_failed":
					st.EnqueueFailed = s.Value
				}
			}
		}),
		instant("max by (exporter, data_type) (otelcol_exporter_queue_size)", func(res []sample) {
			for _, s := range res {
				queue(s).Size = s.Value
			}
		}),
		instant("max by (exporter, data_type) (otelcol_exporter_queue_capacity)", func(res []sample) {
			for _, s := range res {
				queue(s).Capacity = s.Value
			}
		}),
		instant("sum by (topic, outcome) (rate(otelcol_kafka_exporter_records[5m]))", func(res []sample) {
			for _, s := range res {
				v.Kafka = append(v.Kafka, kafkaStat{Topic: s.Labels["topic"], Outcome: s.Labels["outcome"], Rate: s.Value})
			}
		}),
		instant("histogram_quantile(0.99, sum by (le) (rate(otelcol_kafka_exporter_write_latency_bucket[5m])))", func(res []sample) {
			if len(res) > 0 {
				v.KafkaWriteP99 = res[0].Value
			}
		}),
		instant("sum by (topic) (otelcol_kafka_receiver_offset_lag)", func(res []sample) { v.Lag = res }),
		instant("sum by (decision) (rate(otelcol_processor_tail_sampling_global_count_traces_sampled[5m]))", func(res []sample) {
			for _, s := range res {
				if s.Labels["decision"] == "sampled" {
					v.Sampled = s.Value
				} else {
					v.NotSampled += s.Value
				}
			}
		}),
		instant("sum(otelcol_processor_tail_sampling_sampling_traces_on_memory)", func(res []sample) {
			if len(res) > 0 {
				v.OnMemory = res[0].Value
			}
		}),
		instant("sum(rate(otelcol_processor_tail_sampling_sampling_trace_dropped_too_early[5m]))", func(res []sample) {
			if len(res) > 0 {
				v.DroppedTooEarly = res[0].Value
			}
		}),
		instant("max by (job, instance) (otelcol_process_uptime)", func(res []sample) {
			for _, s := range res {
				collector(s).Uptime = s.Value
			}
		}),
		instant("max by (job, instance) (otelcol_process_memory_rss)", func(res []sample) {
			for _, s := range res {
				collector(s).RSS = s.Value
			}
		}),
		rangeQ("sum(rate(otelcol_receiver_accepted_spans[5m]))", &v.AcceptedSeries),
		rangeQ("sum(rate(otelcol_exporter_sent_spans[5m]))", &v.SentSeries),
	)
	for _, s := range signals {
		v.Signals = append(v.Signals, *stats[s.name])
	}
	for _, q := range queues {
		q.Fill = q.Size / q.Capacity
		v.Queues = append(v.Queues, *q)
	}
	slices.SortFunc(v.Queues, func(a, b queueStat) int {
		return cmp.Or(cmp.Compare(a.Exporter, b.Exporter), cmp.Compare(a.DataType, b.DataType))
	})
	slices.SortFunc(v.Kafka, func(a, b kafkaStat) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Outcome, b.Outcome))
	})
	for _, col := range collectors {
		v.Collectors = append(v.Collectors, *col)
	}
	slices.SortFunc(v.Collectors, func(a, b collectorStat) int {
		return cmp.Or(cmp.Compare(a.Job, b.Job), cmp.Compare(a.Instance, b.Instance))
	})
	return errs
}
