package kafkatopicscheckextension

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/component"
	"go.uber.org/zap"
)

// docsHint is where a reader of the error finds the documented step that creates the topics.
const docsHint = `docs/deploy.md, "Create the Kafka topics"`

// firstRetry is the wait before the first background check; it doubles up to MaxRetryInterval.
const firstRetry = time.Second

type topicsCheck struct {
	cfg    *Config
	topics []string
	logger *zap.Logger

	stop func()
	done chan struct{}
	mu   sync.Mutex
}

func newTopicsCheck(cfg *Config, logger *zap.Logger) *topicsCheck {
	return &topicsCheck{cfg: cfg, topics: cfg.uniqueTopics(), logger: logger}
}

// Start checks the topics, trying for at most StartTimeout. It returns an error only when a broker
// answered that a topic does not exist and OnMissing is fail; everything else (no broker
// answering, a TLS or SASL failure) is logged, and the check goes on in the background.
func (e *topicsCheck) Start(ctx context.Context, _ component.Host) error {
	opts, err := e.cfg.clientOptions(ctx)
	if err != nil {
		return err
	}
	began := time.Now()
	cctx, cancel := context.WithTimeout(ctx, e.cfg.StartTimeout)
	r := checkUntilAnswered(cctx, opts, e.topics)
	cancel()
	took := time.Since(began).Round(time.Millisecond)

	switch {
	case len(r.missing) > 0 && e.cfg.OnMissing == Fail:
		return e.missingError(r.missing)
	case len(r.missing) > 0:
		e.logMissing(r.missing, r.err)
	case r.err != nil:
		e.logger.Warn("Could not check that the Kafka topics exist; starting anyway (the sending queue holds the data) and checking again in the background",
			zap.Strings("brokers", e.cfg.Brokers), zap.Strings("topics", e.topics),
			zap.Duration("waited", took), zap.Error(r.err))
	default:
		e.logger.Info("Kafka topics exist",
			zap.Strings("brokers", e.cfg.Brokers), zap.Strings("topics", e.topics), zap.Duration("took", took))
		return nil
	}

	bctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.mu.Lock()
	e.stop, e.done = stop, done
	e.mu.Unlock()
	go e.recheck(bctx, done, opts, r.missing)
	return nil
}

// missingConfirm is how long a topic must stay missing before the check believes it.
const missingConfirm = 2 * time.Second

// checkUntilAnswered tries until a broker answers for every topic, a topic is missing, or ctx
// ends; a refused connection, for one, is retried (Kafka may be starting with the collector),
// a SASL authentication failure is not. It returns the last result, keeping the last error
// that says why rather than the deadline's.
func checkUntilAnswered(ctx context.Context, opts []kgo.Opt, topics []string) checkResult {
	wait := 250 * time.Millisecond
	var last checkResult
	var missingSince time.Time
	for {
		r := checkTopics(ctx, opts, topics)
		if ctx.Err() != nil && last.err != nil && (errors.Is(r.err, context.DeadlineExceeded) || errors.Is(r.err, context.Canceled)) {
			return last
		}
		// A topic created just before the collector started may not be in every broker's
		// metadata yet (seen in the tests: created, then reported missing moments later): a
		// missing topic is only believed after it stays missing for missingConfirm.
		if len(r.missing) > 0 && ctx.Err() == nil {
			if missingSince.IsZero() {
				missingSince = time.Now()
			}
			if time.Since(missingSince) < missingConfirm {
				last = r
				select {
				case <-ctx.Done():
					return last
				case <-time.After(missingConfirm / 4):
				}
				continue
			}
		}
		if r.err == nil || len(r.missing) > 0 || ctx.Err() != nil || errors.Is(r.err, kerr.SaslAuthenticationFailed) {
			return r
		}
		last = r
		select {
		case <-ctx.Done():
			return last
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// Shutdown stops the background check and waits for it (or for ctx).
func (e *topicsCheck) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	stop, done := e.stop, e.done
	e.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recheck looks again, with a backoff from firstRetry doubling up to MaxRetryInterval, until
// every topic exists or Shutdown. A topic found missing is logged as an error once (again only
// if the set of missing topics changes); a broker that still does not answer is logged at
// debug level only (the exporter reports its own failed sends).
func (e *topicsCheck) recheck(ctx context.Context, done chan<- struct{}, opts []kgo.Opt, logged []string) {
	defer close(done)
	wait := min(firstRetry, e.cfg.MaxRetryInterval)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		cctx, cancel := context.WithTimeout(ctx, e.cfg.StartTimeout)
		r := checkTopics(cctx, opts, e.topics)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case len(r.missing) > 0:
			if !slices.Equal(r.missing, logged) {
				e.logMissing(r.missing, r.err)
				logged = r.missing
			}
		case r.err != nil:
			e.logger.Debug("Kafka topics not checked yet", zap.Strings("brokers", e.cfg.Brokers), zap.Error(r.err))
		default:
			e.logger.Info("Kafka topics exist", zap.Strings("brokers", e.cfg.Brokers), zap.Strings("topics", e.topics))
			return
		}
		wait = min(2*wait, e.cfg.MaxRetryInterval)
		timer.Reset(wait)
	}
}

func (e *topicsCheck) logMissing(missing []string, other error) {
	fields := []zap.Field{zap.Strings("missing", missing), zap.Strings("brokers", e.cfg.Brokers), zap.Strings("topics", e.topics)}
	if other != nil {
		fields = append(fields, zap.Error(other))
	}
	how := "running anyway (on_missing: warn)"
	if e.cfg.OnMissing == Fail {
		how = "found after the start, when the brokers answered; running on"
	}
	e.logger.Error(e.missingError(missing).Error()+"; "+how+": sends to a missing topic fail until it is created", fields...)
}

// missingError names the missing topics, the brokers, and the step that creates them.
func (e *topicsCheck) missingError(missing []string) error {
	quoted := make([]string, len(missing))
	for i, t := range missing {
		quoted[i] = fmt.Sprintf("%q", t)
	}
	what := "Kafka topic " + quoted[0] + " does not exist"
	if len(missing) > 1 {
		what = "Kafka topics " + strings.Join(quoted, ", ") + " do not exist"
	}
	topic, each := missing[0], ""
	if len(missing) > 1 {
		topic, each = "<topic>", " for each"
	}
	brokers := strings.Join(e.cfg.Brokers, ",")
	return fmt.Errorf("%s on the brokers %s; this collector writes to %s and never creates a topic. "+
		"Create it with the partitions and replication you chose, e.g.%s "+
		"kafka-topics.sh --bootstrap-server %s --create --topic %s --partitions 3 --replication-factor 3 (%s), "+
		"or correct the topic name",
		what, brokers, strings.Join(e.topics, ", "), each, brokers, topic, docsHint)
}
