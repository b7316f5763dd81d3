// Package generator turns semconv/registry.yaml into Go constants and a reference page. It is
// used by the semconvgen command (make generate) and by the staleness test.
package generator

import (
	"bytes"
	"fmt"
	"go/format"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"sigs.k8s.io/yaml"
)

// Registry is the parsed registry file.
type Registry struct {
	Prefix     string      `json:"prefix"`
	Attributes []Attribute `json:"attributes"`
	Spans      []Span      `json:"spans"`
	Metrics    []Metric    `json:"metrics"`
}

// Attribute is one attribute key.
type Attribute struct {
	ID          string   `json:"id"`
	Type        string   `json:"type"` // string, int, double, boolean, enum
	Unit        string   `json:"unit,omitempty"`
	Cardinality string   `json:"cardinality,omitempty"` // "" (bounded) or "unbounded"
	Brief       string   `json:"brief"`
	Examples    []any    `json:"examples,omitempty"`
	Values      []Member `json:"values,omitempty"`
}

// Member is one value of an enum attribute.
type Member struct {
	ID    string `json:"id"`
	Brief string `json:"brief"`
}

// Span is a span (or span event) the library emits.
type Span struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Kind       string   `json:"kind"` // internal, client, event
	Brief      string   `json:"brief"`
	Attributes []string `json:"attributes"`
}

// Metric is one instrument.
type Metric struct {
	ID         string   `json:"id"`
	Instrument string   `json:"instrument"` // counter, updowncounter, histogram, gauge
	Unit       string   `json:"unit"`
	Brief      string   `json:"brief"`
	Attributes []string `json:"attributes"`
}

var (
	idPattern       = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)
	memberPattern   = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	placeholderExpr = regexp.MustCompile(`\{([a-z0-9_.]+)\}`)
)

// Parse reads and validates a registry. Errors name the entry and the field that is wrong.
func Parse(data []byte) (*Registry, error) {
	var r Registry
	if err := yaml.UnmarshalStrict(data, &r); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if r.Prefix == "" {
		return nil, fmt.Errorf("registry: prefix is required")
	}
	attrs := map[string]Attribute{}
	for i, a := range r.Attributes {
		where := fmt.Sprintf("attributes[%d] (%s)", i, a.ID)
		if !idPattern.MatchString(a.ID) {
			return nil, fmt.Errorf("registry: %s: id must be dotted lower_snake_case, got %q", where, a.ID)
		}
		if !strings.HasPrefix(a.ID, r.Prefix+".") {
			return nil, fmt.Errorf("registry: %s: id must start with the project prefix %q (OpenTelemetry's own namespaces, e.g. k8s.*, are not ours to define)", where, r.Prefix+".")
		}
		if _, dup := attrs[a.ID]; dup {
			return nil, fmt.Errorf("registry: %s: defined twice", where)
		}
		switch a.Type {
		case "string", "int", "double", "boolean":
			if len(a.Values) > 0 {
				return nil, fmt.Errorf("registry: %s: values are only for type enum, type is %s", where, a.Type)
			}
		case "enum":
			if len(a.Values) == 0 {
				return nil, fmt.Errorf("registry: %s: an enum needs values", where)
			}
			for j, m := range a.Values {
				if !memberPattern.MatchString(m.ID) {
					return nil, fmt.Errorf("registry: %s: values[%d]: id must be lower_snake_case, got %q", where, j, m.ID)
				}
			}
		default:
			return nil, fmt.Errorf("registry: %s: type must be one of string, int, double, boolean, enum; got %q", where, a.Type)
		}
		if a.Cardinality != "" && a.Cardinality != "unbounded" {
			return nil, fmt.Errorf("registry: %s: cardinality must be empty or \"unbounded\", got %q", where, a.Cardinality)
		}
		if a.Brief == "" {
			return nil, fmt.Errorf("registry: %s: brief is required", where)
		}
		attrs[a.ID] = a
	}
	for i, s := range r.Spans {
		where := fmt.Sprintf("spans[%d] (%s)", i, s.ID)
		if !memberPattern.MatchString(s.ID) || s.Name == "" || s.Brief == "" {
			return nil, fmt.Errorf("registry: %s: id (lower_snake_case), name and brief are required", where)
		}
		if !slices.Contains([]string{"internal", "client", "server", "event"}, s.Kind) {
			return nil, fmt.Errorf("registry: %s: kind must be internal, client, server or event; got %q", where, s.Kind)
		}
		for _, a := range s.Attributes {
			if _, ok := attrs[a]; !ok {
				return nil, fmt.Errorf("registry: %s: unknown attribute %q", where, a)
			}
		}
		for _, m := range placeholderExpr.FindAllStringSubmatch(s.Name, -1) {
			if !slices.Contains(s.Attributes, m[1]) {
				return nil, fmt.Errorf("registry: %s: name placeholder {%s} is not one of the span's attributes", where, m[1])
			}
		}
	}
	seen := map[string]bool{}
	for i, m := range r.Metrics {
		where := fmt.Sprintf("metrics[%d] (%s)", i, m.ID)
		if !idPattern.MatchString(m.ID) || !strings.HasPrefix(m.ID, r.Prefix+".") {
			return nil, fmt.Errorf("registry: %s: id must be dotted lower_snake_case starting with %q", where, r.Prefix+".")
		}
		if seen[m.ID] {
			return nil, fmt.Errorf("registry: %s: defined twice", where)
		}
		seen[m.ID] = true
		if !slices.Contains([]string{"counter", "updowncounter", "histogram", "gauge"}, m.Instrument) {
			return nil, fmt.Errorf("registry: %s: instrument must be counter, updowncounter, histogram or gauge; got %q", where, m.Instrument)
		}
		if m.Unit == "" || m.Brief == "" {
			return nil, fmt.Errorf("registry: %s: unit and brief are required", where)
		}
		for _, a := range m.Attributes {
			def, ok := attrs[a]
			if !ok {
				return nil, fmt.Errorf("registry: %s: unknown attribute %q", where, a)
			}
			if def.Cardinality == "unbounded" {
				return nil, fmt.Errorf("registry: %s: attribute %q is unbounded (object names, IDs, free text) and must not be a metric attribute", where, a)
			}
		}
	}
	return &r, nil
}

// goName turns "watchtower.reconcile.requeue_after" into "ReconcileRequeueAfter".
func (r *Registry) goName(id string) string {
	id = strings.TrimPrefix(id, r.Prefix+".")
	var b strings.Builder
	for _, part := range strings.FieldsFunc(id, func(c rune) bool { return c == '.' || c == '_' }) {
		switch part {
		case "id", "api", "uid":
			b.WriteString(strings.ToUpper(part))
			continue
		}
		rs := []rune(part)
		rs[0] = unicode.ToUpper(rs[0])
		b.WriteString(string(rs))
	}
	return b.String()
}

// PrometheusName is the name under which a metric appears in Prometheus, following the
// OpenTelemetry-to-Prometheus translation the Prometheus exporter and the collector apply:
// dots become underscores, a unit suffix is added (s → _seconds; annotations in braces are
// dropped), and counters end in _total.
func PrometheusName(m Metric) string {
	name := strings.ReplaceAll(m.ID, ".", "_")
	switch m.Unit {
	case "s":
		name += "_seconds"
	case "By":
		name += "_bytes"
	case "1":
		name += "_ratio"
	}
	if m.Instrument == "counter" {
		name += "_total"
	}
	return name
}

func attrGoType(a Attribute) string {
	switch a.Type {
	case "int":
		return "int"
	case "double":
		return "float64"
	case "boolean":
		return "bool"
	default:
		return "string"
	}
}

func attrCtor(a Attribute) string {
	switch a.Type {
	case "int":
		return "Int"
	case "double":
		return "Float64"
	case "boolean":
		return "Bool"
	default:
		return "String"
	}
}

// GenerateGo renders the Go source of package semconv.
func (r *Registry) GenerateGo() ([]byte, error) {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("// Code generated by semconvgen from semconv/registry.yaml. DO NOT EDIT.\n// Regenerate with `make generate`.\n\n")
	p("package semconv\n\nimport \"go.opentelemetry.io/otel/attribute\"\n\n")
	p("// Attribute keys.\nconst (\n")
	for _, a := range r.Attributes {
		p("\t// %sKey is %s: %s", r.goName(a.ID), a.ID, oneLine(a.Brief))
		if a.Unit != "" {
			p(" Unit: %s.", a.Unit)
		}
		if a.Cardinality == "unbounded" {
			p(" Spans only: unbounded cardinality, never a metric attribute.")
		}
		p("\n\t%sKey = attribute.Key(%q)\n", r.goName(a.ID), a.ID)
	}
	p(")\n\n")
	for _, a := range r.Attributes {
		if a.Type == "enum" {
			continue
		}
		name := r.goName(a.ID)
		p("// %s returns the %s attribute.\nfunc %s(v %s) attribute.KeyValue { return %sKey.%s(v) }\n\n", name, a.ID, name, attrGoType(a), name, attrCtor(a))
	}
	for _, a := range r.Attributes {
		if a.Type != "enum" {
			continue
		}
		name := r.goName(a.ID)
		p("// Values of %s.\nconst (\n", a.ID)
		for _, m := range a.Values {
			p("\t// %s%sValue is %q: %s\n\t%s%sValue = %q\n", name, r.goName(m.ID), m.ID, oneLine(m.Brief), name, r.goName(m.ID), m.ID)
		}
		p(")\n\n")
		p("// Precomputed %s attributes.\nvar (\n", a.ID)
		for _, m := range a.Values {
			p("\t%s%s = %sKey.String(%s%sValue)\n", name, r.goName(m.ID), name, name, r.goName(m.ID))
		}
		p(")\n\n")
	}
	for _, s := range r.Spans {
		name := r.goName(r.Prefix + "." + s.ID)
		ph := placeholderExpr.FindAllStringSubmatch(s.Name, -1)
		if len(ph) == 0 {
			p("// %sSpanName is the name of the %s span: %s\nconst %sSpanName = %q\n\n", name, s.ID, oneLine(s.Brief), name, s.Name)
			continue
		}
		var params, concat []string
		rest := s.Name
		for _, m := range ph {
			pname := lowerFirst(r.goName(m[1]))
			params = append(params, pname)
			before, after, _ := strings.Cut(rest, m[0])
			if before != "" {
				concat = append(concat, fmt.Sprintf("%q", before))
			}
			concat = append(concat, pname)
			rest = after
		}
		if rest != "" {
			concat = append(concat, fmt.Sprintf("%q", rest))
		}
		p("// %sSpanName returns the name of the %s span, %q: %s\nfunc %sSpanName(%s string) string { return %s }\n\n",
			name, s.ID, s.Name, oneLine(s.Brief), name, strings.Join(params, ", "), strings.Join(concat, " + "))
	}
	p("// Metrics: the OpenTelemetry instrument name, unit and description of each, and the name it\n// has in Prometheus.\nconst (\n")
	for _, m := range r.Metrics {
		name := r.goName(m.ID)
		p("\t// %sName is the %s %s: %s\n", name, m.Instrument, m.ID, oneLine(m.Brief))
		p("\t%sName = %q\n\t%sUnit = %q\n\t%sDescription = %q\n\t%sPrometheusName = %q\n", name, m.ID, name, m.Unit, name, oneLine(m.Brief), name, PrometheusName(m))
	}
	p(")\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("format generated Go: %w\n%s", err, b.String())
	}
	return src, nil
}

// pyName turns "watchtower.reconcile.requeue_after" into "RECONCILE_REQUEUE_AFTER".
func (r *Registry) pyName(id string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(id, r.Prefix+"."), ".", "_"))
}

// GeneratePython renders the same vocabulary as a Python module (python/gowatchtower_kafka/
// semconv.py), so that consumers outside Go name attributes and metrics as the Go code does.
func (r *Registry) GeneratePython() []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("\"\"\"GoWatchtower's vocabulary: the attributes, span names and metrics of its instrumentation.\n\n")
	p("Code generated by semconvgen from semconv/registry.yaml. DO NOT EDIT.\nRegenerate with `make generate`.\n\"\"\"\n\n")
	p("# Attribute keys.\n")
	for _, a := range r.Attributes {
		p("%s = %q\n\"\"\"%s\"\"\"\n", r.pyName(a.ID), a.ID, pyDoc(a.Brief))
	}
	for _, a := range r.Attributes {
		if len(a.Values) == 0 {
			continue
		}
		p("\n# Values of %s.\n", a.ID)
		for _, v := range a.Values {
			p("%s_%s = %q\n", r.pyName(a.ID), strings.ToUpper(v.ID), v.ID)
		}
	}
	p("\n# Span names; a {placeholder} is the value of that attribute.\n")
	for _, s := range r.Spans {
		p("%s_SPAN_NAME = %q\n", strings.ToUpper(s.ID), s.Name)
	}
	p("\n# Metrics: the OpenTelemetry name, and the name Prometheus shows.\n")
	for _, m := range r.Metrics {
		p("METRIC_%s = %q\nMETRIC_%s_PROMETHEUS = %q\n", r.pyName(m.ID), m.ID, r.pyName(m.ID), PrometheusName(m))
	}
	return b.Bytes()
}

// pyDoc is a brief as the body of a Python docstring.
func pyDoc(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(oneLine(s), `\`, `\\`), `"""`, `\"\"\"`)
}

// GenerateMarkdown renders docs/semconv.md.
func (r *Registry) GenerateMarkdown() []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	attrs := map[string]Attribute{}
	for _, a := range r.Attributes {
		attrs[a.ID] = a
	}
	p("<!-- Code generated by semconvgen from semconv/registry.yaml. DO NOT EDIT; run `make generate`. -->\n\n")
	p("# Semantic conventions\n\n")
	p("Every attribute, span and metric GoWatchtower emits, generated from [`semconv/registry.yaml`](../semconv/registry.yaml).\n")
	p("The reconciled object and the reconcile use the project's own prefix, `%s.`; OpenTelemetry's `k8s.*`\n", r.Prefix)
	p("resource attributes (`k8s.pod.name`, `k8s.namespace.name`, `k8s.node.name`) describe where the operator runs.\n")
	p("Attributes marked *unbounded* (object names, IDs, free text) appear on spans only and never as metric\n")
	p("attributes, so a metric's series count per controller is constant in the number of objects.\n\n")
	p("## Metrics\n\n| OpenTelemetry name | Prometheus name | instrument | unit | attributes | description |\n|---|---|---|---|---|---|\n")
	for _, m := range r.Metrics {
		p("| `%s` | `%s` | %s | `%s` | %s | %s |\n", m.ID, PrometheusName(m), m.Instrument, m.Unit, codeList(m.Attributes), oneLine(m.Brief))
	}
	p("\n## Spans\n\n| span | name | kind | attributes | description |\n|---|---|---|---|---|\n")
	for _, s := range r.Spans {
		p("| %s | `%s` | %s | %s | %s |\n", s.ID, s.Name, s.Kind, codeList(s.Attributes), oneLine(s.Brief))
	}
	p("\n## Attributes\n\n| attribute | type | cardinality | description | examples |\n|---|---|---|---|---|\n")
	for _, a := range r.Attributes {
		typ := a.Type
		if a.Unit != "" {
			typ += " (" + a.Unit + ")"
		}
		card := "bounded"
		if a.Cardinality == "unbounded" {
			card = "**unbounded**: spans only"
		}
		desc := oneLine(a.Brief)
		if a.Type == "enum" {
			var vs []string
			for _, m := range a.Values {
				vs = append(vs, fmt.Sprintf("`%s`: %s", m.ID, oneLine(m.Brief)))
			}
			desc += "<br>" + strings.Join(vs, "<br>")
		}
		var ex []string
		for _, e := range a.Examples {
			ex = append(ex, fmt.Sprintf("`%v`", e))
		}
		p("| `%s` | %s | %s | %s | %s |\n", a.ID, typ, card, desc, strings.Join(ex, ", "))
	}
	return b.Bytes()
}

func codeList(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = "`" + id + "`"
	}
	return strings.Join(out, ", ")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func lowerFirst(s string) string {
	rs := []rune(s)
	// Keep initialisms readable: APIVerb -> apiVerb.
	i := 0
	for i < len(rs) && unicode.IsUpper(rs[i]) {
		i++
	}
	if i > 1 && i < len(rs) {
		i--
	}
	for j := 0; j < i || j == 0; j++ {
		rs[j] = unicode.ToLower(rs[j])
	}
	return string(rs)
}
