package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ternhq/tern/wire"
)

// wakePull asks the pull loop for a round; requests coalesce.
func (c *Client) wakePull() {
	c.forced.Store(true)
	c.signalPull()
}

// wakeNotified asks for a round because a Notify announced seq. The round
// is skipped when an earlier one already went past seq (the Notify was
// written while that round's Sync was on its way).
func (c *Client) wakeNotified(seq uint64) {
	raise(&c.notified, seq)
	c.signalPull()
}

// offerInline hands the entries a Notify carried to the pull loop: a run,
// contiguous and in order (else it is ignored: the pull path stays the
// source of truth). They are merged with what is already offered, which
// stays in seq order without duplicates and may have gaps: the entries
// above a gap wait for it to be filled (by a send answer still on its way,
// a later Notify) or passed by a pull.
func (c *Client) offerInline(es []*wire.Entry) {
	if len(es) == 0 {
		return
	}
	for i := 1; i < len(es); i++ {
		if es[i].GetSeq() != es[i-1].GetSeq()+1 {
			return // not what the protocol promises: pull instead
		}
	}
	c.pullMu.Lock()
	defer c.pullMu.Unlock()
	c.offered = mergeEntries(c.offered, es)
	if n := len(c.offered); n > maxOffered {
		c.offered = c.offered[n-maxOffered:]
	}
}

// maxOffered bounds the entries waiting in Client.offered; a pull fetches
// whatever was dropped.
const maxOffered = 1024

// mergeEntries merges two seq-ordered entry lists, keeping one entry per
// seq (a's).
func mergeEntries(a, b []*wire.Entry) []*wire.Entry {
	if len(a) == 0 {
		return b
	}
	if b[0].GetSeq() > a[len(a)-1].GetSeq() {
		return append(a, b...)
	}
	out := make([]*wire.Entry, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		switch {
		case len(b) == 0 || len(a) > 0 && a[0].GetSeq() < b[0].GetSeq():
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0 || b[0].GetSeq() < a[0].GetSeq():
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	return out
}

// ownEntry offers the entry a send created in the sender's own mailbox,
// built from the request and its answer, as a Notify would carry it
// inline: a server of capability 4 sends no Notify for it. A duplicate's
// answer is only a hint (the first send's body may differ): a pull fetches
// that entry if the client lacks it.
func (c *Client) ownEntry(sr *wire.SendRequest, r *wire.SendResponse) {
	if !r.GetDuplicate() {
		c.mu.Lock()
		user, device := c.user, c.device
		c.mu.Unlock()
		if user != "" {
			c.offerInline([]*wire.Entry{{
				Seq: r.GetSeq(), Id: r.GetId(), From: user, FromDevice: device,
				To: sr.GetUser(), Group: sr.GetGroup(), Body: sr.GetBody(),
				SentAtMs: r.GetSentAtMs(), ClientMsgId: sr.GetClientMsgId(),
			}})
		}
	}
	raise(&c.answered, r.GetSeq())
	c.signalPull()
}

// takeInline hands the app the offered entries that continue the local
// seq, as a Sync page would, and reports whether it did. Offered entries at
// or below the local seq are dropped; those above a gap stay.
func (c *Client) takeInline(ctx context.Context) (bool, error) {
	local := c.local.Load()
	c.pullMu.Lock()
	es := c.offered
	i := 0
	for i < len(es) && es[i].GetSeq() <= local {
		i++
	}
	j := i
	for j < len(es) && es[j].GetSeq() == local+1+uint64(j-i) {
		j++
	}
	run := es[i:j]
	if j == len(es) {
		c.offered = nil
	} else {
		c.offered = es[j:]
	}
	c.pullMu.Unlock()
	if len(run) == 0 {
		return false, nil
	}
	if err := c.applyPage(ctx, &wire.SyncResponse{Entries: run}); err != nil {
		return false, err
	}
	c.stats.inline.Add(run[len(run)-1].GetSeq() - local)
	return true, nil
}

func (c *Client) signalPull() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// ackDelay is how long the pull loop waits before acknowledging what a
// round fetched or a Notify carried: a Sync of a later round acknowledges it
// too, so while pulled messages stream in few Ack requests are needed;
// entries taken inline are acknowledged only by this Ack.
const ackDelay = 25 * time.Millisecond

// gapWait is how long the pull loop leaves a gap below an answered own
// entry for the answers of concurrent sends to fill before it pulls.
const gapWait = 100 * time.Millisecond

// Sync pulls now and returns when the client has caught up with the mailbox
// (every message handed over, the seq saved and acknowledged), when ctx is
// done, or with the error that ended the round. While disconnected it waits
// for the next session. Messages are handed over as usual, so Sync must not
// be called from the goroutine that reads Messages() when more messages than
// the channel holds may be waiting.
func (c *Client) Sync(ctx context.Context) error {
	ch := make(chan error, 1)
	c.pullMu.Lock()
	c.waiters = append(c.waiters, ch)
	c.pullMu.Unlock()
	c.wakePull()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("client: sync: %w", context.Cause(ctx))
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// pullLoop owns the local seq. It runs a round on every wake: after a
// Welcome that shows new entries, on every Notify above the local seq, and
// for Sync.
func (c *Client) pullLoop() {
	defer c.wg.Done()
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	defer ackTimer.Stop()
	// armAck acknowledges what was handed over ackDelay from now, unless an
	// acknowledgement is already due sooner (a steady stream must not put
	// it off forever: inline entries are acknowledged by nothing else).
	armed := false
	armAck := func() {
		if !armed && c.saved.Load() > c.acked.Load() {
			ackTimer.Reset(ackDelay)
			armed = true
		}
	}
	// gapTimer bounds the wait for the answers that fill a gap below an
	// answered own entry (they come out of order when sends run at once).
	gapTimer := time.NewTimer(time.Hour)
	gapTimer.Stop()
	defer gapTimer.Stop()
	gapArmed, gapLocal := false, uint64(0) // gapLocal: the local seq when armed
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-ackTimer.C:
			armed = false
			c.ackCaughtUp(c.ctx)
			continue
		case <-gapTimer.C:
			gapArmed = false
			if local := c.local.Load(); c.answered.Load() > local {
				if local != gapLocal { // progress: wait once more
					gapTimer.Reset(gapWait)
					gapArmed, gapLocal = true, local
					continue
				}
				raise(&c.notified, c.answered.Load()) // no progress: pull what is missing
			}
		case <-c.wake:
		}
		c.pullMu.Lock()
		waiters := c.waiters
		c.waiters = nil
		c.pullMu.Unlock()
		took, err := c.takeInline(c.ctx)
		if err != nil {
			c.log.Warn("inline entries not applied", "seq", c.local.Load(), "err", err)
		}
		forced := c.forced.Swap(false)
		if !forced && len(waiters) == 0 && c.notified.Load() <= c.local.Load() {
			if local := c.local.Load(); c.answered.Load() > local && !gapArmed {
				gapTimer.Reset(gapWait)
				gapArmed, gapLocal = true, local
			}
			if took {
				armAck()
			} else {
				c.stats.staleWakes.Add(1)
			}
			continue
		}
		err = c.pull(c.ctx)
		if err == nil && len(waiters) > 0 {
			err = c.ackCaughtUp(c.ctx)
		}
		if err != nil && c.ctx.Err() == nil {
			c.log.Warn("pull failed", "seq", c.local.Load(), "err", err)
		}
		armAck()
		for _, w := range waiters {
			w <- err
		}
	}
}

func (c *Client) syncRequest(after uint64) *wire.Request {
	return &wire.Request{Req: &wire.Request_Sync{Sync: &wire.SyncRequest{After: after, Limit: uint32(c.cfg.SyncLimit)}}}
}

// pull is one round: pages until has_more is false. Each Sync acknowledges
// the seq it asks after; the pull loop acknowledges the last page.
func (c *Client) pull(ctx context.Context) error {
	stalls := 0
	for {
		before := c.local.Load()
		resp, err := c.fetchPage(ctx)
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || !we.ErrorCode().NeedsResync() {
				return err
			}
			moved, err := c.resync(ctx, we)
			if err != nil {
				return err
			}
			if !moved {
				stalls++
				if !c.sleep(c.backoff(stalls)) {
					return ErrClosed
				}
			}
			continue
		}
		if err := c.applyPage(ctx, resp); err != nil {
			return err
		}
		if !resp.GetHasMore() {
			return nil
		}
		if c.local.Load() == before {
			// has_more without progress: do not spin on a confused server.
			stalls++
			if !c.sleep(c.backoff(stalls)) {
				return ErrClosed
			}
		}
	}
}

// fetchPage returns the page after the local seq: the Sync pipelined with the
// Hello when the session has one, otherwise a new request.
func (c *Client) fetchPage(ctx context.Context) (*wire.SyncResponse, error) {
	attempt := func(ctx context.Context, s *session) (*wire.Response, error) {
		if p := s.pending.Swap(nil); p != nil {
			resp, err := s.readResponse(ctx, p.str)
			if err == nil {
				return resp, nil
			}
			if ctx.Err() != nil || s.conn.Context().Err() != nil {
				return nil, err
			}
			c.log.Debug("pipelined sync failed; asking again", "err", err)
		}
		c.stats.syncs.Add(1)
		after := c.local.Load()
		resp, err := s.roundTrip(ctx, c.syncRequest(after), true)
		if err == nil && resp.GetSync() != nil && after <= c.saved.Load() {
			c.noteAcked(after) // a Sync acknowledges the seq it asks after
		}
		return resp, err
	}
	resp, err := c.call(ctx, callOpts{name: "sync"}, attempt)
	if err != nil {
		return nil, err
	}
	r := resp.GetSync()
	if r == nil {
		return nil, errUnexpected("sync", resp)
	}
	return r, nil
}

// applyPage hands the page's new entries to the app in order and saves the
// new seq. Entries at or below the local seq are skipped, so the app sees
// every seq at most once per process.
func (c *Client) applyPage(ctx context.Context, p *wire.SyncResponse) error {
	local := c.local.Load()
	// In account mode the page can start above the local seq: another
	// device of the account acknowledged what lies between.
	if from := p.GetFrom(); from > local {
		local = from
		c.local.Store(local)
	}
	c.mu.Lock()
	self := c.user
	c.mu.Unlock()
	var interrupted error
	for _, e := range p.GetEntries() {
		seq := e.GetSeq()
		if seq <= local {
			continue
		}
		if seq != local+1 {
			c.log.Warn("sync page has a gap", "seq", local, "next", seq)
		}
		if !c.deliver(ctx, newMessage(e, self)) {
			interrupted = context.Cause(ctx)
			break
		}
		local = seq
		c.local.Store(local)
	}
	if err := c.persist(ctx, local); err != nil {
		return err
	}
	return interrupted
}

func (c *Client) deliver(ctx context.Context, m Message) bool {
	if c.cfg.OnMessage != nil {
		c.cfg.OnMessage(m)
		c.stats.messages.Add(1)
		return true
	}
	select {
	case c.msgs <- m:
		c.stats.messages.Add(1)
		return true
	case <-ctx.Done():
		return false
	}
}

// persist saves seq, retrying with backoff: nothing is reported to the
// server above what is saved. On Close it makes one last attempt.
func (c *Client) persist(ctx context.Context, seq uint64) error {
	if seq == c.saved.Load() {
		return nil
	}
	c.mu.Lock()
	st := c.store
	c.mu.Unlock()
	for n := 1; ; n++ {
		err := st.Save(seq)
		if err == nil {
			c.saved.Store(seq)
			return nil
		}
		c.log.Error("seq save failed", "seq", seq, "err", err, "attempt", n)
		if ctx.Err() != nil || !c.sleep(c.backoff(n)) {
			return fmt.Errorf("client: save seq %d: %w", seq, err)
		}
	}
}

// resync accepts the gap a RESYNC_NEEDED answer reports. It reports false
// when the answer did not concern the local seq (a pipelined Sync asked
// from an older seq): the caller asks again.
func (c *Client) resync(ctx context.Context, we *wire.Error) (bool, error) {
	old := c.local.Load()
	floor, head := we.GetFloor(), we.GetHead()
	var next uint64
	switch {
	case floor > 0 && old+1 < floor:
		next = floor - 1
	case old > head:
		next = head
	default:
		return false, nil
	}
	c.local.Store(next)
	if err := c.persist(ctx, next); err != nil {
		return false, err
	}
	c.stats.resyncs.Add(1)
	c.log.Warn("resync", "old_seq", old, "new_seq", next, "floor", floor, "head", head)
	c.emit(Event{Kind: EventResync, OldSeq: old, NewSeq: next})
	return true, nil
}

// ackCaughtUp acknowledges the local seq once caught up, unless the server
// already counts it. One attempt: the next Sync or Hello acknowledges too.
func (c *Client) ackCaughtUp(ctx context.Context) error {
	seq := c.saved.Load()
	if seq <= c.acked.Load() {
		return nil
	}
	req := &wire.Request{Req: &wire.Request_Ack{Ack: &wire.AckRequest{Seq: seq}}}
	resp, err := c.call(ctx, callOpts{name: "ack", noWait: true}, plain(req, true))
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("ack failed", "seq", seq, "err", err)
		}
		return nil
	}
	if r := resp.GetAck(); r != nil {
		c.stats.acks.Add(1)
		c.noteAcked(max(r.GetAcked(), seq))
	}
	return nil
}
