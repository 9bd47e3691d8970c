package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/ternhq/tern/wire"
)

// Send batching. Concurrent sends share request streams: a send goes out at
// once while fewer than Config.SendsInFlight send requests are in flight;
// otherwise it waits for one of them to finish, and every send that waited
// goes in the next request, a send_batch of up to Config.SendBatch sends.
// A lone send never waits for company, so batching adds no delay; under
// load it saves a stream, a frame and most packets per message.

// batchBytes bounds the encoded sends of one batch, well below any frame
// limit a server would announce; a send larger than that goes alone.
const batchBytes = 32 << 10

// queuedSend is a send waiting for, or riding in, a batch.
type queuedSend struct {
	ctx  context.Context
	req  *wire.SendRequest
	size int
	done chan sendOutcome // cap 1; written once
	// last is the error of the latest attempt that carried the send, for
	// the error returned when the caller's ctx ends first.
	last atomic.Pointer[error]
}

// sendOutcome is what a batch did for one send: an answer, a terminal
// error, or alone: "send it on a stream of its own" (a retryable error of
// its own, such as RATE_LIMITED, which the single-send path waits out).
type sendOutcome struct {
	resp  *wire.SendResponse
	err   error
	alone bool
}

// batcher owns the send queue and the goroutines that drain it.
type batcher struct {
	c        *Client
	max      int // sends per request
	inFlight int // requests at once

	mu      sync.Mutex
	queue   []*queuedSend
	running int
	wg      sync.WaitGroup
}

// submit hands q to the batcher. When a request slot is free and no send
// is waiting, q takes the slot and submit runs its request on the caller's
// goroutine: a lone send needs no other goroutine (whose stack would grow
// through the whole request path, send after send) and no handoff. Else q
// queues, and a runner starts when a slot is free. submit reports false
// once the client is closed.
func (b *batcher) submit(q *queuedSend) bool {
	b.c.mu.Lock()
	closed := b.c.closed
	inline, start := false, false
	if !closed {
		b.mu.Lock()
		if b.running < b.inFlight {
			b.running++
			b.wg.Add(1)
			inline = len(b.queue) == 0
			start = !inline
		}
		if !inline {
			b.queue = append(b.queue, q)
		}
		b.mu.Unlock()
	}
	b.c.mu.Unlock()
	switch {
	case inline:
		b.send([]*queuedSend{q})
		b.handOff()
	case start:
		go b.run()
	}
	return !closed
}

// handOff frees the slot of a send that ran inline, or passes it to a
// runner for the sends that queued meanwhile.
func (b *batcher) handOff() {
	b.mu.Lock()
	queued := len(b.queue) > 0
	if !queued {
		b.running--
	}
	b.mu.Unlock()
	if queued {
		go b.run()
	} else {
		b.wg.Done()
	}
}

// run sends batches until the queue is empty, then frees its slot.
func (b *batcher) run() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		batch := b.take()
		if len(batch) == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.send(batch)
	}
}

// take removes the next batch from the queue: up to max sends and
// batchBytes (at least one send), skipping sends whose caller gave up.
// b.mu is held.
func (b *batcher) take() []*queuedSend {
	var batch []*queuedSend
	n, bytes := 0, 0
	for ; n < len(b.queue) && len(batch) < b.max; n++ {
		q := b.queue[n]
		if q.ctx.Err() != nil {
			continue
		}
		if len(batch) > 0 && bytes+q.size > batchBytes {
			break
		}
		batch = append(batch, q)
		bytes += q.size
	}
	clear(b.queue[:n])
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil
	}
	return batch
}

// batchContext ends when every send of the batch has been given up by its
// caller, or when the client closes.
func (b *batcher) batchContext(batch []*queuedSend) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(b.c.ctx)
	var left atomic.Int32
	left.Store(int32(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, q := range batch {
		stops[i] = context.AfterFunc(q.ctx, func() {
			if left.Add(-1) == 0 {
				cancel(context.Cause(q.ctx))
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel(nil)
	}
}

// noting wraps attempt to record each failed attempt's error in batch.
func noting(batch []*queuedSend, attempt attemptFunc) attemptFunc {
	return func(ctx context.Context, s *session) (*wire.Response, error) {
		resp, err := attempt(ctx, s)
		if err == nil && resp.GetError() != nil {
			err = resp.GetError()
		}
		if err != nil && ctx.Err() == nil {
			for _, q := range batch {
				q.last.Store(&err)
			}
		}
		return resp, err
	}
}

// send runs one request for batch and hands each send its outcome.
func (b *batcher) send(batch []*queuedSend) {
	ctx, done := b.batchContext(batch)
	defer done()
	if len(batch) == 1 {
		batch[0].done <- b.c.sendAlone(ctx, noting(batch, plain(sendRequest(batch[0].req), true)))
		return
	}
	sends := make([]*wire.SendRequest, len(batch))
	for i, q := range batch {
		sends[i] = q.req
	}
	req := &wire.Request{Req: &wire.Request_SendBatch{SendBatch: &wire.SendBatchRequest{Sends: sends}}}
	b.c.stats.sendBatches.Add(1)
	resp, err := b.c.call(ctx, b.c.sendOpts(), noting(batch, func(ctx context.Context, s *session) (*wire.Response, error) {
		if s.welcome.GetCapabilityVersion() < 2 {
			return sendEach(ctx, s, sends)
		}
		return s.roundTrip(ctx, req, true)
	}))
	var results []*wire.SendResult
	if err == nil {
		results = resp.GetSendBatch().GetResults()
		if len(results) != len(batch) {
			err = errUnexpected("send", resp)
		}
	}
	for i, q := range batch {
		switch {
		case err != nil:
			q.done <- sendOutcome{err: err}
		case results[i].GetOk() != nil:
			q.done <- sendOutcome{resp: results[i].GetOk()}
		case results[i].GetError() == nil:
			q.done <- sendOutcome{err: errUnexpected("send", resp)}
		case results[i].GetError().ErrorCode().Retryable():
			q.done <- sendOutcome{alone: true}
		default:
			q.done <- sendOutcome{err: callErr("send", results[i].GetError(), nil)}
		}
	}
}

func sendRequest(sr *wire.SendRequest) *wire.Request {
	return &wire.Request{Req: &wire.Request_Send{Send: sr}}
}

func (c *Client) sendOpts() callOpts {
	return callOpts{name: "send", retries: &c.stats.sendRetries}
}

// sendAlone runs a send request of its own to its answer.
func (c *Client) sendAlone(ctx context.Context, attempt attemptFunc) sendOutcome {
	resp, err := c.call(ctx, c.sendOpts(), attempt)
	if err != nil {
		return sendOutcome{err: err}
	}
	r := resp.GetSend()
	if r == nil {
		return sendOutcome{err: errUnexpected("send", resp)}
	}
	return sendOutcome{resp: r}
}

// sendEach is a batch's attempt on a server older than send_batch: one
// stream per send, all at once. A send that fails on its stream fails the
// attempt, which call repeats whole (sends are idempotent).
func sendEach(ctx context.Context, s *session, sends []*wire.SendRequest) (*wire.Response, error) {
	results := make([]*wire.SendResult, len(sends))
	errs := make([]error, len(sends))
	var wg sync.WaitGroup
	for i, sr := range sends {
		wg.Go(func() {
			resp, err := s.roundTrip(ctx, sendRequest(sr), true)
			switch {
			case err != nil:
				errs[i] = err
			case resp.GetError() != nil:
				results[i] = &wire.SendResult{Result: &wire.SendResult_Error{Error: resp.GetError()}}
			case resp.GetSend() != nil:
				results[i] = &wire.SendResult{Result: &wire.SendResult_Ok{Ok: resp.GetSend()}}
			default:
				errs[i] = errUnexpected("send", resp)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &wire.Response{Resp: &wire.Response_SendBatch{SendBatch: &wire.SendBatchResponse{Results: results}}}, nil
}

// sendQueued sends sr through the batcher, falling back to a request of its
// own when the batch says so.
func (c *Client) sendQueued(ctx context.Context, sr *wire.SendRequest) (*wire.SendResponse, error) {
	q := &queuedSend{ctx: ctx, req: sr, size: wire.Size(sr), done: make(chan sendOutcome, 1)}
	if !c.batch.submit(q) {
		return nil, callErr("send", ErrClosed, nil)
	}
	var out sendOutcome
	select {
	case out = <-q.done:
	case <-ctx.Done():
		select {
		case out = <-q.done: // answered as ctx ended: the answer wins
			if !out.alone {
				return out.resp, out.err
			}
		default:
		}
		var last error
		if p := q.last.Load(); p != nil {
			last = *p
		}
		return nil, callErr("send", context.Cause(ctx), last)
	}
	if out.alone {
		out = c.sendAlone(ctx, plain(sendRequest(sr), true))
	}
	return out.resp, out.err
}
