package integration

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/gowatchtower/watchtower/integration/harness"
)

// TestGatewayWritesToKafkaOverSASLSSL runs a real Apache Kafka with a SASL_SSL listener
// (SCRAM-SHA-512 over TLS) and the gateway with the Kafka overlays the chart renders for
// kafka.tls and kafka.sasl (taken from `helm template`, so what is tested is what a pod runs),
// its credentials in the environment as the chart passes them from a Secret: its topic check
// at start (kafka_topics_check, given the same overlays) finds the topics, and the spans it
// accepts are written to Kafka. A gateway with a wrong password still starts (its check only
// warns), is refused by the broker, says so in its log without the password, and writes
// nothing.
func TestGatewayWritesToKafkaOverSASLSSL(t *testing.T) {
	t.Parallel() // its components are its own, on reserved ports; see docs/testing.md
	ctx := ctxTimeout(t, 3*time.Minute)

	// The broker's certificate for 127.0.0.1, and its keystore: chain and PKCS#8 key in one PEM.
	pki := newTestPKI(t)
	cert, key := pki.issue(t, "kafka", pki.ca, pki.key, func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var keystore bytes.Buffer
	_ = pem.Encode(&keystore, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	_ = pem.Encode(&keystore, &pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw})
	_ = pem.Encode(&keystore, &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	if err := os.WriteFile(pki.path("kafka-keystore.pem"), keystore.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	const user, password = "otelcol-gateway", "scram-secret-7f3a"
	kafka := harness.StartKafka(t, harness.WithKafkaSASLSSL(harness.KafkaSASLSSL{
		KeystorePEM: pki.path("kafka-keystore.pem"),
		Users:       map[string]string{user: password},
	}))
	kafka.CreateTopic(t, "otlp_spans", 1)
	kafka.CreateTopic(t, "otlp_metrics", 1)
	jaeger := harness.StartJaeger(t)

	// The gateway's Kafka overlays, as the chart renders them.
	out, err := newHelm(t).Run(ctx, "template", chartRelease, chartDir, "--namespace", chartNamespace,
		"--set", "kafka.tls.enabled=true,kafka.tls.secretName=kafka-client-tls,kafka.tls.certKey=,kafka.tls.keyKey=",
		"--set", "kafka.sasl.enabled=true,kafka.sasl.secretName=kafka-client-sasl,kafka.sasl.mechanism=SCRAM-SHA-512",
		"--show-only", "templates/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var overlays []string
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if u.GetLabels()["app.kubernetes.io/component"] != "gateway" {
			continue
		}
		data, _, _ := unstructured.NestedStringMap(u.Object, "data")
		for _, f := range []string{"kafka-tls.yaml", "kafka-sasl.yaml"} {
			if data[f] == "" {
				t.Fatalf("the gateway's ConfigMap has no %s: %v", f, data)
			}
			if strings.Contains(data[f], password) {
				t.Fatalf("the rendered %s holds the password", f)
			}
			if err := os.WriteFile(pki.path(f), []byte(data[f]), 0o600); err != nil {
				t.Fatal(err)
			}
			overlays = append(overlays, pki.path(f))
		}
	}
	if len(overlays) != 2 {
		t.Fatalf("found %d Kafka overlays in the rendered gateway ConfigMap, want 2", len(overlays))
	}
	start := func(name, pass string) *harness.Collector {
		return harness.StartCollectorWithOverlays(t, name, "deploy/collector/gateway.yaml", overlays, map[string]string{
			"WATCHTOWER_KAFKA_BROKERS":        kafka.SecureBootstrap,
			"WATCHTOWER_TRACES_ENDPOINT":      jaeger.OTLPGRPC,
			"WATCHTOWER_KAFKA_TLS_CA_FILE":    pki.path("ca.pem"),
			"WATCHTOWER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
			"WATCHTOWER_KAFKA_SASL_USERNAME":  user,
			"WATCHTOWER_KAFKA_SASL_PASSWORD":  pass,
		})
	}
	good := start("otelcol-gateway", password)
	const wrongPassword = "not-the-password-91c2"
	bad := start("otelcol-gateway-wrong-password", wrongPassword)

	services := map[*harness.Collector]string{good: colUniqueService("sasl-ssl"), bad: colUniqueService("sasl-ssl-refused")}
	for gw, svc := range services {
		if code, msg := postOTLPTraces(ctx, gw.OTLPHTTP, marshalTraces(t, badTraces(svc, nil)), "application/x-protobuf", ""); code != 200 {
			t.Fatalf("%s answered %d %s to a valid span", gw.Process().Name(), code, msg)
		}
	}
	waitFor(t, ctx, "the span the gateway accepted in Kafka, written over SASL_SSL", func() (bool, error) {
		for _, s := range readSpans(t, ctx, kafka, "otlp_spans") {
			if s.service == services[good] {
				return true, nil
			}
		}
		return false, nil
	})
	var refusal string
	waitFor(t, ctx, "the gateway with a wrong password to log the broker's refusal", func() (bool, error) {
		for _, l := range strings.Split(bad.Process().LogTail(256<<10), "\n") {
			if strings.Contains(l, "SASL") && strings.Contains(strings.ToLower(l), "authentication failed") {
				refusal = l
				return true, nil
			}
		}
		return false, fmt.Errorf("no SASL authentication failure in the log")
	})
	t.Logf("wrong password: %s", refusal)
	// The topic check connected as the exporter does, over TLS with SCRAM-SHA-512; with the
	// wrong password it could not, and said so without failing the start.
	if !strings.Contains(good.Process().LogTail(1<<20), "Kafka topics exist") {
		t.Errorf("the gateway's topic check did not find the topics over SASL_SSL")
	}
	if !strings.Contains(bad.Process().LogTail(1<<20), "Could not check that the Kafka topics exist") {
		t.Errorf("the gateway with a wrong password does not say that its topic check could not connect")
	}
	for _, gw := range []*harness.Collector{good, bad} {
		if log := gw.Process().LogTail(1 << 20); strings.Contains(log, password) || strings.Contains(log, wrongPassword) {
			t.Errorf("%s logs a SASL password", gw.Process().Name())
		}
	}
	for _, s := range readSpans(t, ctx, kafka, "otlp_spans") {
		if s.service == services[bad] {
			t.Errorf("a span of the gateway with a wrong password reached Kafka")
		}
	}
}
