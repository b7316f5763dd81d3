package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// boundedBatchProcessor is the span processor between the operator's reconciles and the
// exporter. It exists, instead of sdktrace's BatchSpanProcessor, to make two promises and to
// count how they are kept:
//
//   - OnEnd never blocks: a span that finds the queue full is dropped and counted as
//     watchtower.telemetry.dropped{signal=traces,drop_reason=queue_full}. A slow or
//     unreachable collector costs spans, never reconcile latency.
//   - Memory is bounded: at most queueSize spans wait in the queue and maxBatch in the batch
//     being exported.
//
// One goroutine owns the batch and the exporter, so Export is never called concurrently (the
// SpanExporter contract). Every sampled span that OnEnd accepts is counted exactly once, as
// exported or as dropped{export_failed}; that exactness is what lets an end-to-end test
// compare watchtower.telemetry.exported with what arrived downstream.
type boundedBatchProcessor struct {
	exporter      sdktrace.SpanExporter
	metrics       *selfMetrics
	errHandler    otel.ErrorHandler // failed exports, rate limited into the operator's log
	maxBatch      int
	batchTimeout  time.Duration
	exportTimeout time.Duration

	queue   chan sdktrace.ReadOnlySpan
	flushes chan flushRequest
	stop    chan struct{} // closed by Shutdown: drain the queue, export, exit
	done    chan struct{} // closed when the worker has exited

	// exportCtx parents every export; Shutdown cancels it when its own ctx is done, so that a
	// hanging export is abandoned and what is left is counted as export_failed promptly.
	exportCtx    context.Context
	cancelExport context.CancelFunc

	// mu orders OnEnd against Shutdown: once stopped is set under the write lock, no OnEnd can
	// still be putting a span into the queue, so the worker's final drain sees every span
	// that was accepted. OnEnd only holds the read lock for a non-blocking send.
	mu      sync.RWMutex
	stopped bool

	shutdownOnce sync.Once
}

type flushRequest struct {
	ctx  context.Context
	done chan error // buffered: the worker never waits for the flusher
}

func newBoundedBatchProcessor(exp sdktrace.SpanExporter, m *selfMetrics, errs otel.ErrorHandler, s *settings) *boundedBatchProcessor {
	ctx, cancel := context.WithCancel(context.Background())
	p := &boundedBatchProcessor{
		exporter:      exp,
		metrics:       m,
		errHandler:    errs,
		maxBatch:      s.maxBatch,
		batchTimeout:  s.batchTimeout,
		exportTimeout: s.exportTimeout,
		queue:         make(chan sdktrace.ReadOnlySpan, s.queueSize),
		flushes:       make(chan flushRequest),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
		exportCtx:     ctx,
		cancelExport:  cancel,
	}
	go p.run()
	return p
}

// OnStart does nothing: spans are only of interest once ended.
func (*boundedBatchProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span for export, or drops and counts it when the queue is full.
func (p *boundedBatchProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.stopped {
		// Ended after Shutdown: neither accepted nor counted, like any SDK after shutdown.
		return
	}
	select {
	case p.queue <- s:
	default:
		p.metrics.dropped.Add(context.Background(), 1, p.metrics.tracesQueueFull)
	}
}

// ForceFlush exports every span ended before the call, waiting at most until ctx is done.
func (p *boundedBatchProcessor) ForceFlush(ctx context.Context) error {
	req := flushRequest{ctx: ctx, done: make(chan error, 1)}
	select {
	case p.flushes <- req:
	case <-p.done:
		return nil // shut down: everything was flushed or counted
	case <-ctx.Done():
		return fmt.Errorf("sdk: flushing spans: %w", ctx.Err())
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("sdk: flushing spans: %w", ctx.Err())
	}
}

// Shutdown stops accepting spans, exports what is queued and shuts the exporter down. It
// returns when that is done or when ctx is, whichever comes first; in the latter case the
// exports still running are cancelled and their spans counted as export_failed.
func (p *boundedBatchProcessor) Shutdown(ctx context.Context) error {
	var err error
	p.shutdownOnce.Do(func() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()

		stopCancel := context.AfterFunc(ctx, p.cancelExport)
		defer stopCancel()
		close(p.stop)
		select {
		case <-p.done:
		case <-ctx.Done():
			// AfterFunc may not have started yet when Done is observed; cancel directly so
			// that the worker cannot outlive this call by more than one aborted export.
			p.cancelExport()
			err = fmt.Errorf("sdk: shutting down the span processor: %w (queued spans are counted as dropped)", ctx.Err())
		}
		err = errors.Join(err, p.exporter.Shutdown(ctx))
	})
	return err
}

// run is the worker: it fills a batch from the queue and exports it when full, when
// batchTimeout has passed since the last export, on ForceFlush, and on Shutdown.
func (p *boundedBatchProcessor) run() {
	defer close(p.done)
	defer p.cancelExport()
	batch := make([]sdktrace.ReadOnlySpan, 0, p.maxBatch)
	timer := time.NewTimer(p.batchTimeout)
	defer timer.Stop()

	export := func(ctx context.Context) error {
		if len(batch) == 0 {
			return nil
		}
		err := p.export(ctx, batch)
		clear(batch) // release the spans to the garbage collector
		batch = batch[:0]
		return err
	}
	// drain exports the spans queued when it is called, not those that keep arriving, so that
	// it ends under sustained load. A flush gives up when its ctx is done and leaves the rest
	// to the normal cycle (nothing is lost); Shutdown's drain goes on, each export failing
	// fast once exportCtx is cancelled, so that every span is counted.
	drain := func(ctx context.Context, giveUp bool) error {
		var errs error
		for range len(p.queue) { // only this goroutine receives: the queue holds at least that many
			if giveUp && ctx.Err() != nil {
				return errors.Join(errs, ctx.Err())
			}
			batch = append(batch, <-p.queue)
			if len(batch) == p.maxBatch {
				errs = errors.Join(errs, export(ctx))
			}
		}
		if giveUp && ctx.Err() != nil {
			return errors.Join(errs, ctx.Err())
		}
		return errors.Join(errs, export(ctx))
	}

	for {
		select {
		case s := <-p.queue:
			batch = append(batch, s)
			if len(batch) == p.maxBatch {
				_ = export(p.exportCtx) // counted and reported by export
				timer.Reset(p.batchTimeout)
			}
		case <-timer.C:
			_ = export(p.exportCtx)
			timer.Reset(p.batchTimeout)
		case req := <-p.flushes:
			// The flusher's deadline bounds these exports too.
			ctx, cancel := context.WithCancel(req.ctx)
			stop := context.AfterFunc(p.exportCtx, cancel)
			req.done <- drain(ctx, true)
			stop()
			cancel()
		case <-p.stop:
			// Shutdown set stopped before closing stop: the queue can only shrink now.
			_ = drain(p.exportCtx, false)
			return
		}
	}
}

// export sends one batch with a timeout and counts its spans either way.
func (p *boundedBatchProcessor) export(parent context.Context, batch []sdktrace.ReadOnlySpan) error {
	ctx, cancel := context.WithTimeout(parent, p.exportTimeout)
	defer cancel()
	n := int64(len(batch))
	if err := p.exporter.ExportSpans(ctx, batch); err != nil {
		p.metrics.dropped.Add(context.Background(), n, p.metrics.tracesExportFailed)
		// Reported to this Telemetry's handler, not otel.Handle, so that it reaches the
		// operator's log with WithoutGlobal too. The count stays out of the reported message:
		// the handler rate limits per distinct message, and every batch size would be one.
		p.errHandler.Handle(fmt.Errorf("sdk: exporting spans: %w", err))
		return fmt.Errorf("sdk: exporting %d span(s): %w", n, err)
	}
	p.metrics.exported.Add(context.Background(), n, p.metrics.tracesExported)
	return nil
}
