package harness

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka is a single-node Apache Kafka broker in KRaft mode (broker and controller in one JVM),
// run from the jars in the tool cache with the machine's Java.
type Kafka struct {
	// Bootstrap is the broker's "host:port" (127.0.0.1 unless WithKafkaNetwork says otherwise).
	Bootstrap string
	// SecureBootstrap is the SASL_SSL listener's "host:port" (WithKafkaSASLSSL), or "".
	SecureBootstrap string
	proc            *Process
	home            string
	java            string
	logConfig       string
	props           string // server.properties: the same listeners and log directory at every start
	dir             string
	netns           string
}

// KafkaOption configures StartKafka.
type KafkaOption func(*kafkaConfig)

type kafkaConfig struct {
	port       int
	net        Network
	autoCreate bool
	secure     *KafkaSASLSSL
}

// KafkaSASLSSL is a second listener, SASL_SSL with SCRAM-SHA-512, next to the PLAINTEXT one
// the harness itself uses: what a production broker offers its clients.
type KafkaSASLSSL struct {
	// KeystorePEM is a PEM file with the broker's certificate chain and its unencrypted PKCS#8
	// private key (Kafka's ssl.keystore.type=PEM).
	KeystorePEM string
	// Users are the SCRAM-SHA-512 credentials the broker knows: user name to password.
	Users map[string]string
}

// WithKafkaSASLSSL adds a SASL_SSL listener (SCRAM-SHA-512 over TLS); its address is
// Kafka.SecureBootstrap.
func WithKafkaSASLSSL(s KafkaSASLSSL) KafkaOption { return func(c *kafkaConfig) { c.secure = &s } }

// WithKafkaAutoCreateTopics turns the broker's auto.create.topics.enable on (Kafka's own default,
// off in the harness): a client that asks for a missing topic gets it created.
func WithKafkaAutoCreateTopics() KafkaOption { return func(c *kafkaConfig) { c.autoCreate = true } }

// WithKafkaNetwork runs the broker in n (e.g. a Cluster's node network, where pods reach it).
func WithKafkaNetwork(n Network) KafkaOption { return func(c *kafkaConfig) { c.net = n } }

// WithKafkaPort makes the broker listen on 127.0.0.1:port instead of a free port.
func WithKafkaPort(port int) KafkaOption { return func(c *kafkaConfig) { c.port = port } }

// StartKafka formats a fresh log directory, starts the broker, and waits until it answers
// metadata requests.
func StartKafka(t TB, opts ...KafkaOption) *Kafka {
	t.Helper()
	var kc kafkaConfig
	for _, o := range opts {
		o(&kc)
	}
	tools := MustTools(t)
	home := filepath.Dir(tools.Path(t, "kafka", "KAFKA_VERSION", "libs"))
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatalf("harness: Kafka needs Java 17 or newer on PATH: %v", err)
	}
	dir := t.TempDir()
	port, ctrlPort := kc.port, FreePort(t)
	if port == 0 {
		port = FreePort(t)
	}
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@%[4]s
listeners=PLAINTEXT://%[5]s,CONTROLLER://%[4]s
advertised.listeners=PLAINTEXT://%[5]s
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=%[3]s
num.partitions=1
auto.create.topics.enable=%[6]t
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=1
`, port, ctrlPort, filepath.Join(dir, "data"), kc.net.Addr(ctrlPort), kc.net.Addr(port), kc.autoCreate)
	var formatArgs []string
	secure := ""
	if kc.secure != nil {
		securePort := FreePort(t)
		secure = kc.net.Addr(securePort)
		props = strings.NewReplacer(
			"listeners=PLAINTEXT://"+kc.net.Addr(port), "listeners=PLAINTEXT://"+kc.net.Addr(port)+",SASL_SSL://"+secure,
			"advertised.listeners=PLAINTEXT://"+kc.net.Addr(port), "advertised.listeners=PLAINTEXT://"+kc.net.Addr(port)+",SASL_SSL://"+secure,
			"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT", "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
		).Replace(props) + fmt.Sprintf(`sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=%s
`, kc.secure.KeystorePEM)
		for user, pass := range kc.secure.Users {
			formatArgs = append(formatArgs, "--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", user, pass))
		}
	}
	propsPath := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(propsPath, []byte(props), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &Kafka{Bootstrap: kc.net.Addr(port), SecureBootstrap: secure, home: home, java: java, logConfig: filepath.Join(home, "log4j2.properties"),
		props: propsPath, dir: dir, netns: kc.net.NetNS}

	// Format the log directory with a fresh cluster ID (what `kafka-storage.sh format` does),
	// and the SCRAM credentials.
	clusterID := kafkaClusterID(rand.Read)
	format := exec.Command(java, k.jvmArgs("kafka.tools.StorageTool", append([]string{"format", "-t", clusterID, "-c", propsPath}, formatArgs...)...)...)
	format.Env, format.SysProcAttr = componentEnv(nil), sysProcAttr()
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("harness: format Kafka storage: %v\n%s", err, out)
	}
	k.Start(t)
	return k
}

// Stop stops the broker gracefully (SIGTERM: it flushes its logs and leaves its partitions
// cleanly), as an operator's rollout or a maintenance would, and fails the test if it needed
// SIGKILL. Start brings it back with everything it held.
func (k *Kafka) Stop(t TB) {
	t.Helper()
	if err := k.proc.Stop(); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if k.proc.Killed() {
		t.Fatalf("harness: kafka did not stop within its stop timeout after SIGTERM:\n%s", k.proc.LogTail(8<<10))
	}
}

// Start starts the broker on its log directory and listeners (StartKafka does it the first
// time; after Stop it starts it again, on the same address with the same topics and records)
// and waits until it answers metadata requests.
func (k *Kafka) Start(t TB) {
	t.Helper()
	if k.proc != nil {
		select {
		case <-k.proc.Done():
		default:
			t.Fatalf("harness: kafka is already running (pid %d)", k.proc.Pid())
		}
	}
	k.proc = StartProcess(t, ProcessSpec{
		Name:        "kafka",
		Path:        k.java,
		Args:        k.jvmArgs("kafka.Kafka", k.props),
		Dir:         k.dir,
		StopTimeout: 20 * time.Second,
		NetNS:       k.netns,
	})
	k.proc.MustWaitReady(t, 90*time.Second, func(ctx context.Context) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Bootstrap))
		if err != nil {
			return err
		}
		defer cl.Close()
		brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
		if err != nil {
			return err
		}
		if len(brokers) == 0 {
			return errors.New("no brokers in metadata")
		}
		return nil
	})
}

// kafkaClusterID is a random KRaft cluster ID: 16 bytes, base64url. An ID starting with '-'
// reads as an option to the storage tool's argument parser (one run in 64 failed with "argument
// --cluster-id/-t: expected one argument"); Kafka's own Uuid.randomUuid redraws those too.
func kafkaClusterID(read func([]byte) (int, error)) string {
	for {
		var id [16]byte
		_, _ = read(id[:])
		if s := base64.RawURLEncoding.EncodeToString(id[:]); !strings.HasPrefix(s, "-") {
			return s
		}
	}
}

// jvmArgs builds a java command line for a Kafka main class. The heap is bounded: the broker
// shares a 2-core machine with everything else a test starts.
func (k *Kafka) jvmArgs(mainClass string, args ...string) []string {
	return append([]string{
		"-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + k.logConfig,
		"-cp", filepath.Join(k.home, "libs", "*"),
		mainClass,
	}, args...)
}

// Process is the broker's process.
func (k *Kafka) Process() *Process { return k.proc }

// Client returns a franz-go client seeded with the broker, closed when the test ends.
func (k *Kafka) Client(t TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.Bootstrap)}, opts...)...)
	if err != nil {
		t.Fatalf("harness: kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// CreateTopic creates topic with the given number of partitions.
func (k *Kafka) CreateTopic(t TB, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(k.Client(t)).CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("harness: create topic %q: %v", topic, err)
	}
}

// ReadRecords consumes topic from the beginning until it has n records or ctx ends; it returns
// what it read either way, with ctx's error if it ended early.
func (k *Kafka) ReadRecords(ctx context.Context, topic string, n int) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(k.Bootstrap),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return recs, fmt.Errorf("read %q: got %d of %d records: %w", topic, len(recs), n, ctx.Err())
		}
		for _, fe := range fetches.Errors() {
			// A topic that does not exist yet is not an error for a reader waiting for it.
			if !errors.Is(fe.Err, context.Canceled) && !isRetriable(fe.Err) {
				return recs, fmt.Errorf("read %q partition %d: %w", fe.Topic, fe.Partition, fe.Err)
			}
		}
		recs = append(recs, fetches.Records()...)
	}
	return recs, nil
}

func isRetriable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNKNOWN_TOPIC_OR_PARTITION")
}

// ConsoleConsume reads up to n records of topic from the beginning with Kafka's own
// kafka-console-consumer (org.apache.kafka.tools.consumer.ConsoleConsumer, from the same
// jars as the broker) and returns the printed values, one per record.
func (k *Kafka) ConsoleConsume(ctx context.Context, topic string, n int, timeout time.Duration) ([]string, error) {
	args := k.jvmArgs("org.apache.kafka.tools.consumer.ConsoleConsumer",
		"--bootstrap-server", k.Bootstrap,
		"--topic", topic,
		"--from-beginning",
		"--max-messages", strconv.Itoa(n),
		"--timeout-ms", strconv.FormatInt(timeout.Milliseconds(), 10),
	)
	cmd := exec.CommandContext(ctx, k.java, args...)
	cmd.Env, cmd.SysProcAttr = componentEnv(nil), sysProcAttr()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := strings.TrimRight(stdout.String(), "\n")
	var lines []string
	if out != "" {
		lines = strings.Split(out, "\n")
	}
	if err != nil {
		return lines, fmt.Errorf("kafka-console-consumer: %w\n%s", err, stderr.String())
	}
	return lines, nil
}
