package generator

import (
	"strings"
	"testing"
)

const base = `prefix: watchtower
attributes:
  - {id: watchtower.controller.name, type: string, brief: b}
  - {id: watchtower.object.name, type: string, cardinality: unbounded, brief: b}
  - id: watchtower.reconcile.result
    type: enum
    brief: b
    values: [{id: success, brief: b}]
`

func TestParseRejectsBadRegistries(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"unbounded metric attribute": {base + `metrics:
  - {id: watchtower.reconciles, instrument: counter, unit: "{r}", brief: b, attributes: [watchtower.object.name]}
`, `metrics[0] (watchtower.reconciles): attribute "watchtower.object.name" is unbounded`},
		"unknown metric attribute": {base + `metrics:
  - {id: watchtower.reconciles, instrument: counter, unit: "{r}", brief: b, attributes: [watchtower.nope]}
`, `metrics[0] (watchtower.reconciles): unknown attribute "watchtower.nope"`},
		"squatting k8s namespace": {`prefix: watchtower
attributes:
  - {id: k8s.object.name, type: string, brief: b}
`, `attributes[0] (k8s.object.name): id must start with the project prefix "watchtower."`},
		"bad instrument": {base + `metrics:
  - {id: watchtower.reconciles, instrument: meter, unit: "{r}", brief: b}
`, `metrics[0] (watchtower.reconciles): instrument must be counter, updowncounter, histogram or gauge; got "meter"`},
		"unknown field": {base + "extra: 1\n", `unknown field "extra"`},
		"enum without values": {`prefix: watchtower
attributes:
  - {id: watchtower.reconcile.result, type: enum, brief: b}
`, `attributes[0] (watchtower.reconcile.result): an enum needs values`},
		"span placeholder not an attribute": {base + `spans:
  - {id: reconcile, name: "reconcile {watchtower.controller.name}", kind: internal, brief: b, attributes: []}
`, `spans[0] (reconcile): name placeholder {watchtower.controller.name} is not one of the span's attributes`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestGoNames(t *testing.T) {
	r := &Registry{Prefix: "watchtower"}
	for id, want := range map[string]string{
		"watchtower.reconcile.requeue_after": "ReconcileRequeueAfter",
		"watchtower.reconcile.id":            "ReconcileID",
		"watchtower.api.verb":                "APIVerb",
	} {
		if got := r.goName(id); got != want {
			t.Errorf("goName(%q) = %q, want %q", id, got, want)
		}
	}
	if got := lowerFirst("APIVerb"); got != "apiVerb" {
		t.Errorf("lowerFirst(APIVerb) = %q", got)
	}
	if got := lowerFirst("ControllerName"); got != "controllerName" {
		t.Errorf("lowerFirst(ControllerName) = %q", got)
	}
}
