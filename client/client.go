package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ternhq/tern/wire"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client: closed")

// Client is a connection to a Tern edge that survives network changes: it
// reconnects with backoff, pulls the mailbox after every notify and hands the
// messages to the app in seq order. A Client is safe for concurrent use.
type Client struct {
	cfg      Config
	log      *slog.Logger
	tlsConf  *tls.Config
	tickets  *sessionCache // tlsConf's session cache
	quicConf *quic.Config
	stats    counters

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the run and pull loops
	first  chan error     // the first connection's outcome, read by Dial
	halted chan struct{}  // closed by Close or a terminal failure
	halt   sync.Once

	mu        sync.Mutex
	sess      *session      // the published session; nil while disconnected
	ready     chan struct{} // closed when a session is published
	fatal     error         // why the client stopped; nil while it runs
	closed    bool
	tr        *quic.Transport   // dials use it
	retired   []*quic.Transport // left by migrations; closed between sessions
	store     SeqStore
	user      string
	device    string
	appState  wire.AppState
	push      *wire.PushRegistration // sent in every Hello; SetPush and Logout change it
	keepalive time.Duration          // the server's hint from the last Welcome
	session   string                 // the session id of the last Welcome, resumed by the next Hello
	lastErr   error                  // the last connection failure, for Dial's error

	// local is the newest seq handed to the app (written by the pull loop
	// only), saved the newest persisted to the store, acked the newest the
	// server is known to count as acknowledged.
	local atomic.Uint64
	saved atomic.Uint64
	acked atomic.Uint64
	// notified is the highest seq a Notify announced; forced says that a
	// wake needs a round whatever notified says (a new session, a move).
	notified atomic.Uint64
	forced   atomic.Bool
	// answered is the highest seq of the client's own entries that send
	// answers announced (capability 4: no Notify comes for them). A gap
	// below one is left a moment for the answers still on their way before
	// the pull loop pulls it.
	answered atomic.Uint64

	wake    chan struct{} // cap 1: asks the pull loop for a round
	batch   *batcher      // packs concurrent sends into requests
	pullMu  sync.Mutex
	waiters []chan error  // Sync calls waiting for the next complete round
	offered []*wire.Entry // entries Notifies and send answers carried, in seq order, for the pull loop
	msgs    chan Message  // nil when Config.OnMessage is set

	eventMu   sync.Mutex
	migrateMu sync.Mutex
	closeOnce sync.Once
}

// Dial connects to cfg.Addr and waits for the server's Welcome. Transient
// failures (network, UNAVAILABLE...) are retried with backoff until ctx is
// done; terminal ones (UNAUTHENTICATED, TOKEN_EXPIRED without a TokenFunc
// that fixes it...) are returned at once as a *wire.Error. After Dial returns
// a Client, its background loop keeps the connection up until Close.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tlsConf, tickets := cfg.tlsConfig()
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger.With("addr", cfg.Addr),
		tlsConf:  tlsConf,
		tickets:  tickets,
		quicConf: cfg.quicConfig(),
		first:    make(chan error, 1),
		halted:   make(chan struct{}),
		ready:    make(chan struct{}),
		appState: cfg.AppState,
		push:     cfg.Push,
		wake:     make(chan struct{}, 1),
	}
	if c.tr, err = newTransport(cfg.LocalAddr, &c.stats); err != nil {
		return nil, err
	}
	c.batch = &batcher{c: c, max: cfg.SendBatch, inFlight: cfg.SendsInFlight}
	store := cfg.SeqStore
	if store == nil {
		// A Tern token names its user and device: open their seq file now,
		// so that the first Hello (and a 0-RTT Sync behind it) reports
		// the stored seq. The server's Welcome confirms the identity.
		if user, device, ok := tokenIdentity(cfg.Token); ok {
			store = NewFileSeqStore(filepath.Join(cfg.StateDir, stateFileName(user, device)))
			c.user, c.device = user, device
		}
	}
	if store != nil {
		seq, err := store.Load()
		if err != nil {
			closeTransport(c.tr) // and its socket
			return nil, fmt.Errorf("client: load seq: %w", err)
		}
		c.store = store
		c.local.Store(seq)
		c.saved.Store(seq)
	}
	if cfg.OnMessage == nil {
		c.msgs = make(chan Message, cfg.MessageBuffer)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(2)
	go c.run()
	go c.pullLoop()

	select {
	case err := <-c.first:
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		c.Close()
		c.mu.Lock()
		last := c.lastErr
		c.mu.Unlock()
		if last != nil {
			return nil, fmt.Errorf("client: dial %s: %w (last error: %w)", cfg.Addr, context.Cause(ctx), last)
		}
		return nil, fmt.Errorf("client: dial %s: %w", cfg.Addr, context.Cause(ctx))
	}
}

// newTransport opens a UDP socket on localAddr (any when empty) whose
// datagrams count into st.
func newTransport(localAddr string, st *counters) (*quic.Transport, error) {
	var laddr *net.UDPAddr
	if localAddr != "" {
		a, err := net.ResolveUDPAddr("udp", localAddr)
		if err != nil {
			return nil, fmt.Errorf("client: local address: %w", err)
		}
		laddr = a
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("client: listen udp: %w", err)
	}
	return &quic.Transport{Conn: &gatedConn{udp: udp, st: st}}, nil
}

// Close stops the client: it closes the connection with code 0, stops the
// background goroutines and waits for them (including a running OnMessage),
// and closes the Messages channel. It always returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.stopAll()
		c.cancel()
		c.wg.Wait()
		c.batch.wg.Wait()
		c.mu.Lock()
		trs := append(c.retired, c.tr)
		c.retired, c.tr = nil, nil
		c.mu.Unlock()
		for _, tr := range trs {
			closeTransport(tr)
		}
		if c.msgs != nil {
			close(c.msgs)
		}
		c.log.Debug("client closed")
	})
	return nil
}

func closeTransport(tr *quic.Transport) {
	tr.Close()
	tr.Conn.Close() // a Transport does not close a PacketConn it was given
}

func (c *Client) stopAll() { c.halt.Do(func() { close(c.halted) }) }

// Messages returns the channel that receives every message in seq order
// when Config.OnMessage is nil (nil otherwise). The pull loop blocks while
// the channel is full: a slow reader slows the pulls down, nothing is
// dropped. Close closes the channel.
func (c *Client) Messages() <-chan Message { return c.msgs }

// Seq is the newest seq handed to the app and saved to the SeqStore.
func (c *Client) Seq() uint64 { return c.saved.Load() }

// User and Device are the identity the server authenticated.
func (c *Client) User() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// Device is the device the server authenticated.
func (c *Client) Device() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.device
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats { return c.stats.snapshot() }

// Err returns why the client stopped on its own (SESSION_REPLACED, a token
// the server refuses...), nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fatal
}

// SetAppState tells the server that the app moved to the foreground or the
// background (background sessions count as unreachable for push). The state
// is also sent in every later Hello.
func (c *Client) SetAppState(ctx context.Context, st wire.AppState) error {
	c.mu.Lock()
	c.appState = st
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return nil // the next Hello carries it
	}
	up := &wire.SessionUp{Msg: &wire.SessionUp_AppState{AppState: &wire.AppStateUpdate{AppState: st}}}
	if err := s.writeSession(ctx, up); err != nil {
		// A partial frame would corrupt the session stream: start over, the
		// next Hello carries the state.
		c.log.Warn("app state update failed; reconnecting", "err", err)
		s.conn.CloseWithError(0, "session stream write failed")
	}
	return nil
}

// emit hands ev to Config.OnEvent, one call at a time.
func (c *Client) emit(ev Event) {
	if c.cfg.OnEvent == nil {
		return
	}
	c.eventMu.Lock()
	defer c.eventMu.Unlock()
	c.cfg.OnEvent(ev)
}

// sleep waits d or until the client closes; it reports whether d passed.
func (c *Client) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// backoff is the delay before retry number n (1-based): exponential from
// ReconnectMin up to ReconnectMax, with full jitter.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.ReconnectMin
	for i := 1; i < n && d < c.cfg.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.ReconnectMax)
	return rand.N(d) + 1
}

// fatalError marks failures after which reconnecting cannot help.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// isTerminal reports whether err stops the reconnect loop: a terminal Tern
// code from the server, or a local fatalError.
func isTerminal(err error) bool {
	var fe *fatalError
	if errors.As(err, &fe) {
		return true
	}
	var we *wire.Error
	return errors.As(err, &we) && we.ErrorCode().Terminal()
}

// remoteError maps a connection or stream closed by the server with a Tern
// code to that *wire.Error; nil when err is no such close.
func remoteError(err error) *wire.Error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode != 0 {
		return &wire.Error{Code: uint32(ae.ErrorCode), Message: ae.ErrorMessage}
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote && se.ErrorCode != 0 {
		return &wire.Error{Code: uint32(se.ErrorCode), Message: "stream reset by the server"}
	}
	return nil
}

// run is the connection loop: it connects, serves the session until it ends,
// and reconnects with backoff until Close or a terminal failure.
func (c *Client) run() {
	defer c.wg.Done()
	var (
		failures     int  // connection attempts failed in a row
		expiredRetry bool // TOKEN_EXPIRED was already answered with a fresh token
		connected    bool // a session was ever established
	)
	for {
		c.closeRetired()
		s, err := c.connect()
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			var we *wire.Error
			if errors.As(err, &we) && we.ErrorCode() == wire.CodeTokenExpired && c.cfg.TokenFunc != nil && !expiredRetry {
				expiredRetry = true
				c.log.Info("token expired; asking TokenFunc for a fresh one")
				continue
			}
			if isTerminal(err) {
				c.stop(err, connected)
				return
			}
			failures++
			delay := c.backoff(failures)
			if errors.As(err, &we) && we.GetRetryAfterMs() > 0 {
				delay = time.Duration(we.GetRetryAfterMs()) * time.Millisecond
			}
			c.log.Info("connect failed", "err", err, "attempt", failures, "delay", delay)
			if !c.sleep(delay) {
				return
			}
			continue
		}
		expiredRetry = false
		if connected {
			c.stats.reconnects.Add(1)
		}
		c.publish(s)
		if !connected {
			connected = true
			c.first <- nil
		}
		st := s.conn.ConnectionState()
		c.log.Info("connected", "session", s.welcome.GetSessionId(), "seq", c.local.Load(),
			"seq_svr", s.welcome.GetSeqSvr(), "resumed", st.TLS.DidResume, "used_0rtt", st.Used0RTT)
		c.emit(Event{Kind: EventConnected, Session: s.welcome.GetSessionId(), Resumed: st.TLS.DidResume, Used0RTT: st.Used0RTT})
		if s.pending.Load() != nil || s.welcome.GetSeqSvr() != c.local.Load() {
			c.wakePull()
		}

		goAway, err := c.serve(s)
		if err != nil {
			c.stop(err, true)
			return
		}
		if c.ctx.Err() != nil {
			return
		}
		if goAway {
			failures = 0 // serve waited as the server asked
			continue
		}
		// Reconnect at once after a network blip, but count a session that
		// ended quickly as a failure, so that a server that accepts and
		// drops connections is not hammered.
		if time.Since(s.started) < 2*time.Second {
			failures++
		} else {
			failures = 0
		}
		if failures > 0 && !c.sleep(c.backoff(failures)) {
			return
		}
	}
}

// stop ends the client's life on a terminal failure: calls return err from
// now on.
func (c *Client) stop(err error, connected bool) {
	c.mu.Lock()
	c.fatal = err
	c.mu.Unlock()
	c.stopAll()
	if !connected {
		c.first <- err
		return
	}
	kind := EventStopped
	var we *wire.Error
	if errors.As(err, &we) && we.ErrorCode() == wire.CodeSessionReplaced {
		kind = EventReplaced
	}
	c.log.Warn("client stopped", "err", err)
	c.emit(Event{Kind: kind, Err: err})
}

// serve waits for the session to end and closes it. After a GoAway it
// waits the delay the server asked for (requests in flight may finish on the
// old connection meanwhile; new ones wait for the next session) and reports
// goAway. A terminal end (SESSION_REPLACED) is returned as an error.
func (c *Client) serve(s *session) (goAway bool, err error) {
	var (
		ga    *wire.GoAway
		watch <-chan time.Time
		live  = pathWatch{}
	)
	if c.cfg.DeadPathTimeout > 0 {
		t := time.NewTicker(max(c.cfg.DeadPathTimeout/4, 10*time.Millisecond))
		defer t.Stop()
		watch = t.C
		live.observe(s.conn.ConnectionStats(), time.Now())
	}
wait:
	for {
		select {
		case <-c.ctx.Done():
			break wait
		case <-s.conn.Context().Done():
			break wait
		case <-s.readerDone:
			break wait
		case ga = <-s.goAway:
			break wait
		case now := <-watch:
			if live.observe(s.conn.ConnectionStats(), now) > c.cfg.DeadPathTimeout {
				c.recoverPath(s)
				live = pathWatch{}
				live.observe(s.conn.ConnectionStats(), time.Now())
			}
		}
	}
	c.unpublish(s)
	if c.ctx.Err() != nil {
		s.close("client closed")
		return false, nil
	}
	if ga != nil {
		c.stats.goAways.Add(1)
		code := wire.Code(ga.GetCode())
		if code == wire.CodeSessionReplaced {
			s.close("replaced")
			return true, &wire.Error{Code: ga.GetCode(), Message: ga.GetMessage()}
		}
		delay := time.Duration(ga.GetReconnectAfterMs()) * time.Millisecond
		delay += rand.N(delay/4 + 10*time.Millisecond)
		c.log.Info("goaway", "session", s.welcome.GetSessionId(), "code", code, "delay", delay, "reason", ga.GetMessage())
		c.emit(Event{Kind: EventGoAway, Session: s.welcome.GetSessionId(), Code: code, Delay: delay})
		c.sleep(delay)
		s.close("go away")
		return true, nil
	}
	s.close("")
	cause := s.endErr()
	var we *wire.Error
	if errors.As(cause, &we) && we.ErrorCode() == wire.CodeSessionReplaced {
		return false, we
	}
	c.stats.disconnects.Add(1)
	c.log.Info("disconnected", "session", s.welcome.GetSessionId(), "err", cause)
	c.emit(Event{Kind: EventDisconnected, Err: cause, Session: s.welcome.GetSessionId()})
	return false, nil
}

func (c *Client) publish(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = s
	close(c.ready)
}

func (c *Client) unpublish(s *session) {
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
	s.goneOnce.Do(func() { close(s.gone) })
}

// errNotConnected is returned by acquire with noWait while disconnected.
var errNotConnected = errors.New("client: not connected")

// acquire returns the published session, waiting for one unless noWait.
func (c *Client) acquire(ctx context.Context, noWait bool) (*session, error) {
	for {
		c.mu.Lock()
		s, ready, fatal, closed := c.sess, c.ready, c.fatal, c.closed
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case fatal != nil:
			return nil, fmt.Errorf("client: stopped: %w", fatal)
		case s != nil:
			return s, nil
		case noWait:
			return nil, errNotConnected
		}
		select {
		case <-ready:
		case <-c.halted:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

func (c *Client) transport() *quic.Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr
}

// closeRetired closes the transports left by migrations. Only run calls it,
// and only while it holds no connection: a connection stays registered with
// every transport it used, and closing one of them would destroy it.
func (c *Client) closeRetired() {
	c.mu.Lock()
	old := c.retired
	c.retired = nil
	c.mu.Unlock()
	for _, tr := range old {
		closeTransport(tr)
	}
}

func (c *Client) token(ctx context.Context) (string, error) {
	if c.cfg.TokenFunc == nil {
		return c.cfg.Token, nil
	}
	t, err := c.cfg.TokenFunc(ctx)
	if err != nil {
		return "", fmt.Errorf("client: token: %w", err)
	}
	if t == "" {
		return "", errors.New("client: token: TokenFunc returned an empty token")
	}
	return t, nil
}

func (c *Client) dialQUICConfig() *quic.Config {
	q := c.quicConf.Clone()
	c.mu.Lock()
	ka := c.keepalive
	c.mu.Unlock()
	if (c.cfg.QUIC == nil || c.cfg.QUIC.KeepAlivePeriod == 0) && ka > 0 {
		q.KeepAlivePeriod = ka
	}
	return q
}

// connect dials, says Hello and waits for the Welcome. With 0-RTT it also
// sends the first Sync before the handshake completes; when the server
// rejects the 0-RTT data it says Hello again on the 1-RTT connection.
func (c *Client) connect() (*session, error) {
	s, err := c.dialSession()
	if c.tickets != nil {
		c.tickets.settle(err != nil && networkFailure(err))
	}
	return s, err
}

// networkFailure reports whether a failed dial failed for want of a network
// (nothing answered in time, or the address is unreachable) rather than
// because the server refused something.
func networkFailure(err error) bool {
	var (
		idle *quic.IdleTimeoutError
		hs   *quic.HandshakeTimeoutError
		ne   net.Error
	)
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &idle) || errors.As(err, &hs) ||
		(errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH)
}

// dialSession is one connection attempt; see connect.
func (c *Client) dialSession() (_ *session, err error) {
	c.stats.dials.Add(1)
	ctx, cancel := context.WithTimeout(c.ctx, 2*c.cfg.RequestTimeout)
	defer cancel()
	defer func() {
		// An attempt that ran out of time says so, whatever the step that
		// noticed (the connection is closed locally when it does).
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
		}
	}()
	token, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	raddr, err := net.ResolveUDPAddr("udp", c.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("client: resolve %s: %w", c.cfg.Addr, err)
	}
	tr := c.transport()
	if tr == nil {
		return nil, ErrClosed
	}
	early := !c.cfg.Disable0RTT
	var conn *quic.Conn
	release := func() {}
	if early {
		// Hold the server's packets while the 0-RTT streams open (gate.go).
		if gc, ok := tr.Conn.(*gatedConn); ok && !c.tlsConf.SessionTicketsDisabled {
			release = gc.hold()
		}
		defer release()
		c.tickets.setRelease(release)
		fallback := time.AfterFunc(gateFallback, release)
		conn, err = tr.DialEarly(ctx, raddr, c.tlsConf, c.dialQUICConfig())
		fallback.Stop()
		c.tickets.setRelease(nil)
	} else {
		conn, err = tr.Dial(ctx, raddr, c.tlsConf, c.dialQUICConfig())
	}
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.cfg.Addr, err)
	}
	// Whatever goes wrong below, or Close meanwhile, ends this connection.
	abort := context.AfterFunc(ctx, func() { conn.CloseWithError(0, "connect aborted") })
	defer abort()

	zeroRTT := early && !isClosed(conn.HandshakeComplete())
	if !zeroRTT {
		release()
	}
	// The first Sync always goes right behind the Hello (the edge holds it
	// until the Hello is through): the catch-up answer comes one round trip
	// after the handshake, or with the handshake itself in 0-RTT.
	s, err := c.hello(ctx, conn, token, release)
	if zeroRTT && errors.Is(err, quic.Err0RTTRejected) {
		c.stats.rejected0RTT.Add(1)
		c.log.Info("0-RTT rejected; saying hello again")
		if conn, err = conn.NextConnection(ctx); err == nil {
			s, err = c.hello(ctx, conn, token, release)
		}
	}
	if err == nil {
		// The Welcome came in 1-RTT data: the handshake is done or about to be.
		select {
		case <-conn.HandshakeComplete():
		case <-ctx.Done():
			err = fmt.Errorf("client: handshake: %w", context.Cause(ctx))
		}
	}
	if err == nil {
		err = c.adopt(s.welcome)
	}
	if err != nil {
		conn.CloseWithError(0, "")
		if we := remoteError(err); we != nil {
			return nil, we
		}
		return nil, err
	}
	st := conn.ConnectionState()
	switch {
	case st.TLS.DidResume:
		c.stats.resumed.Add(1)
	default:
		c.stats.handshakes.Add(1)
	}
	if st.Used0RTT {
		c.stats.used0RTT.Add(1)
	}
	c.stats.connects.Add(1)
	s.started = time.Now()
	go c.readSession(s)
	return s, nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// hello opens the session stream, writes the Hello and the first Sync (on
// its own stream), calls release once its streams are open, and reads frames
// up to the Welcome.
func (c *Client) hello(ctx context.Context, conn *quic.Conn, token string, release func()) (*session, error) {
	defer release()
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: open session stream: %w", err)
	}
	c.mu.Lock()
	appState, haveStore, resume, push := c.appState, c.store != nil, c.session, c.push
	c.mu.Unlock()
	h := &wire.Hello{
		Token:             token,
		CapabilityVersion: wire.CapabilityVersion,
		Device:            c.cfg.Device,
		Platform:          c.cfg.Platform,
		SeqCli:            c.saved.Load(),
		AppState:          appState,
		Push:              push,
		ClientVersion:     "tern-go/" + Version,
		ResumeSession:     resume,
	}
	if err := wire.WriteFrame(str, &wire.SessionUp{Msg: &wire.SessionUp_Hello{Hello: h}}); err != nil {
		return nil, fmt.Errorf("client: write hello: %w", err)
	}
	s := newSession(conn, str)
	if haveStore {
		after := c.saved.Load()
		p, err := s.startRequest(ctx, c.syncRequest(after))
		switch {
		case err == nil:
			c.stats.syncs.Add(1)
			s.pending.Store(&pendingSync{str: p, after: after})
		case errors.Is(err, quic.Err0RTTRejected):
			return nil, err
		default:
			c.log.Debug("pipelined sync failed", "err", err)
		}
	}
	release()
	if dl, ok := ctx.Deadline(); ok {
		str.SetReadDeadline(dl)
	}
	var buf []byte
	for {
		var down wire.SessionDown
		buf, err = wire.ReadMessage(str, maxReadFrame(0), buf, &down)
		if err != nil {
			if we := remoteError(err); we != nil {
				return nil, we
			}
			return nil, fmt.Errorf("client: read welcome: %w", err)
		}
		switch m := down.GetMsg().(type) {
		case *wire.SessionDown_Welcome:
			str.SetReadDeadline(time.Time{})
			s.setWelcome(m.Welcome)
			return s, nil
		case *wire.SessionDown_Error:
			return nil, m.Error
		default:
			c.log.Debug("frame before welcome skipped", "type", fmt.Sprintf("%T", m))
		}
	}
}

// adopt checks the Welcome against what the client knows and opens the
// default SeqStore on the first one.
func (c *Client) adopt(w *wire.Welcome) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.user == "" && c.device == "" {
		c.user, c.device = w.GetUser(), w.GetDevice()
	} else if c.user != w.GetUser() || c.device != w.GetDevice() {
		return &fatalError{fmt.Errorf("client: the server authenticated %q/%q, this client is %q/%q",
			w.GetUser(), w.GetDevice(), c.user, c.device)}
	}
	if c.store == nil {
		if w.GetUser() == "" {
			return &fatalError{errors.New("client: the Welcome names no user; set Config.SeqStore")}
		}
		st := NewFileSeqStore(filepath.Join(c.cfg.StateDir, stateFileName(w.GetUser(), w.GetDevice())))
		seq, err := st.Load()
		if err != nil {
			return &fatalError{err}
		}
		c.store = st
		c.local.Store(seq)
		c.saved.Store(seq)
		c.log.Debug("seq store opened", "path", st.Path(), "seq", seq)
	}
	c.session = w.GetSessionId()
	c.acked.Store(w.GetAckedSeq())
	if ms := w.GetKeepaliveMs(); ms > 0 {
		c.keepalive = time.Duration(ms) * time.Millisecond
	}
	return nil
}

// readSession reads the session stream until it ends: Notify wakes the pull
// loop, GoAway is handed to run, unknown frames are skipped.
func (c *Client) readSession(s *session) {
	defer close(s.readerDone)
	var buf []byte
	for {
		var down wire.SessionDown
		var err error
		buf, err = wire.ReadMessage(s.str, s.maxRead, buf, &down)
		if err != nil {
			s.readErr = err
			return
		}
		switch m := down.GetMsg().(type) {
		case *wire.SessionDown_Notify:
			c.stats.notifies.Add(1)
			if seq := m.Notify.GetSeq(); seq > c.local.Load() {
				c.offerInline(m.Notify.GetEntries())
				c.wakeNotified(seq)
			}
		case *wire.SessionDown_GoAway:
			select {
			case s.goAway <- m.GoAway:
			default:
			}
		case *wire.SessionDown_Error:
			s.readErr = m.Error
			return
		default:
			c.log.Debug("session frame skipped", "type", fmt.Sprintf("%T", m))
		}
	}
}
