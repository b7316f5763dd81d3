package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"
	"sigs.k8s.io/yaml"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// testPKI writes PEM files for the OTLP security tests: a CA, a server certificate for
// 127.0.0.1 and client certificates it signed (one valid, one expired), and a second CA with a
// client certificate of its own.
type testPKI struct {
	dir string
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.ca, p.key = p.issue(t, "ca", nil, nil, func(c *x509.Certificate) {
		c.IsCA, c.BasicConstraintsValid = true, true
		c.KeyUsage = x509.KeyUsageCertSign
	})
	return p
}

// issue writes name.pem and name-key.pem: a certificate signed by parent (self-signed when nil),
// shaped by edit.
func (p *testPKI) issue(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, edit func(*x509.Certificate)) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "watchtower-test " + name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	edit(tmpl)
	signer, signerKey := parent, parentKey
	if signer == nil {
		signer, signerKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(p.dir, file), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".pem", "CERTIFICATE", der)
	write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (p *testPKI) path(file string) string { return filepath.Join(p.dir, file) }

// TestOTLPReceiversRequireTLSClientCertificatesAndToken runs the gateway with
// deploy/collector/overlays/otlp-tls.yaml (mutual TLS) and gateway-otlp-bearer.yaml, and sends to
// it with real clients: the example operator (the GoWatchtower SDK configured only by
// OTEL_EXPORTER_OTLP_* variables), telemetrygen, and a node's agent with agent-gateway-tls.yaml
// and agent-gateway-bearer.yaml. With the CA, a client certificate and the token, their data
// reaches Kafka; a wrong CA, no client certificate, an expired one, one of another CA, no token
// or a wrong token are refused, and the operator's log says why.
func TestOTLPReceiversRequireTLSClientCertificatesAndToken(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	root := harness.MustTools(t).RepoRoot

	// The bearer overlays restate their tier's extensions (a list in an overlay replaces the
	// base's): they must stay in step.
	for tier, overlay := range map[string]string{"gateway": "gateway-otlp-bearer.yaml", "agent": "agent-gateway-bearer.yaml"} {
		var base, bearer struct {
			Service struct {
				Extensions []string `json:"extensions"`
			} `json:"service"`
		}
		for file, into := range map[string]any{"deploy/collector/" + tier + ".yaml": &base, "deploy/collector/overlays/" + overlay: &bearer} {
			b, err := os.ReadFile(filepath.Join(root, file))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(b, into); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
		}
		auth := map[string]string{"gateway": "bearertokenauth/otlp", "agent": "bearertokenauth/gateway"}[tier]
		if want := append(slices.Clone(base.Service.Extensions), auth); !slices.Equal(bearer.Service.Extensions, want) {
			t.Fatalf("%s lists extensions %v, want %s.yaml's and the authenticator: %v", overlay, bearer.Service.Extensions, tier, want)
		}
	}

	pki := newTestPKI(t)
	pki.issue(t, "server", pki.ca, pki.key, func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	pki.issue(t, "client", pki.ca, pki.key, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} })
	pki.issue(t, "expired", pki.ca, pki.key, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	})
	otherCA, otherKey := pki.issue(t, "other-ca", nil, nil, func(c *x509.Certificate) {
		c.IsCA, c.BasicConstraintsValid = true, true
		c.KeyUsage = x509.KeyUsageCertSign
	})
	pki.issue(t, "other-client", otherCA, otherKey, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} })
	const token = "s3cret-token-for-the-gateway"
	if err := os.WriteFile(pki.path("token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	kafka := harness.StartKafka(t)
	kafka.CreateTopic(t, "otlp_spans", 3)
	kafka.CreateTopic(t, "otlp_metrics", 1)
	jaeger := harness.StartJaeger(t)
	gw := harness.StartCollectorWithOverlays(t, "otelcol-watchtower", "deploy/collector/gateway.yaml",
		[]string{"deploy/collector/overlays/otlp-tls.yaml", "deploy/collector/overlays/gateway-otlp-bearer.yaml"},
		map[string]string{
			"WATCHTOWER_KAFKA_BROKERS":           kafka.Bootstrap,
			"WATCHTOWER_TRACES_ENDPOINT":         jaeger.OTLPGRPC,
			"WATCHTOWER_OTLP_TLS_CERT_FILE":      pki.path("server.pem"),
			"WATCHTOWER_OTLP_TLS_KEY_FILE":       pki.path("server-key.pem"),
			"WATCHTOWER_OTLP_TLS_CLIENT_CA_FILE": pki.path("ca.pem"),
			"WATCHTOWER_OTLP_BEARER_TOKEN_FILE":  pki.path("token"),
		})
	kube, _ := startKubeWithWorkloadCRD(t)
	ctx := ctxTimeout(t, 3*time.Minute)

	// Every client at once; each is an operator with its own service name.
	good := []string{
		"OTEL_EXPORTER_OTLP_CERTIFICATE=" + pki.path("ca.pem"),
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=" + pki.path("client.pem"),
		"OTEL_EXPORTER_OTLP_CLIENT_KEY=" + pki.path("client-key.pem"),
		"OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20" + token,
	}
	with := func(replace ...string) []string {
		env := slices.Clone(good)
		for _, r := range replace {
			k, _, _ := strings.Cut(r, "=")
			env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
			if !strings.HasSuffix(r, "=") {
				env = append(env, r)
			}
		}
		return env
	}
	cases := []struct {
		name string
		env  []string
		// refusal is what the operator's log must say; "" for the client that gets through.
		refusal string
	}{
		{"all three", good, ""},
		{"all three over gRPC", with("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), ""},
		{"a CA that did not sign the server's certificate", with("OTEL_EXPORTER_OTLP_CERTIFICATE=" + pki.path("other-ca.pem")), "certificate signed by unknown authority"},
		{"no client certificate", with("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=", "OTEL_EXPORTER_OTLP_CLIENT_KEY="), "certificate required"},
		{"an expired client certificate", with("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE="+pki.path("expired.pem"), "OTEL_EXPORTER_OTLP_CLIENT_KEY="+pki.path("expired-key.pem")), "expired certificate"},
		{"a client certificate of another CA", with("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE="+pki.path("other-client.pem"), "OTEL_EXPORTER_OTLP_CLIENT_KEY="+pki.path("other-client-key.pem")),
			// The server answers with the TLS alert "unknown certificate authority", but Go's
			// HTTP/2 client reports only this (docs/collector.md).
			"http2: client conn could not be established"},
		{"no token", with("OTEL_EXPORTER_OTLP_HEADERS="), "401"},
		{"a wrong token", with("OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20guess"), "401"},
		{"a wrong token over gRPC", with("OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20guess", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "Unauthenticated"},
	}
	type running struct {
		service string
		op      *harness.Process
	}
	ops := make([]running, len(cases))
	for i, c := range cases {
		service := colUniqueService("secured-operator")
		endpoint := gw.OTLPHTTP
		if slices.Contains(c.env, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc") {
			endpoint = gw.OTLPGRPC
		}
		_, op := startOperator(t, kube, append(c.env,
			"OTEL_SERVICE_NAME="+service,
			"OTEL_EXPORTER_OTLP_ENDPOINT=https://"+endpoint,
			"OTEL_METRIC_EXPORT_INTERVAL=1000")...)
		ops[i] = running{service, op}
	}

	// telemetrygen, with the same three credentials.
	const traces = 20
	tg := exec.CommandContext(ctx, harness.MustTools(t).Path(t, "telemetrygen", "TELEMETRYGEN_VERSION", "telemetrygen"), "traces",
		"--otlp-endpoint", gw.OTLPGRPC, "--ca-cert", pki.path("ca.pem"), "--mtls",
		"--client-cert", pki.path("client.pem"), "--client-key", pki.path("client-key.pem"),
		"--otlp-header", `Authorization="Bearer `+token+`"`,
		"--service", "secured-telemetrygen", "--traces", strconv.Itoa(traces), "--child-spans", "1", "--rate", "100")
	if out, err := tg.CombinedOutput(); err != nil {
		t.Fatalf("telemetrygen with the CA, a client certificate and the token: %v\n%s", err, out)
	}

	// The node's agent in front of the gateway, with its client certificate and the token:
	// telemetrygen sends to it in plain OTLP, as operators on its node do.
	agent := harness.StartCollectorWithOverlays(t, "otelcol-agent", "deploy/collector/agent.yaml",
		[]string{"deploy/collector/overlays/agent-gateway-tls.yaml", "deploy/collector/overlays/agent-gateway-bearer.yaml"},
		map[string]string{
			"KUBE_NODE_NAME":                       "node-1",
			"KUBECONFIG":                           kubeconfigFor(t, kube),
			"WATCHTOWER_K8S_AUTH_TYPE":             "kubeConfig",
			"WATCHTOWER_GATEWAY_ENDPOINT":          gw.OTLPGRPC,
			"WATCHTOWER_GATEWAY_TLS_CA_FILE":       pki.path("ca.pem"),
			"WATCHTOWER_GATEWAY_TLS_CERT_FILE":     pki.path("client.pem"),
			"WATCHTOWER_GATEWAY_TLS_KEY_FILE":      pki.path("client-key.pem"),
			"WATCHTOWER_GATEWAY_BEARER_TOKEN_FILE": pki.path("token"),
		})
	viaAgent := exec.CommandContext(ctx, harness.MustTools(t).Path(t, "telemetrygen", "TELEMETRYGEN_VERSION", "telemetrygen"), "traces",
		"--otlp-endpoint", agent.OTLPGRPC, "--otlp-insecure",
		"--service", "secured-via-agent", "--traces", strconv.Itoa(traces), "--child-spans", "1", "--rate", "100")
	if out, err := viaAgent.CombinedOutput(); err != nil {
		t.Fatalf("telemetrygen to the agent: %v\n%s", err, out)
	}

	// What got through: metric points of the operators that may send, spans of telemetrygen.
	pointsOf := func() map[string]int {
		recs, err := kafka.ReadAllRecords(ctx, "otlp_metrics")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		var u pmetric.ProtoUnmarshaler
		for _, rec := range recs {
			md, err := u.UnmarshalMetrics(rec.Value)
			if err != nil {
				t.Fatalf("metrics record at partition %d offset %d: %v", rec.Partition, rec.Offset, err)
			}
			for i := 0; i < md.ResourceMetrics().Len(); i++ {
				rm := md.ResourceMetrics().At(i)
				svc, _ := rm.Resource().Attributes().Get("service.name")
				got[svc.AsString()] += md.DataPointCount()
			}
		}
		return got
	}
	for i, c := range cases {
		if c.refusal != "" {
			continue
		}
		waitFor(t, ctx, c.name+": the operator's metrics in Kafka", func() (bool, error) {
			return pointsOf()[ops[i].service] > 0, nil
		})
	}
	waitFor(t, ctx, "telemetrygen's spans in Kafka, sent to the gateway and through the agent", func() (bool, error) {
		n := map[string]int{}
		for _, s := range readSpans(t, ctx, kafka, "otlp_spans") {
			n[s.service]++
		}
		return n["secured-telemetrygen"] == traces*2 && n["secured-via-agent"] == traces*2,
			fmt.Errorf("%d and %d of %d spans", n["secured-telemetrygen"], n["secured-via-agent"], traces*2)
	})
	for i, c := range cases {
		if c.refusal == "" {
			continue
		}
		waitFor(t, ctx, c.name+": the operator's log to say why it was refused", func() (bool, error) {
			log := ops[i].op.LogTail(256 << 10)
			return strings.Contains(log, c.refusal), fmt.Errorf("no %q in the log", c.refusal)
		})
		for _, l := range strings.Split(ops[i].op.LogTail(256<<10), "\n") {
			if strings.Contains(l, c.refusal) {
				t.Logf("%s: the operator logs: %s", c.name, l)
				break
			}
		}
	}
	// Nothing of a refused client got in.
	got := pointsOf()
	for i, c := range cases {
		if c.refusal != "" && got[ops[i].service] != 0 {
			t.Errorf("%s: %d metric points of a refused client reached Kafka", c.name, got[ops[i].service])
		}
	}
}
