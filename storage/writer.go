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
	done chan outcome // buffered (1): nobody ever blocks on it
}

type outcome struct {
	res core.Result
	err error
}

// shardWriter owns every write of one shard. Its run goroutine takes the
// first queued command, drains whatever else is queued (up to maxBatch)
// without waiting, applies them all and commits them in one transaction.
//
// A commit has two stages (kvTxn.commit): applied (the writes are in the
// engine, and the shard's next snapshot sees them) and durable (fsync'd and
// visible to readers). Commits are pipelined one deep on applied: while
// batch N is being applied, run applies the commands that arrive meanwhile
// as batch N+1, reading N's writes from N's layer; it commits N+1 once N
// was applied, without waiting for N to be durable, and if N's commit
// failed it applies N+1 again over the applied state. Each request is
// answered (from the goroutine that completes the commit: Badger's syncer)
// only once its transaction is durable, or has failed.
type shardWriter struct {
	be       backend
	shard    int
	shards   int
	maxBatch int
	metrics  core.Metrics
	log      *slog.Logger
	blockers *blockers // who in this shard may block someone (see blockers)

	queue chan *request // closed by Store.Close; run drains it and returns

	// Owned by run.
	applied     uint64       // applied index of the last command applied (committed, in flight or not)
	snap        kvSnapshot   // the shard's applied state when taken; nil until needed
	recent      []*layer     // the writes of each commit applied since snap was taken, newest first
	recentBytes int          // their keys and values
	inflight    *inflightTxn // the transaction being applied, or nil
}

// appliedCmd is a command whose Apply has run: its result and its writes
// (none when it failed), the applied index included.
type appliedCmd struct {
	req    *request
	res    core.Result
	err    error
	writes *overlay
	index  uint64 // the applied index it writes
}

// inflightTxn is a transaction whose commit has started and that has not
// been applied yet.
type inflightTxn struct {
	layer *layer        // its writes, for the commands applied meanwhile
	base  uint64        // applied index before it
	done  chan struct{} // closed when it was applied, or failed and its commands were answered
	err   error         // the commit's error; read after done
}

func (w *shardWriter) run() {
	defer w.releaseSnapshot()
	for first := range w.queue {
		b := w.newBatch()
		w.add(b, first)
		w.fill(b)
		w.commitBatch(b)
	}
	w.settle()
}

// commitBatch commits b once the commit in flight has been applied.
func (w *shardWriter) commitBatch(b *batch) {
	if len(b.cmds) == 0 {
		b.dropTxn()
		return
	}
	if !w.settle() {
		// The commit that b read from failed: apply b again.
		b.dropTxn()
		b = w.reapply(b.cmds)
	}
	if b.txn != nil {
		w.commitAsync(b.txn, b.cmds, b.layer)
		return
	}
	w.commitAll(b.cmds, b.layer)
}

// batch is the commands applied for the next transaction.
type batch struct {
	cmds  []*appliedCmd
	layer *layer // their merged writes
	reads layers // what they read: layer, the in-flight writes, the recent ones, the snapshot
	// txn holds the writes of cmds, written as each was applied, so that
	// the batch commits at once when the commit in flight is applied. It
	// is nil once a command did not fit: commitAll then splits the batch.
	txn kvTxn
}

// dropTxn discards b's transaction; commitAll writes b's commands again.
func (b *batch) dropTxn() {
	if b.txn != nil {
		b.txn.discard()
		b.txn = nil
	}
}

func (w *shardWriter) newBatch() *batch {
	b := &batch{layer: newLayer(), txn: w.be.begin(w.shard)}
	b.reads = layers{top: []*layer{b.layer}, base: w.snapshot()}
	if w.inflight != nil {
		b.reads.top = append(b.reads.top, w.inflight.layer)
	}
	b.reads.top = append(b.reads.top, w.recent...)
	return b
}

// add applies req to b, or answers it at once if its ctx has ended.
func (w *shardWriter) add(b *batch, req *request) {
	if err := req.ctx.Err(); err != nil {
		req.done <- outcome{err: err}
		return
	}
	c := w.apply(b.reads, req)
	b.layer.add(c.writes)
	b.cmds = append(b.cmds, c)
	if b.txn != nil {
		if err := c.writes.flush(b.txn); err != nil {
			b.dropTxn() // too big (or failing): commitAll sorts it out
		}
	}
}

// fill adds queued commands to b, up to maxBatch. While a commit is in
// flight it applies commands as they arrive until that commit is applied,
// and stops there, so that b commits right after it. With nothing in
// flight it takes what is queued without waiting.
func (w *shardWriter) fill(b *batch) {
	for len(b.cmds) < w.maxBatch {
		if w.inflight != nil {
			select {
			case req, ok := <-w.queue:
				if !ok {
					return
				}
				w.add(b, req)
			case <-w.inflight.done:
				return
			}
			continue
		}
		select {
		case req, ok := <-w.queue:
			if !ok {
				return
			}
			w.add(b, req)
		default:
			return
		}
	}
}

// reapply applies the requests of cmds again, over the applied state.
func (w *shardWriter) reapply(cmds []*appliedCmd) *batch {
	b := w.newBatch()
	for _, c := range cmds {
		w.add(b, c.req)
	}
	return b
}

// apply runs req's command over an overlay of base, so that a command that
// fails writes nothing, and adds the applied index to its writes.
func (w *shardWriter) apply(base kvGetter, req *request) *appliedCmd {
	ov := newOverlay(base)
	res, err := req.cmd.Apply(&state{kv: ov, shard: w.shard, shards: w.shards, blockers: w.blockers})
	if err != nil {
		ov.reset()
		res = core.Result{}
	}
	w.applied++
	_ = ov.set(appliedKey(w.shard), encodeUint64(w.applied), 0)
	return &appliedCmd{req: req, res: res, err: err, writes: ov, index: w.applied}
}

// commitAll commits cmds, whose merged writes are l, in one transaction
// when they fit, committing it in the background; otherwise in several, all
// but the last waited for until applied. A command is never split across
// transactions: a command that does not fit in one on its own fails,
// keeping only its applied index, and the commands after it are applied
// again.
func (w *shardWriter) commitAll(cmds []*appliedCmd, l *layer) {
	for len(cmds) > 0 {
		t := w.be.begin(w.shard)
		n, err := flushEach(t, cmds)
		if err == nil {
			w.commitAsync(t, cmds, l)
			return
		}
		t.discard()
		dropped := n == 0
		if dropped {
			c := cmds[0]
			c.err = fmt.Errorf("storage: command does not fit in one transaction: %w", err)
			c.res = core.Result{}
			c.writes.reset()
			_ = c.writes.set(appliedKey(w.shard), encodeUint64(c.index), 0)
			w.log.Warn("storage: command failed", "shard", w.shard, "err", err)
			n = 1
		} else {
			w.log.Debug("storage: transaction full, committing part of a batch", "shard", w.shard, "commands", n, "of", len(cmds))
		}
		t = w.be.begin(w.shard)
		ok := false
		if _, err := flushEach(t, cmds[:n]); err != nil {
			// Cannot happen: the same writes fitted a moment ago.
			t.discard()
			w.answer(cmds[:n], fmt.Errorf("storage: rewrite transaction: %w", err))
		} else {
			ok = w.commitSync(t, cmds[:n])
		}
		rest := cmds[n:]
		if len(rest) == 0 {
			return
		}
		if !ok || dropped {
			// rest read writes that are gone: apply it again.
			if ok {
				w.applied = cmds[n-1].index
			} else {
				w.applied = cmds[0].index - 1
			}
			b := w.reapply(rest)
			b.dropTxn()
			rest, l = b.cmds, b.layer
		}
		cmds = rest
	}
}

// flushEach writes cmds into t in order and returns how many it wrote
// whole; on error t also holds part of the next one.
func flushEach(t kvTxn, cmds []*appliedCmd) (int, error) {
	for i, c := range cmds {
		if err := c.writes.flush(t); err != nil {
			return i, err
		}
	}
	return len(cmds), nil
}

// commitAsync starts committing t, holding cmds whose merged writes are l.
// Nothing may be in flight.
func (w *shardWriter) commitAsync(t kvTxn, cmds []*appliedCmd, l *layer) {
	in := &inflightTxn{layer: l, base: cmds[0].index - 1, done: make(chan struct{})}
	w.inflight = in
	start := time.Now()
	t.commit(func(err error) {
		if err != nil {
			in.err = w.committed(cmds, start, err)
		}
		close(in.done)
	}, func(err error) { w.committed(cmds, start, err) })
}

// commitSync commits t, holding cmds, waits until it is applied, and
// reports whether it was. Nothing may be in flight.
func (w *shardWriter) commitSync(t kvTxn, cmds []*appliedCmd) bool {
	done := make(chan error, 1)
	start := time.Now()
	t.commit(func(err error) {
		if err != nil {
			err = w.committed(cmds, start, err)
		}
		done <- err
	}, func(err error) { w.committed(cmds, start, err) })
	err := <-done
	w.refreshSnapshot()
	return err == nil
}

// settle waits until the commit in flight, if any, is applied, and reports
// whether it was. On failure the applied index goes back to before it.
func (w *shardWriter) settle() bool {
	in := w.inflight
	if in == nil {
		return true
	}
	<-in.done
	w.inflight = nil
	if in.err != nil {
		w.applied = in.base
		w.refreshSnapshot()
		return false
	}
	w.keepRecent(in.layer)
	return true
}

// The writer keeps the layers of up to maxRecentLayers commits, holding at
// most maxRecentBytes of keys and values, over its snapshot.
const (
	maxRecentLayers = 8
	maxRecentBytes  = 4 << 20
)

// keepRecent keeps the layer of a commit just applied over the snapshot,
// rather than taking a new snapshot at once, so that the next commands
// read hot keys (heads, the applied index) there without going to the
// engine. When there are too many, it takes a new snapshot instead.
func (w *shardWriter) keepRecent(l *layer) {
	w.recent = append(w.recent, nil)
	copy(w.recent[1:], w.recent)
	w.recent[0] = l
	w.recentBytes += l.bytes
	if len(w.recent) > maxRecentLayers || w.recentBytes > maxRecentBytes {
		w.refreshSnapshot()
	}
}

// committed records a commit that is durable or failed and answers its
// commands; it runs on whichever goroutine completed the commit. A failed
// commit fails every command in it.
func (w *shardWriter) committed(cmds []*appliedCmd, start time.Time, err error) error {
	w.metrics.Observe(MetricCommitSeconds, time.Since(start).Seconds())
	w.metrics.Observe(MetricBatchCommands, float64(len(cmds)))
	if err != nil {
		err = fmt.Errorf("storage: commit shard %d: %w", w.shard, err)
		if !errors.Is(err, errSyncFailed) { // logged once, by the syncer
			w.log.Error("storage: commit failed", "shard", w.shard, "commands", len(cmds), "err", err)
		}
	}
	w.answer(cmds, err)
	return err
}

// answer sends each command its outcome: failed if set, else its own.
func (w *shardWriter) answer(cmds []*appliedCmd, failed error) {
	for _, c := range cmds {
		o := outcome{res: c.res, err: c.err}
		if failed != nil {
			o = outcome{err: failed}
		}
		label := "ok"
		if o.err != nil {
			label = "error"
		}
		w.metrics.Add(MetricCommands, label, 1)
		c.req.done <- o
	}
}

func (w *shardWriter) snapshot() kvSnapshot {
	if w.snap == nil {
		w.snap = w.be.snapshot(w.shard)
	}
	return w.snap
}

// refreshSnapshot takes a new snapshot and drops the recent layers, which
// the snapshot includes. Nothing may be in flight, or the new snapshot
// might miss its writes.
func (w *shardWriter) refreshSnapshot() {
	w.releaseSnapshot()
	w.snap = w.be.snapshot(w.shard)
	clear(w.recent)
	w.recent, w.recentBytes = w.recent[:0], 0
}

func (w *shardWriter) releaseSnapshot() {
	if w.snap != nil {
		w.snap.release()
		w.snap = nil
	}
}
