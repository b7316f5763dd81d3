package controller

import (
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/operator/api/v1alpha1"
)

// watchtowerAlerts matches the alerts of GoWatchtower's rules (deploy/alerts): every one is
// named Watchtower<Something>.
const watchtowerAlerts = `alertname=~"Watchtower.+"`

// nullReceiver takes what no receiver asked for: Alertmanager needs a root receiver.
const nullReceiver = "watchtower-null"

// AlertmanagerConfig renders a complete Alertmanager configuration that routes the Watchtower
// alerts to the spec's receivers; urls holds each receiver's URL, read from its Secret.
func AlertmanagerConfig(spec v1alpha1.AlertingSpec, urls map[string]string) ([]byte, error) {
	type route struct {
		Receiver string   `json:"receiver"`
		Matchers []string `json:"matchers,omitempty"`
		Continue bool     `json:"continue,omitempty"`
	}
	routes := make([]route, 0, len(spec.Receivers))
	receivers := []map[string]any{{"name": nullReceiver}}
	for _, r := range spec.Receivers {
		url, ok := urls[r.Name]
		if !ok || url == "" {
			return nil, fmt.Errorf("spec.alerting.receivers[%s]: no URL in Secret %q key %q", r.Name, r.URLSecret.Name, r.URLSecret.Key)
		}
		matchers := []string{watchtowerAlerts}
		if len(r.Severities) > 0 {
			sev := append([]string(nil), r.Severities...)
			sort.Strings(sev)
			matchers = append(matchers, fmt.Sprintf(`severity=~"%s"`, strings.Join(sev, "|")))
		}
		// continue: every receiver whose matchers fit gets the alert, not only the first.
		routes = append(routes, route{Receiver: r.Name, Matchers: matchers, Continue: true})
		rcv := map[string]any{"name": r.Name}
		switch r.Type {
		case "Slack":
			c := map[string]any{"api_url": url, "send_resolved": true,
				"title": `[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}`,
				"text":  `{{ range .Alerts }}{{ .Annotations.summary }}{{ "\n" }}{{ .Annotations.description }}{{ "\n" }}{{ end }}`}
			if r.Channel != "" {
				c["channel"] = r.Channel
			}
			rcv["slack_configs"] = []any{c}
		case "MSTeams":
			rcv["msteams_configs"] = []any{map[string]any{"webhook_url": url, "send_resolved": true}}
		default:
			rcv["webhook_configs"] = []any{map[string]any{"url": url, "send_resolved": true}}
		}
		receivers = append(receivers, rcv)
	}
	cfg := map[string]any{
		"route": map[string]any{
			"receiver":        nullReceiver,
			"group_by":        []string{"alertname", "namespace"},
			"group_wait":      "10s",
			"group_interval":  "1m",
			"repeat_interval": "4h",
			"routes":          routes,
		},
		"receivers": receivers,
	}
	return yaml.Marshal(cfg)
}

// alertmanagerConfigResource is the same routing as a prometheus-operator AlertmanagerConfig
// (monitoring.coreos.com/v1alpha1), which refers to the receivers' Secrets instead of copying
// their URLs. The prometheus-operator adds a namespace matcher of its own.
func alertmanagerConfigResource(wt *v1alpha1.Watchtower) map[string]any {
	routes := []any{}
	receivers := []any{map[string]any{"name": nullReceiver}}
	for _, r := range wt.Spec.Alerting.Receivers {
		matchers := []any{map[string]any{"name": "alertname", "value": "Watchtower.+", "matchType": "=~"}}
		if len(r.Severities) > 0 {
			sev := append([]string(nil), r.Severities...)
			sort.Strings(sev)
			matchers = append(matchers, map[string]any{"name": "severity", "value": strings.Join(sev, "|"), "matchType": "=~"})
		}
		routes = append(routes, map[string]any{"receiver": r.Name, "matchers": matchers, "continue": true})
		secret := map[string]any{"name": r.URLSecret.Name, "key": r.URLSecret.Key}
		rcv := map[string]any{"name": r.Name}
		switch r.Type {
		case "Slack":
			c := map[string]any{"apiURL": secret, "sendResolved": true}
			if r.Channel != "" {
				c["channel"] = r.Channel
			}
			rcv["slackConfigs"] = []any{c}
		case "MSTeams":
			rcv["msteamsConfigs"] = []any{map[string]any{"webhookUrl": secret, "sendResolved": true}}
		default:
			rcv["webhookConfigs"] = []any{map[string]any{"urlSecret": secret, "sendResolved": true}}
		}
		receivers = append(receivers, rcv)
	}
	return map[string]any{
		"route": map[string]any{
			"receiver": nullReceiver, "groupBy": []any{"alertname", "namespace"},
			"groupWait": "10s", "groupInterval": "1m", "repeatInterval": "4h", "routes": routes,
		},
		"receivers": receivers,
	}
}
