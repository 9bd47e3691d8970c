package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/wire"
)

// conn is one client connection and, once its Hello is accepted, its session.
//
// Goroutines: run (owned by ServeConn) reads the Hello, writes the Welcome
// and then reads the session stream; acceptRequests accepts request streams
// and starts one serveRequest per stream; a flush goroutine writes Notifies
// and GoAways on the session stream, started when there is something to
// write and gone when there is not (an idle connection has none). All of
// them end when the QUIC connection's context ends; run waits for
// acceptRequests and the flush, the server counts requests.
type conn struct {
	s   *Server
	qc  *quic.Conn
	ctx context.Context
	log *slog.Logger

	ready chan struct{} // closed once the Hello is accepted and id/sess are set
	id    Identity      // set before ready is closed
	sess  core.Session  // set before ready is closed

	// Session stream writer state. wmu guards open, stopped, flushing,
	// dirty, sent and pending; st and wbuf belong to the one flush running.
	wmu       sync.Mutex
	open      bool // the Welcome is written: flushes may run
	stopped   bool // run is returning: no more flushes
	flushing  bool // a flush goroutine is running
	dirty     bool // something to write since the flush last looked
	flushes   sync.WaitGroup
	st        *quic.Stream
	wbuf      []byte
	sent      uint64        // newest head written in a Notify (or the Welcome)
	inline    int           // bytes of entry bodies a Notify may carry; 0: none (client below capability 3)
	pending   []*core.Entry // new entries above sent, for the next Notify; bodies within inline bytes
	pendingN  int           // bytes of pending's bodies
	notifySeq atomic.Uint64 // newest head the backend reported
	// Capability 4: a send's answer tells the client its own new entry, so
	// no Notify is written for it. answers says the client speaks it;
	// sending counts this connection's sends whose answer is not written
	// yet, by client message id.
	answers bool
	sending map[core.ClientMsgID]int
	known   atomic.Uint64               // highest seq the client has been sent or reported
	goaway  atomic.Pointer[wire.GoAway] // a GoAway to write
	// goAwayOut is closed once a GoAway is on the session stream (or the
	// session writer has stopped), for the drain to wait on.
	goAwayOut  chan struct{}
	goAwayOnce sync.Once
	closeWith  atomic.Uint32 // after the GoAway, close with this code (0: don't)
}

func newConn(s *Server, qc *quic.Conn) *conn {
	id := s.nextID.Add(1)
	return &conn{
		s:         s,
		qc:        qc,
		ctx:       qc.Context(),
		log:       s.log.With("conn", id, "remote", qc.RemoteAddr().String()),
		ready:     make(chan struct{}),
		goAwayOut: make(chan struct{}),
	}
}

var _ core.Sink = (*conn)(nil)

// Notify implements core.Sink. The entry is kept and the head raised under
// one hold of wmu, so that a flush that sees the new head finds its entry.
func (c *conn) Notify(head core.Seq, e *core.Entry) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if e != nil && e.Seq == head {
		c.keep(e)
		if c.answers && e.From == c.id.User && e.FromDevice == c.id.Device && c.sending[e.ClientMsgID] > 0 {
			// The send's answer will tell the client: no flush for it. A
			// Notify that a later entry brings still carries it inline,
			// and endSends flushes after all if the answer fails.
			raise(&c.notifySeq, uint64(head))
			c.s.m.Add(MetricNotifiesAnswered, "", 1)
			return
		}
	}
	if raise(&c.notifySeq, uint64(head)) && !c.kickLocked() {
		c.s.m.Add(MetricNotifiesMerged, "", 1)
	}
}

// beginSends counts the sends of req (a send or a send_batch) as in flight
// on this connection, for Notify to recognise the entries they create.
func (c *conn) beginSends(req *wire.Request) {
	if !c.answers || !carriesSends(req) {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sending == nil {
		c.sending = make(map[core.ClientMsgID]int)
	}
	eachSend(req, func(id core.ClientMsgID) { c.sending[id]++ })
}

// endSends settles the sends of req once its answer resp is written
// (answered) or could not be (the stream failed). A written answer told the
// client the entries its sends created: one that continues what Notifies
// told needs no Notify, not even inline in a later one. A failed one told
// nothing: a flush writes the Notify that was left out.
func (c *conn) endSends(req *wire.Request, resp *wire.Response, answered bool) {
	if !c.answers || !carriesSends(req) {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	eachSend(req, func(id core.ClientMsgID) {
		if c.sending[id]--; c.sending[id] <= 0 {
			delete(c.sending, id)
		}
	})
	if !answered {
		c.kickLocked()
		return
	}
	if ok := resp.GetSend(); ok != nil {
		// One send, the common case: no list to sort.
		if ok.GetSeq() == c.sent+1 {
			c.sent = ok.GetSeq()
		}
		return
	}
	var seqs []uint64
	for _, r := range resp.GetSendBatch().GetResults() {
		if ok := r.GetOk(); ok != nil {
			seqs = append(seqs, ok.GetSeq())
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		if seq == c.sent+1 {
			c.sent = seq
		}
	}
}

// carriesSends reports whether req is a send or a send_batch.
func carriesSends(req *wire.Request) bool {
	switch req.Req.(type) {
	case *wire.Request_Send, *wire.Request_SendBatch:
		return true
	}
	return false
}

// eachSend calls f with the client message id of every send in req.
func eachSend(req *wire.Request, f func(core.ClientMsgID)) {
	switch r := req.Req.(type) {
	case *wire.Request_Send:
		f(core.ClientMsgID(r.Send.GetClientMsgId()))
	case *wire.Request_SendBatch:
		for _, sr := range r.SendBatch.GetSends() {
			f(core.ClientMsgID(sr.GetClientMsgId()))
		}
	}
}

// raise sets a to v when v is higher, and reports whether it did.
func raise(a *atomic.Uint64, v uint64) bool {
	for {
		old := a.Load()
		if v <= old {
			return false
		}
		if a.CompareAndSwap(old, v) {
			return true
		}
	}
}

// keep holds e for the next Notify when the client takes entries inline
// and e fits; wmu is held. Entries are kept in any order (concurrent
// appends notify out of order); the oldest go when the bytes would exceed
// the bound.
func (c *conn) keep(e *core.Entry) {
	if c.inline <= 0 || len(e.Body) > c.inline || uint64(e.Seq) <= c.sent {
		return
	}
	for c.pendingN+len(e.Body) > c.inline && len(c.pending) > 0 {
		c.pendingN -= len(c.pending[0].Body)
		c.pending = c.pending[1:]
	}
	c.pending = append(c.pending, e)
	c.pendingN += len(e.Body)
}

// inlineRun returns the kept entries (after, head] when all of them are
// kept, in order; nil otherwise. It drops the kept entries at or below head.
func (c *conn) inlineRun(after, head uint64) []*wire.Entry {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.pending) == 0 {
		return nil
	}
	var run []*wire.Entry
	if head > after && head-after <= uint64(len(c.pending)) {
		run = make([]*wire.Entry, head-after)
		for _, e := range c.pending {
			if s := uint64(e.Seq); s > after && s <= head {
				run[s-after-1] = toWireEntry(e)
			}
		}
		for _, w := range run {
			if w == nil {
				run = nil
				break
			}
		}
	}
	kept := c.pending[:0]
	c.pendingN = 0
	for _, e := range c.pending {
		if uint64(e.Seq) > head {
			kept = append(kept, e)
			c.pendingN += len(e.Body)
		}
	}
	clear(c.pending[len(kept):])
	c.pending = kept
	if len(kept) == 0 {
		c.pending = nil
	}
	return run
}

// kick makes a flush write what is pending, starting one unless one is
// already running (then it reports false: the running one will see it).
func (c *conn) kick() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.kickLocked()
}

// kickLocked is kick with wmu held.
func (c *conn) kickLocked() bool {
	c.dirty = true
	if c.flushing || !c.open || c.stopped {
		return !c.flushing
	}
	c.flushing = true
	c.flushes.Add(1)
	go c.flush()
	return true
}

// startFlushes lets flushes write on c.st, after the Welcome (which
// announced head welcomed), and runs one for what arrived before it.
func (c *conn) startFlushes(welcomed uint64) {
	c.wmu.Lock()
	c.sent, c.open = welcomed, true
	c.wmu.Unlock()
	c.kick()
}

// stopFlushes stops flushes and waits for the running one. The drain stops
// waiting for this connection's GoAway.
func (c *conn) stopFlushes() {
	c.wmu.Lock()
	c.stopped = true
	c.wmu.Unlock()
	c.flushes.Wait()
	c.goAwayWritten()
}

// flush writes the pending GoAway and Notify, until nothing more is
// pending.
func (c *conn) flush() {
	defer c.flushes.Done()
	for {
		c.wmu.Lock()
		if !c.dirty || c.stopped {
			c.flushing = false
			c.wmu.Unlock()
			return
		}
		c.dirty = false
		c.wmu.Unlock()
		if !c.writePending() {
			c.wmu.Lock()
			c.flushing = false
			c.wmu.Unlock()
			return
		}
	}
}

// writePending writes the GoAway, if one is pending, and a Notify when the
// newest head is news to the client: notifies are coalesced, only the newest
// head is written, and none the client already has. It reports false when
// the session is over.
func (c *conn) writePending() bool {
	if ga := c.goaway.Swap(nil); ga != nil {
		if !c.writeDown(&wire.SessionDown{Msg: &wire.SessionDown_GoAway{GoAway: ga}}) {
			return false
		}
		c.goAwayWritten()
		if code := wire.Code(c.closeWith.Load()); code != 0 {
			c.s.m.Add(MetricClosed, code.String(), 1)
			c.close(code, ga.GetMessage())
			return false
		}
	}
	c.wmu.Lock()
	sent := c.sent
	c.wmu.Unlock()
	if seq := c.notifySeq.Load(); seq > sent && seq > c.known.Load() {
		n := &wire.Notify{Seq: seq, Entries: c.inlineRun(max(sent, c.known.Load()), seq)}
		if !c.writeDown(&wire.SessionDown{Msg: &wire.SessionDown_Notify{Notify: n}}) {
			return false
		}
		c.wmu.Lock()
		c.sent = seq
		c.wmu.Unlock()
		c.s.m.Add(MetricNotifiesSent, "", 1)
		if len(n.Entries) > 0 {
			c.s.m.Add(MetricNotifyEntries, "", float64(len(n.Entries)))
		}
	}
	return true
}

// writeDown writes one session frame; on failure it closes the connection.
func (c *conn) writeDown(m *wire.SessionDown) bool {
	var err error
	c.wbuf, err = wire.AppendFrame(c.wbuf[:0], m)
	if err == nil {
		c.st.SetWriteDeadline(time.Now().Add(c.s.cfg.RequestTimeout))
		_, err = c.st.Write(c.wbuf)
	}
	if cap(c.wbuf) > 256 {
		c.wbuf = nil // a Welcome or a long GoAway message; idle conns keep little
	}
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Debug("session write failed", "err", err)
			c.close(wire.CodeUnavailable, "session stream write failed")
		}
		return false
	}
	return true
}

// Replaced implements core.Sink: a newer session of the device took over.
func (c *conn) Replaced() {
	c.goAway(wire.CodeSessionReplaced, "a newer session of this device took over", 0)
}

// goAway makes the writer send a GoAway. With SESSION_REPLACED the writer
// closes the connection after it; otherwise the client is expected to leave
// after reconnectAfter and the server closes what remains when it shuts down.
func (c *conn) goAway(code wire.Code, msg string, reconnectAfter time.Duration) {
	if code == wire.CodeSessionReplaced {
		c.closeWith.Store(uint32(code))
	}
	c.goaway.Store(&wire.GoAway{Code: uint32(code), Message: msg, ReconnectAfterMs: wire.Millis(reconnectAfter)})
	c.kick()
}

func (c *conn) goAwayWritten() { c.goAwayOnce.Do(func() { close(c.goAwayOut) }) }

func (c *conn) close(code wire.Code, msg string) {
	c.qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

// failLinger bounds how long a failing connection waits for its handshake
// to complete and for the client to read the Error frame.
const failLinger = 250 * time.Millisecond

// fail writes an Error on the session stream (best effort) and closes the
// connection with the same code.
//
// Before the handshake completes (a Hello in 0-RTT data), a CONNECTION_CLOSE
// can only be sent as a bare APPLICATION_ERROR without the code (RFC 9000
// §10.2.3), so fail first waits, briefly, for the handshake; then it writes
// the Error, ends the stream and gives the client a moment to read it and
// close first.
func (c *conn) fail(st *quic.Stream, code wire.Code, msg string) {
	c.s.m.Add(MetricClosed, code.String(), 1)
	c.log.Debug("closing connection", "code", code.String(), "reason", msg)
	wait := func(ch <-chan struct{}) {
		t := time.NewTimer(failLinger)
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
		case <-c.ctx.Done():
		}
	}
	wait(c.qc.HandshakeComplete())
	if st != nil {
		st.SetWriteDeadline(time.Now().Add(failLinger))
		if wire.WriteFrame(st, &wire.SessionDown{Msg: &wire.SessionDown_Error{Error: wire.NewError(code, msg)}}) == nil {
			st.Close()
			wait(nil) // until the client reads the Error and closes, or the bound
		}
	}
	c.close(code, msg)
}

func (c *conn) run() {
	cfg := &c.s.cfg
	if c.qc.ConnectionState().Used0RTT {
		c.s.m.Add(MetricZeroRTT, "", 1)
	}
	helloCtx, cancel := context.WithTimeout(c.ctx, cfg.HelloTimeout)
	st, err := c.qc.AcceptStream(helloCtx)
	cancel()
	if err != nil {
		if c.ctx.Err() == nil {
			// Retryable: under a reconnect storm a well-behaved client
			// can be this slow; it should come back, not give up.
			c.fail(nil, wire.CodeTimeout, "no session stream within the hello timeout")
		}
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	// Requests may arrive before the Hello is through (0-RTT pipelining);
	// they wait for ready.
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.acceptRequests()
	}()

	// The Hello's work (token check, attach: crypto and storage reads)
	// runs deep; on a goroutine of its own its stack goes when it is done,
	// while this one, which lives as long as the connection, stays small.
	var (
		welcome *wire.Welcome
		ok      bool
		helloed = make(chan struct{})
	)
	go func() {
		defer close(helloed)
		welcome, ok = c.hello(st)
	}()
	<-helloed
	if !ok {
		return
	}
	defer c.sess.Detach()
	close(c.ready)
	c.st = st
	if !c.writeDown(&wire.SessionDown{Msg: &wire.SessionDown_Welcome{Welcome: welcome}}) {
		c.goAwayWritten()
		return
	}
	c.startFlushes(welcome.SeqSvr)
	defer c.stopFlushes()
	c.readSession(st)
}

// hello reads and checks the Hello, attaches the session and writes the
// Welcome. On failure it closes the connection and returns false.
func (c *conn) hello(st *quic.Stream) (*wire.Welcome, bool) {
	cfg := &c.s.cfg
	st.SetReadDeadline(time.Now().Add(cfg.HelloTimeout))
	var up wire.SessionUp
	if _, err := wire.ReadMessage(st, cfg.MaxFrameSize, nil, &up); err != nil {
		code := readErrorCode(err)
		c.s.m.Add(MetricHandshakes, code.String(), 1)
		c.fail(st, code, "reading hello: "+err.Error())
		return nil, false
	}
	st.SetReadDeadline(time.Time{})
	h := up.GetHello()
	if h == nil {
		c.s.m.Add(MetricHandshakes, wire.CodeProtocolViolation.String(), 1)
		c.fail(st, wire.CodeProtocolViolation, "first session frame must be a Hello")
		return nil, false
	}
	id, err := cfg.Auth.Authenticate(h.GetToken())
	if err != nil {
		code := toWireError(err).ErrorCode()
		if code != wire.CodeTokenExpired {
			code = wire.CodeUnauthenticated
		}
		c.s.m.Add(MetricHandshakes, code.String(), 1)
		c.fail(st, code, err.Error())
		return nil, false
	}
	if h.GetDevice() != "" && core.DeviceID(h.GetDevice()) != id.Device {
		c.s.m.Add(MetricHandshakes, wire.CodeForbidden.String(), 1)
		c.fail(st, wire.CodeForbidden, "hello device does not match the token")
		return nil, false
	}
	c.id = id
	c.log = c.log.With("device", string(id.Device))
	info := core.SessionInfo{
		User:     id.User,
		Device:   id.Device,
		Platform: toCorePlatform(h.GetPlatform()),
		AppState: toCoreAppState(h.GetAppState()),
		SeqCli:   core.Seq(h.GetSeqCli()),
		Resume:   h.GetResumeSession(),
		Push:     toCorePush(h.GetPush()),
	}
	c.wmu.Lock() // before Attach: notifies may follow at once
	if h.GetCapabilityVersion() >= 3 && cfg.InlineBytes > 0 {
		c.inline = cfg.InlineBytes
	}
	c.answers = h.GetCapabilityVersion() >= 4
	c.wmu.Unlock()
	ctx, cancel := context.WithTimeout(c.ctx, cfg.RequestTimeout)
	sess, w, err := c.s.backend.Attach(ctx, info, c)
	cancel()
	if err != nil {
		we := toWireError(err)
		c.s.m.Add(MetricHandshakes, we.ErrorCode().String(), 1)
		c.fail(st, we.ErrorCode(), we.GetMessage())
		return nil, false
	}
	c.sess = sess
	c.s.m.Add(MetricHandshakes, "ok", 1)
	c.known.Store(max(uint64(w.Head), h.GetSeqCli()))
	return &wire.Welcome{
		SessionId:         w.SessionID,
		SeqSvr:            uint64(w.Head),
		AckedSeq:          uint64(w.Acked),
		KeepaliveMs:       wire.Millis(cfg.KeepAlive),
		ServerTimeMs:      cfg.Now().UnixMilli(),
		CapabilityVersion: min(h.GetCapabilityVersion(), wire.CapabilityVersion),
		MaxFrameSize:      uint32(cfg.MaxFrameSize),
		AckMode:           toWireAckMode(w.Mode),
		User:              string(id.User),
		Device:            string(id.Device),
		Floor:             uint64(w.Floor),
	}, true
}

// readSession reads the client's session frames after the Hello.
func (c *conn) readSession(st *quic.Stream) {
	var buf []byte
	for {
		var up wire.SessionUp
		var err error
		buf, err = wire.ReadMessage(st, c.s.cfg.MaxFrameSize, buf, &up)
		if err != nil {
			if c.ctx.Err() != nil || connGone(err) {
				return
			}
			var se *quic.StreamError
			if errors.Is(err, io.EOF) || errors.As(err, &se) && se.Remote {
				c.s.m.Add(MetricClosed, "client_closed_session", 1)
				c.close(wire.CodeOK, "session stream closed")
				return
			}
			c.fail(st, readErrorCode(err), "reading session stream: "+err.Error())
			return
		}
		switch m := up.Msg.(type) {
		case *wire.SessionUp_AppState:
			c.sess.SetAppState(toCoreAppState(m.AppState.GetAppState()))
		case *wire.SessionUp_Hello:
			c.fail(st, wire.CodeProtocolViolation, "second Hello on the session stream")
			return
		default:
			// Unknown session frames are skipped.
		}
	}
}

func (c *conn) acceptRequests() {
	for {
		st, err := c.qc.AcceptStream(c.ctx)
		if err != nil {
			return
		}
		c.s.inflight.Add(1)
		go c.serveRequest(st)
	}
}

// connGone reports whether err, from a stream read, says that the whole
// connection is over (closed by either side, timed out, reset): the
// stream's reader sees that before the connection's context is done.
func connGone(err error) bool {
	var (
		ae *quic.ApplicationError
		te *quic.TransportError
		it *quic.IdleTimeoutError
		ht *quic.HandshakeTimeoutError
		sr *quic.StatelessResetError
	)
	return errors.As(err, &ae) || errors.As(err, &te) || errors.As(err, &it) || errors.As(err, &ht) || errors.As(err, &sr)
}

// readErrorCode maps an error reading a frame to the code the client gets.
func readErrorCode(err error) wire.Code {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return wire.CodeTimeout
	}
	if errors.Is(err, io.EOF) {
		return wire.CodeMalformed
	}
	return wire.CodeOf(err)
}

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// serveRequest serves the one request of a request stream.
func (c *conn) serveRequest(st *quic.Stream) {
	defer c.s.inflight.Add(-1)
	select {
	case <-c.ready:
	case <-c.ctx.Done():
		return
	}
	cfg := &c.s.cfg
	start := time.Now()
	deadline := start.Add(cfg.RequestTimeout)
	st.SetDeadline(deadline)
	bufp := framePool.Get().(*[]byte)
	defer framePool.Put(bufp)

	var resp wire.Response
	frame, err := wire.ReadFrame(st, cfg.MaxFrameSize, (*bufp)[:0])
	if frame != nil {
		*bufp = frame[:0]
	}
	var se *quic.StreamError
	if err != nil && (errors.As(err, &se) && se.Remote || connGone(err) || c.ctx.Err() != nil) {
		// The client abandoned the request (timed out, moved, closing) or
		// the connection is gone: nobody reads an answer.
		st.CancelWrite(quic.StreamErrorCode(wire.CodeOK))
		c.s.m.Add(MetricRequests, "abandoned", 1)
		return
	}
	var req wire.Request
	if err == nil {
		err = wire.Unmarshal(frame, &req)
	}
	kind := "invalid"
	if err != nil {
		code := readErrorCode(err)
		resp.Resp = &wire.Response_Error{Error: wire.NewError(code, err.Error())}
		if code == wire.CodeFrameTooLarge {
			defer st.CancelRead(quic.StreamErrorCode(code))
		}
	} else {
		c.beginSends(&req)
		ctx, cancel := context.WithDeadline(c.ctx, deadline)
		kind = c.dispatch(ctx, &req, &resp)
		cancel()
	}
	c.s.m.Add(MetricRequests, kind, 1)
	if e := resp.GetError(); e != nil {
		c.noteError(kind, e)
	}
	out, err := wire.AppendFrame((*bufp)[:0], &resp)
	if err == nil {
		*bufp = out[:0]
		_, err = st.Write(out)
	}
	c.endSends(&req, &resp, err == nil)
	if err != nil {
		st.CancelWrite(quic.StreamErrorCode(wire.CodeInternal))
		return
	}
	st.Close()
	c.s.m.Observe(MetricRequestSeconds, time.Since(start).Seconds())
}

// noteError counts a request's error by code and logs internal faults.
func (c *conn) noteError(kind string, e *wire.Error) {
	c.s.m.Add(MetricRequestErrors, e.ErrorCode().String(), 1)
	if e.ErrorCode() == wire.CodeInternal {
		c.log.Error("request failed", "kind", kind, "err", e.GetMessage())
	}
}

// send hands one send to the backend.
func (c *conn) send(ctx context.Context, r *wire.SendRequest) (*wire.SendResponse, error) {
	res, err := c.s.backend.Send(ctx, core.SendRequest{
		From:        c.id.User,
		Device:      c.id.Device,
		ClientMsgID: core.ClientMsgID(r.GetClientMsgId()),
		To:          core.UserID(r.GetUser()),
		Group:       core.GroupID(r.GetGroup()),
		Body:        r.GetBody(),
	})
	if err != nil {
		return nil, err
	}
	return &wire.SendResponse{Id: res.ID[:], Seq: uint64(res.Seq), SentAtMs: res.SentAt.UnixMilli(), Duplicate: res.Duplicate}, nil
}

// sendBatch runs a batch's sends concurrently, so that the storage writer
// packs them into its transactions as it would sends on separate streams,
// and returns one result per send in the request's order.
func (c *conn) sendBatch(ctx context.Context, sends []*wire.SendRequest) ([]*wire.SendResult, error) {
	switch {
	case len(sends) == 0:
		return nil, fmt.Errorf("%w: an empty send batch", core.ErrInvalid)
	case len(sends) > wire.MaxSendBatch:
		return nil, fmt.Errorf("%w: %d sends in a batch (at most %d)", core.ErrInvalid, len(sends), wire.MaxSendBatch)
	}
	results := make([]*wire.SendResult, len(sends))
	one := func(i int) {
		ok, err := c.send(ctx, sends[i])
		if err != nil {
			we := toWireError(err)
			results[i] = &wire.SendResult{Result: &wire.SendResult_Error{Error: we}}
			c.noteError("send_batch", we)
			return
		}
		results[i] = &wire.SendResult{Result: &wire.SendResult_Ok{Ok: ok}}
	}
	var wg sync.WaitGroup
	for i := 1; i < len(sends); i++ {
		wg.Go(func() { one(i) })
	}
	one(0)
	wg.Wait()
	return results, nil
}

// dispatch serves one decoded request into resp and returns its kind.
func (c *conn) dispatch(ctx context.Context, req *wire.Request, resp *wire.Response) string {
	fail := func(err error) {
		resp.Resp = &wire.Response_Error{Error: toWireError(err)}
	}
	u, d := c.id.User, c.id.Device
	switch r := req.Req.(type) {
	case *wire.Request_Send:
		ok, err := c.send(ctx, r.Send)
		if err != nil {
			fail(err)
			return "send"
		}
		resp.Resp = &wire.Response_Send{Send: ok}
		return "send"
	case *wire.Request_SendBatch:
		results, err := c.sendBatch(ctx, r.SendBatch.GetSends())
		if err != nil {
			fail(err)
			return "send_batch"
		}
		resp.Resp = &wire.Response_SendBatch{SendBatch: &wire.SendBatchResponse{Results: results}}
		return "send_batch"
	case *wire.Request_Sync:
		if r.Sync.GetUser() != "" && core.UserID(r.Sync.GetUser()) != u {
			fail(fmt.Errorf("%w: a session reads only its own mailbox", core.ErrForbidden))
			return "sync"
		}
		c.sync(ctx, r.Sync, resp)
		return "sync"
	case *wire.Request_Ack:
		acked, err := c.s.backend.Ack(ctx, u, d, core.Seq(r.Ack.GetSeq()))
		if err != nil {
			fail(err)
			return "ack"
		}
		c.raiseKnown(uint64(r.Ack.GetSeq()))
		resp.Resp = &wire.Response_Ack{Ack: &wire.AckResponse{Acked: uint64(acked)}}
		return "ack"
	case *wire.Request_Group:
		members, err := c.group(ctx, r.Group)
		if err != nil {
			fail(err)
			return "group"
		}
		resp.Resp = &wire.Response_Group{Group: &wire.GroupResponse{Members: toWireUsers(members)}}
		return "group"
	case *wire.Request_Push:
		var err error
		if r.Push.GetRemove() {
			err = c.s.backend.UnregisterPush(ctx, u, d)
		} else if reg := toCorePush(r.Push.GetRegistration()); reg == nil {
			err = fmt.Errorf("%w: a push request needs a registration or remove", core.ErrInvalid)
		} else {
			err = c.s.backend.RegisterPush(ctx, u, d, *reg)
		}
		if err != nil {
			fail(err)
			return "push"
		}
		resp.Resp = &wire.Response_Push{Push: &wire.PushResponse{}}
		return "push"
	case *wire.Request_Block:
		if err := c.s.backend.Block(ctx, u, core.UserID(r.Block.GetUser()), r.Block.GetUnblock()); err != nil {
			fail(err)
			return "block"
		}
		resp.Resp = &wire.Response_Block{Block: &wire.BlockResponse{}}
		return "block"
	}
	resp.Resp = &wire.Response_Error{Error: wire.NewError(wire.CodeUnsupported, "unknown request kind")}
	return "unknown"
}

// syncOverhead is room kept in a Sync response frame for everything but the
// entries.
const syncOverhead = 64

func (c *conn) sync(ctx context.Context, req *wire.SyncRequest, resp *wire.Response) {
	budget := c.s.cfg.MaxFrameSize - syncOverhead
	res, err := c.s.backend.Sync(ctx, core.SyncRequest{
		User:     c.id.User,
		Device:   c.id.Device,
		After:    core.Seq(req.GetAfter()),
		Limit:    int(req.GetLimit()),
		MaxBytes: budget,
	})
	if err != nil {
		resp.Resp = &wire.Response_Error{Error: toWireError(err)}
		return
	}
	out := &wire.SyncResponse{Head: uint64(res.Head), HasMore: res.HasMore, Floor: uint64(res.Floor), From: uint64(res.From)}
	size := 0
	for i := range res.Entries {
		we := toWireEntry(&res.Entries[i])
		size += we.SizeInSyncResponse()
		if size > budget && len(out.Entries) > 0 {
			out.HasMore = true
			break
		}
		out.Entries = append(out.Entries, we)
	}
	if n := len(out.Entries); n > 0 {
		c.raiseKnown(out.Entries[n-1].Seq)
	} else {
		c.raiseKnown(req.GetAfter())
	}
	resp.Resp = &wire.Response_Sync{Sync: out}
}

func (c *conn) raiseKnown(seq uint64) { raise(&c.known, seq) }

func (c *conn) group(ctx context.Context, r *wire.GroupRequest) ([]core.UserID, error) {
	u, g, members := c.id.User, core.GroupID(r.GetGroup()), toCoreUsers(r.GetMembers())
	switch r.GetOp() {
	case wire.GroupRequest_OP_CREATE:
		return c.s.backend.CreateGroup(ctx, u, g, members)
	case wire.GroupRequest_OP_ADD:
		return c.s.backend.AddMembers(ctx, u, g, members)
	case wire.GroupRequest_OP_REMOVE:
		return c.s.backend.RemoveMembers(ctx, u, g, members)
	case wire.GroupRequest_OP_MEMBERS:
		return c.s.backend.Members(ctx, u, g)
	}
	return nil, fmt.Errorf("%w: unknown group op %d", core.ErrInvalid, r.GetOp())
}
