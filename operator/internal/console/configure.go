package console

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/deploy"
	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
	"github.com/gowatchtower/watchtower/operator/internal/controller"
)

// knobs are the pipeline settings the Configure page edits, as typed in the form.
type knobs struct {
	SlowThreshold, BaselinePercent, DecisionWait string
	SpansTopic, SpansPartitions                  string
	MetricsTopic, MetricsPartitions              string
	Receivers                                    []receiverForm
}

type receiverForm struct {
	Name, Type, SecretName, SecretKey, Channel string
	Severities                                 []string
}

var receiverTypes = []string{"Slack", "MSTeams", "Webhook"}
var severities = []string{"critical", "warning", "info"}

type configureView struct {
	OperatorMode bool
	Watchtowers  []v1alpha1.Watchtower
	Selected     string // namespace/name of the Watchtower edited
	Generation   int64
	Observed     int64
	Version      string // resourceVersion the form was read at
	Form         knobs
	Rows         []receiverRow // the form's receivers plus an empty one to add
	FieldErrors  map[string]string
	Saved        bool
	HelmValues   string
	Alertmanager string
	TopicsCmd    string
	Types        []string
	Severities   []string
}

type receiverRow struct {
	Index int
	receiverForm
}

func (v *configureView) rows() {
	v.Rows = nil
	for i, r := range v.Form.Receivers {
		v.Rows = append(v.Rows, receiverRow{i, r})
	}
	v.Rows = append(v.Rows, receiverRow{Index: len(v.Form.Receivers), receiverForm: receiverForm{Type: "Slack", SecretKey: "url"}})
}

func (c *Console) configurePage(w http.ResponseWriter, r *http.Request) error {
	view := &configureView{FieldErrors: map[string]string{}, Types: receiverTypes, Severities: severities}
	d := pageData{Title: "Configure", Page: view}
	wt, err := c.selectWatchtower(r.Context(), r.URL.Query().Get("watchtower"), view)
	d.fail(err)
	switch {
	case wt != nil:
		view.Form = knobsOf(wt)
		view.Saved = r.URL.Query().Get("saved") != ""
	case !view.OperatorMode:
		view.Form, err = chartKnobs()
		d.fail(err)
	}
	view.rows()
	c.render(w, r, http.StatusOK, "configure", d)
	return nil
}

// selectWatchtower fills the view's operator fields and returns the Watchtower named by sel
// ("namespace/name"), or the first one; nil in Helm mode or when there is none.
func (c *Console) selectWatchtower(ctx context.Context, sel string, view *configureView) (*v1alpha1.Watchtower, error) {
	ok, err := c.operatorInstalled(ctx)
	if err != nil || !ok {
		return nil, err
	}
	view.OperatorMode = true
	wts, err := c.listWatchtowers(ctx)
	if err != nil {
		return nil, err
	}
	view.Watchtowers = wts
	if len(wts) == 0 {
		return nil, errors.New("the Watchtower operator is installed but there is no Watchtower resource: create one (operator/config/samples/watchtower.yaml) and come back")
	}
	i := 0
	if sel != "" {
		i = slices.IndexFunc(wts, func(w v1alpha1.Watchtower) bool { return w.Namespace+"/"+w.Name == sel })
		if i < 0 {
			return nil, fmt.Errorf("there is no Watchtower %s", sel)
		}
	}
	wt := &wts[i]
	view.Selected = wt.Namespace + "/" + wt.Name
	view.Generation, view.Observed, view.Version = wt.Generation, wt.Status.ObservedGeneration, wt.ResourceVersion
	return wt, nil
}

func (c *Console) configureSubmit(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("reading the form: %w", err)
	}
	view := &configureView{FieldErrors: map[string]string{}, Types: receiverTypes, Severities: severities}
	d := pageData{Title: "Configure", Page: view}
	view.Form = knobsFromForm(r.PostForm)
	wt, err := c.selectWatchtower(r.Context(), r.PostForm.Get("watchtower"), view)
	if err != nil {
		d.fail(err)
		view.rows()
		c.render(w, r, http.StatusBadGateway, "configure", d)
		return nil
	}
	if !view.OperatorMode {
		// Helm mode: the same rules the Watchtower API applies, checked here, then the values.
		view.FieldErrors = validateKnobs(view.Form)
		if len(view.FieldErrors) == 0 {
			view.HelmValues, view.Alertmanager, view.TopicsCmd, err = helmOutput(view.Form)
			d.fail(err)
		}
		view.rows()
		code := http.StatusOK
		if len(view.FieldErrors) > 0 {
			code = http.StatusUnprocessableEntity
		}
		c.render(w, r, code, "configure", d)
		return nil
	}
	// Operator mode: the API server validates (its OpenAPI and CEL rules name the field); the
	// console only parses what must be typed.
	view.FieldErrors = parseKnobs(view.Form)
	if len(view.FieldErrors) == 0 {
		if rv := r.PostForm.Get("resourceVersion"); rv != "" && rv != wt.ResourceVersion {
			d.fail(fmt.Errorf("someone saved Watchtower %s since this form was opened: your input is kept below; compare with the current settings (reload) and save again", view.Selected))
			view.Version = rv
		} else {
			applyKnobs(wt, view.Form)
			err := c.kube.Update(r.Context(), wt)
			switch {
			case err == nil:
				http.Redirect(w, r, "/configure?"+url.Values{"watchtower": {view.Selected}, "saved": {strconv.FormatInt(wt.Generation, 10)}}.Encode(), http.StatusSeeOther)
				return nil
			case apierrors.IsInvalid(err):
				view.FieldErrors = apiFieldErrors(err)
				d.Errors = append(d.Errors, fmt.Sprintf("The API server refused the change to Watchtower %s: nothing was saved.", view.Selected))
			case apierrors.IsConflict(err):
				d.fail(fmt.Errorf("someone saved Watchtower %s at the same time: your input is kept below; save again", view.Selected))
			default:
				d.fail(fmt.Errorf("saving Watchtower %s: %w", view.Selected, err))
			}
		}
	}
	view.rows()
	c.render(w, r, http.StatusUnprocessableEntity, "configure", d)
	return nil
}

func knobsOf(wt *v1alpha1.Watchtower) knobs {
	s := wt.Spec
	k := knobs{BaselinePercent: cmp.Or(s.Sampling.BaselinePercent, "1"), SlowThreshold: "1s", DecisionWait: "10s"}
	if s.Sampling.SlowThreshold != nil {
		k.SlowThreshold = s.Sampling.SlowThreshold.Duration.String()
	}
	if s.Sampling.DecisionWait != nil {
		k.DecisionWait = s.Sampling.DecisionWait.Duration.String()
	}
	spans, metrics := s.Kafka.SpansTopic(), s.Kafka.MetricsTopic()
	k.SpansTopic, k.SpansPartitions = spans.Name, strconv.Itoa(int(max(spans.Partitions, 1)))
	k.MetricsTopic, k.MetricsPartitions = metrics.Name, strconv.Itoa(int(max(metrics.Partitions, 1)))
	for _, r := range s.Alerting.Receivers {
		k.Receivers = append(k.Receivers, receiverForm{Name: r.Name, Type: r.Type, SecretName: r.URLSecret.Name, SecretKey: r.URLSecret.Key, Channel: r.Channel, Severities: r.Severities})
	}
	return k
}

// chartKnobs are the chart's defaults (deploy/helm/otelcol-watchtower/values.yaml), where the
// Helm-mode form starts.
func chartKnobs() (knobs, error) {
	b, err := fs.ReadFile(deploy.Chart(), "values.yaml")
	if err != nil {
		return knobs{}, err
	}
	var v struct {
		Kafka struct {
			SpansTopic, MetricsTopic string
			SpansTopicPartitions     int
		}
		Sampling struct {
			SlowThresholdMs int64
			BaselinePercent float64
			DecisionWait    string
		}
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		return knobs{}, fmt.Errorf("%s/values.yaml: %w", deploy.ChartDir, err)
	}
	return knobs{
		SlowThreshold:   (time.Duration(v.Sampling.SlowThresholdMs) * time.Millisecond).String(),
		BaselinePercent: strconv.FormatFloat(v.Sampling.BaselinePercent, 'f', -1, 64),
		DecisionWait:    v.Sampling.DecisionWait,
		SpansTopic:      v.Kafka.SpansTopic, SpansPartitions: strconv.Itoa(max(v.Kafka.SpansTopicPartitions, 3)),
		MetricsTopic: v.Kafka.MetricsTopic, MetricsPartitions: "1",
	}, nil
}

func knobsFromForm(f url.Values) knobs {
	get := func(k string) string { return strings.TrimSpace(f.Get(k)) }
	k := knobs{
		SlowThreshold: get("slowThreshold"), BaselinePercent: get("baselinePercent"), DecisionWait: get("decisionWait"),
		SpansTopic: get("spansTopic"), SpansPartitions: get("spansPartitions"),
		MetricsTopic: get("metricsTopic"), MetricsPartitions: get("metricsPartitions"),
	}
	n, _ := strconv.Atoi(f.Get("receivers"))
	for i := range min(n+1, 17) { // the rows shown plus the empty one; the API allows 16
		p := fmt.Sprintf("r%d.", i)
		r := receiverForm{Name: get(p + "name"), Type: get(p + "type"), SecretName: get(p + "secretName"), SecretKey: get(p + "secretKey"), Channel: get(p + "channel"), Severities: f[p+"severity"]}
		if r.Name == "" || f.Get(p+"remove") != "" {
			continue // the empty row left empty, or a row marked for removal
		}
		k.Receivers = append(k.Receivers, r)
	}
	return k
}

// parseKnobs checks what must parse before it can be put in a Watchtower; the API server checks
// the rest.
func parseKnobs(k knobs) map[string]string {
	errs := map[string]string{}
	for _, f := range []struct{ key, val string }{{"slowThreshold", k.SlowThreshold}, {"decisionWait", k.DecisionWait}} {
		if _, err := time.ParseDuration(f.val); err != nil {
			errs[f.key] = fmt.Sprintf("%q is not a duration: write it like 500ms, 2s or 1m30s", f.val)
		}
	}
	for _, f := range []struct{ key, val string }{{"spansPartitions", k.SpansPartitions}, {"metricsPartitions", k.MetricsPartitions}} {
		if _, err := strconv.ParseInt(f.val, 10, 32); err != nil {
			errs[f.key] = fmt.Sprintf("%q is not a whole number", f.val)
		}
	}
	return errs
}

var (
	topicName    = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)
	percent      = regexp.MustCompile(`^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)$`)
	receiverName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// validateKnobs applies the rules of the Watchtower API (operator/api/v1alpha1) in Go, for Helm
// mode, where no API server checks them. TestConsoleValidationMatchesTheAPI keeps the two equal.
func validateKnobs(k knobs) map[string]string {
	errs := parseKnobs(k)
	between := func(key, val string, lo, hi time.Duration, msg string) {
		if d, err := time.ParseDuration(val); err == nil && (d < lo || d > hi) {
			errs[key] = msg
		}
	}
	between("slowThreshold", k.SlowThreshold, time.Millisecond, time.Hour, "the slow threshold must be between 1ms and 1h")
	between("decisionWait", k.DecisionWait, time.Second, 5*time.Minute, "the decision wait must be between 1s and 5m")
	if !percent.MatchString(k.BaselinePercent) {
		errs["baselinePercent"] = fmt.Sprintf("%q is not a percentage from 0 to 100 (decimals allowed, e.g. 0.5)", k.BaselinePercent)
	}
	for _, t := range []struct{ key, val string }{{"spansTopic", k.SpansTopic}, {"metricsTopic", k.MetricsTopic}} {
		if !topicName.MatchString(t.val) {
			errs[t.key] = fmt.Sprintf("%q is not a Kafka topic name: 1 to 249 of letters, digits, '.', '_' and '-'", t.val)
		}
	}
	if k.SpansTopic == k.MetricsTopic && errs["metricsTopic"] == "" {
		errs["metricsTopic"] = "the spans and metrics topics must differ: spans and metrics are decoded differently"
	}
	for _, p := range []struct{ key, val string }{{"spansPartitions", k.SpansPartitions}, {"metricsPartitions", k.MetricsPartitions}} {
		if n, err := strconv.Atoi(p.val); err == nil && (n < 1 || n > 1000) {
			errs[p.key] = "partitions are from 1 to 1000"
		}
	}
	if len(k.Receivers) > 16 {
		errs["receivers"] = "at most 16 receivers"
	}
	names := map[string]bool{}
	for i, r := range k.Receivers {
		p := fmt.Sprintf("r%d.", i)
		switch {
		case !receiverName.MatchString(r.Name) || len(r.Name) > 63:
			errs[p+"name"] = fmt.Sprintf("%q: a receiver's name is lower-case letters, digits and '-', at most 63", r.Name)
		case names[r.Name]:
			errs[p+"name"] = fmt.Sprintf("receiver %q is named twice", r.Name)
		}
		names[r.Name] = true
		if !slices.Contains(receiverTypes, r.Type) {
			errs[p+"type"] = fmt.Sprintf("%q: the type is Slack, MSTeams or Webhook", r.Type)
		}
		if r.SecretName == "" {
			errs[p+"secretName"] = "the Secret that holds the receiver's URL is required"
		}
		if r.SecretKey == "" {
			errs[p+"secretKey"] = "the Secret's key of the URL is required"
		}
		if r.Channel != "" && r.Type != "Slack" {
			errs[p+"channel"] = "channel is only for type Slack"
		}
		for _, s := range r.Severities {
			if !slices.Contains(severities, s) {
				errs[p+"severity"] = fmt.Sprintf("%q is not a severity", s)
			}
		}
	}
	return errs
}

// applyKnobs writes the form into the Watchtower's spec, keeping what the form does not show
// (a topic's replication factor and retention, everything else).
func applyKnobs(wt *v1alpha1.Watchtower, k knobs) {
	s := &wt.Spec
	st, _ := time.ParseDuration(k.SlowThreshold)
	dw, _ := time.ParseDuration(k.DecisionWait)
	s.Sampling.SlowThreshold = &metav1.Duration{Duration: st}
	s.Sampling.DecisionWait = &metav1.Duration{Duration: dw}
	s.Sampling.BaselinePercent = k.BaselinePercent
	if s.Kafka.Topics == nil {
		s.Kafka.Topics = &v1alpha1.KafkaTopics{}
	}
	topic := func(t **v1alpha1.KafkaTopic, name, partitions string) {
		if *t == nil {
			*t = &v1alpha1.KafkaTopic{}
		}
		n, _ := strconv.ParseInt(partitions, 10, 32)
		(*t).Name, (*t).Partitions = name, int32(n)
	}
	topic(&s.Kafka.Topics.Spans, k.SpansTopic, k.SpansPartitions)
	topic(&s.Kafka.Topics.Metrics, k.MetricsTopic, k.MetricsPartitions)
	s.Alerting.Receivers = nil
	for _, r := range k.Receivers {
		s.Alerting.Receivers = append(s.Alerting.Receivers, v1alpha1.AlertReceiver{
			Name: r.Name, Type: r.Type, Channel: r.Channel, Severities: r.Severities,
			URLSecret: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: r.SecretName}, Key: r.SecretKey},
		})
	}
}

// formField maps the API's field paths to the form's inputs.
var formField = []struct{ path, key string }{
	{"spec.sampling.slowThreshold", "slowThreshold"},
	{"spec.sampling.decisionWait", "decisionWait"},
	{"spec.sampling.baselinePercent", "baselinePercent"},
	{"spec.kafka.topics.spans.name", "spansTopic"},
	{"spec.kafka.topics.spans.partitions", "spansPartitions"},
	{"spec.kafka.topics.metrics.name", "metricsTopic"},
	{"spec.kafka.topics.metrics.partitions", "metricsPartitions"},
	// The sampler may not have more replicas than the spans topic has partitions: the form
	// changed the partitions.
	{"spec.sampler.replicas", "spansPartitions"},
}

var receiverPath = regexp.MustCompile(`^spec\.alerting\.receivers\[(\d+)\]\.?(.*)$`)

// apiFieldErrors turns the API server's refusal into messages next to the form's inputs; a
// cause on a field the form does not show goes to the top of the form.
func apiFieldErrors(err error) map[string]string {
	out := map[string]string{}
	var se *apierrors.StatusError
	if !errors.As(err, &se) || se.ErrStatus.Details == nil {
		out[""] = err.Error()
		return out
	}
	add := func(key, msg string) {
		if out[key] != "" {
			msg = out[key] + "; " + msg
		}
		out[key] = msg
	}
	for _, cause := range se.ErrStatus.Details.Causes {
		msg := cause.Message
		key := ""
		for _, f := range formField {
			if cause.Field == f.path || strings.HasPrefix(cause.Field, f.path+".") {
				key = f.key
			}
		}
		if m := receiverPath.FindStringSubmatch(cause.Field); m != nil {
			sub := map[string]string{"name": "name", "type": "type", "channel": "channel", "urlSecret.name": "secretName", "urlSecret.key": "secretKey"}[m[2]]
			if strings.HasPrefix(m[2], "severities") {
				sub = "severity"
			}
			if sub != "" {
				key = "r" + m[1] + "." + sub
			}
		}
		if key == "" && cause.Field != "" && cause.Field != "<nil>" {
			msg = cause.Field + ": " + msg
		}
		add(key, msg)
	}
	return out
}

// helmOutput is what Helm mode shows for valid knobs: the chart values, the Alertmanager
// routing of the receivers, and the command that creates the topics.
func helmOutput(k knobs) (values, alertmanager, topics string, err error) {
	st, _ := time.ParseDuration(k.SlowThreshold)
	dw, _ := time.ParseDuration(k.DecisionWait)
	pct, _ := strconv.ParseFloat(k.BaselinePercent, 64)
	parts, _ := strconv.Atoi(k.SpansPartitions)
	mparts, _ := strconv.Atoi(k.MetricsPartitions)
	v := map[string]any{
		"sampling": map[string]any{"slowThresholdMs": st.Milliseconds(), "baselinePercent": pct, "decisionWait": dw.String()},
		"kafka":    map[string]any{"spansTopic": k.SpansTopic, "metricsTopic": k.MetricsTopic, "spansTopicPartitions": parts},
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return "", "", "", err
	}
	values = "# helm upgrade RELEASE " + deploy.ChartDir + " --reuse-values -f watchtower-values.yaml\n" + string(b)
	if len(k.Receivers) > 0 {
		wt := &v1alpha1.Watchtower{}
		applyKnobs(wt, k)
		urls := map[string]string{}
		for _, r := range wt.Spec.Alerting.Receivers {
			urls[r.Name] = fmt.Sprintf("<the URL in Secret %s, key %s>", r.URLSecret.Name, r.URLSecret.Key)
		}
		am, err := controller.AlertmanagerConfig(wt.Spec.Alerting, urls)
		if err != nil {
			return "", "", "", err
		}
		alertmanager = string(am)
	}
	var cmd bytes.Buffer
	fmt.Fprintf(&cmd, "kafka-topics.sh --bootstrap-server BROKER --create --if-not-exists --topic %s --partitions %d\n", k.SpansTopic, parts)
	fmt.Fprintf(&cmd, "kafka-topics.sh --bootstrap-server BROKER --create --if-not-exists --topic %s --partitions %d\n", k.MetricsTopic, mparts)
	return values, alertmanager, cmd.String(), nil
}
