package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ternhq/tern/core"
)

// request is one Apply waiting for its shard's writer.
type request struct {
	ctx  context.Context
	cmd  core.Command
	done chan outcome // buffered (1): the writer never blocks on it
}

type outcome struct {
	res core.Result
	err error
}

// shardWriter owns every write of one shard. Its run goroutine takes the
// first queued command, drains whatever else is queued (up to maxBatch)
// without waiting, applies them all in one transaction and commits it once,
// while the next batch accumulates in the queue.
type shardWriter struct {
	be       backend
	shard    int
	shards   int
	maxBatch int
	metrics  core.Metrics
	log      *slog.Logger

	queue chan *request // closed by Store.Close; run drains it and returns

	applied uint64 // owned by run: the applied index, including the open transaction
}

// appliedCmd is a command whose Apply has run: its result and the writes it
// made (none when it failed), the applied index included.
type appliedCmd struct {
	req    *request
	res    core.Result
	err    error
	writes *overlay
}

// openTxn is the transaction a batch is being written into.
type openTxn struct {
	kv   kvTxn
	base uint64 // applied index before it
	cmds []*appliedCmd
}

func (w *shardWriter) run() {
	batch := make([]*request, 0, w.maxBatch)
	for first := range w.queue {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < w.maxBatch {
			select {
			case req, ok := <-w.queue:
				if !ok {
					break drain
				}
				batch = append(batch, req)
			default:
				break drain
			}
		}
		w.applyBatch(batch)
		clear(batch)
	}
}

func (w *shardWriter) begin() *openTxn {
	return &openTxn{kv: w.be.begin(w.shard), base: w.applied}
}

// applyBatch applies batch in one transaction, or more when it does not fit
// in one, and answers every request after its transaction committed.
func (w *shardWriter) applyBatch(batch []*request) {
	t := w.begin()
	for _, req := range batch {
		if err := req.ctx.Err(); err != nil {
			req.done <- outcome{err: err}
			continue
		}
		c := w.apply(t.kv, req)
		if err := c.writes.flush(t.kv); err != nil {
			t = w.splitAt(t, c, err)
			continue
		}
		t.cmds = append(t.cmds, c)
	}
	_ = w.commit(t)
}

// apply runs req's command over an overlay of kv, so that a command that
// fails writes nothing, and adds the applied index to its writes.
func (w *shardWriter) apply(kv kvGetter, req *request) *appliedCmd {
	ov := newOverlay(kv)
	res, err := req.cmd.Apply(&state{kv: ov, shard: w.shard, shards: w.shards})
	if err != nil {
		ov.reset()
		res = core.Result{}
	}
	w.applied++
	_ = ov.set(appliedKey(w.shard), encodeUint64(w.applied), 0)
	return &appliedCmd{req: req, res: res, err: err, writes: ov}
}

// splitAt handles a transaction t that took part of c's writes and then
// refused one with flushErr (normally errTxnTooBig). A command is never
// split: t is dropped, the commands before c are committed in a transaction
// of their own, and c gets a fresh one. It returns the transaction to go on
// with.
func (w *shardWriter) splitAt(t *openTxn, c *appliedCmd, flushErr error) *openTxn {
	t.kv.discard()
	if len(t.cmds) > 0 {
		prev := &openTxn{kv: w.be.begin(w.shard), base: t.base, cmds: t.cmds}
		var err error
		for _, p := range prev.cmds {
			if err = p.writes.flush(prev.kv); err != nil {
				break // cannot happen: the same writes fitted in t
			}
		}
		if err == nil {
			err = w.commit(prev)
		} else {
			prev.kv.discard()
			w.applied = prev.base
			err = fmt.Errorf("storage: rewrite shard %d transaction: %w", w.shard, err)
			w.answer(prev.cmds, err)
		}
		if err != nil {
			// c read state that did not commit.
			w.answer([]*appliedCmd{c}, err)
			return w.begin()
		}
	}
	alone := &openTxn{kv: w.be.begin(w.shard), base: w.applied - 1}
	if err := c.writes.flush(alone.kv); err != nil {
		alone.kv.discard()
		w.applied = alone.base
		if errors.Is(err, errTxnTooBig) {
			err = fmt.Errorf("storage: command does not fit in one transaction: %w", err)
		} else {
			err = fmt.Errorf("storage: write: %w", err)
		}
		w.log.Warn("storage: command failed", "shard", w.shard, "err", err)
		c.err, c.res = err, core.Result{}
		w.answer([]*appliedCmd{c}, nil)
		return w.begin()
	}
	w.log.Debug("storage: split a batch", "shard", w.shard, "reason", flushErr)
	alone.cmds = append(alone.cmds, c)
	return alone
}

// commit commits t and answers its commands. On failure every command of t
// fails and the applied index goes back to t.base.
func (w *shardWriter) commit(t *openTxn) error {
	if len(t.cmds) == 0 {
		t.kv.discard()
		return nil
	}
	start := time.Now()
	err := t.kv.commit()
	w.metrics.Observe(MetricCommitSeconds, time.Since(start).Seconds())
	w.metrics.Observe(MetricBatchCommands, float64(len(t.cmds)))
	if err != nil {
		t.kv.discard()
		w.applied = t.base
		err = fmt.Errorf("storage: commit shard %d: %w", w.shard, err)
		w.log.Error("storage: commit failed", "shard", w.shard, "commands", len(t.cmds), "err", err)
	}
	w.answer(t.cmds, err)
	return err
}

// answer sends each command its outcome: commitErr if set, else its own.
func (w *shardWriter) answer(cmds []*appliedCmd, commitErr error) {
	for _, c := range cmds {
		o := outcome{res: c.res, err: c.err}
		if commitErr != nil {
			o = outcome{err: commitErr}
		}
		label := "ok"
		if o.err != nil {
			label = "error"
		}
		w.metrics.Add(MetricCommands, label, 1)
		c.req.done <- o
	}
}
