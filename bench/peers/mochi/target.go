package mochi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	badgerhook "github.com/mochi-mqtt/server/v2/hooks/storage/badger"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/bench/peers/quicconn"
)

// Transport is how clients reach the broker.
type Transport string

const (
	TCP  Transport = "tcp"
	QUIC Transport = "quic"
)

// ALPN is the protocol the QUIC transport negotiates.
const ALPN = "mqtt"

// sessionExpiry is the session expiry interval every client asks for, in
// seconds: a day, far longer than any run.
const sessionExpiry = 24 * 60 * 60

// Config configures a Target. Zero values mean the stated defaults.
type Config struct {
	// Dir is where Badger keeps the broker's sessions. Required.
	Dir string
	// Transport defaults to TCP.
	Transport Transport
	// AckBeforeStore keeps stock mochi's order (PUBACK, then store the
	// message in the subscribers' sessions), which can lose acknowledged
	// messages in a crash. Default false: store (fsync'd), then PUBACK.
	AckBeforeStore bool
	// Logger receives the broker's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// Target is a mochi-mqtt broker running in this process.
type Target struct {
	name      string
	transport Transport
	srv       *mqtt.Server
	addr      string
	clientTLS *tls.Config // QUIC only

	closeOnce sync.Once
	closeErr  error
}

var _ bench.Target = (*Target)(nil)

// New starts a broker on 127.0.0.1, port chosen by the system, with its
// state in cfg.Dir.
func New(cfg Config) (*Target, error) {
	if cfg.Dir == "" {
		return nil, errors.New("mochi: Config.Dir is required")
	}
	if cfg.Transport == "" {
		cfg.Transport = TCP
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumInflight = 65535              // the most a session may hold unacknowledged
	caps.MaximumClientWritesPending = 1 << 16 // per-client send queue; mochi drops beyond it
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: log, Capabilities: caps})

	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("mochi: auth hook: %w", err)
	}
	if !cfg.AckBeforeStore {
		if err := srv.AddHook(&storeBeforeAck{srv: srv}, nil); err != nil {
			return nil, fmt.Errorf("mochi: store-before-ack hook: %w", err)
		}
	}
	bopts := badgerdb.DefaultOptions(cfg.Dir).WithSyncWrites(true)
	if err := srv.AddHook(new(badgerhook.Hook), &badgerhook.Options{
		Path:       cfg.Dir,
		Options:    &bopts,
		GcInterval: 24 * 60 * 60, // seconds: the hook's ticker loop cannot be stopped; keep it idle
	}); err != nil {
		return nil, fmt.Errorf("mochi: badger hook: %w", err)
	}

	t := &Target{transport: cfg.Transport, srv: srv}
	var l net.Listener
	switch cfg.Transport {
	case TCP:
		t.name = "mochi-mqtt/tcp"
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("mochi: listen: %w", err)
		}
		l = tl
	case QUIC:
		t.name = "mochi-mqtt/quic"
		serverTLS, clientTLS, err := quicconn.LoopbackTLS(ALPN)
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("mochi: %w", err)
		}
		ql, err := quicconn.Listen("127.0.0.1:0", serverTLS, quicconn.Options{})
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("mochi: %w", err)
		}
		l, t.clientTLS = ql, clientTLS
	default:
		srv.Close()
		return nil, fmt.Errorf("mochi: unknown transport %q", cfg.Transport)
	}
	if cfg.AckBeforeStore {
		t.name += " (stock: PUBACK before store)"
	}
	t.addr = l.Addr().String()
	if err := srv.AddListener(newNetListener(string(cfg.Transport), l)); err != nil {
		l.Close()
		srv.Close()
		return nil, fmt.Errorf("mochi: listener: %w", err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, fmt.Errorf("mochi: serve: %w", err)
	}
	return t, nil
}

// Name is "mochi-mqtt/tcp" or "mochi-mqtt/quic".
func (t *Target) Name() string { return t.name }

// Addr is the broker's listening address (TCP or UDP).
func (t *Target) Addr() string { return t.addr }

// Dropped reports the messages mochi dropped so far: a session already
// holding MaximumInflight messages, or a client's send queue full.
func (t *Target) Dropped() (inflightFull, queueFull int64) {
	return atomic.LoadInt64(&t.srv.Info.InflightDropped), atomic.LoadInt64(&t.srv.Info.MessagesDropped)
}

// Close stops the broker: it disconnects the clients, waits for the
// listener's goroutines and closes Badger.
func (t *Target) Close() error {
	t.closeOnce.Do(func() { t.closeErr = t.srv.Close() })
	return t.closeErr
}

// Connect connects user's persistent session and subscribes it to its inbox.
// user must be a valid MQTT topic level (no '/', '+', '#').
func (t *Target) Connect(ctx context.Context, user string, deliver func(bench.Delivery)) (bench.Conn, error) {
	if user == "" || strings.ContainsAny(user, "/+#") {
		return nil, fmt.Errorf("mochi: user %q is not a topic level", user)
	}
	c := &conn{t: t, user: user, deliver: deliver}
	if err := c.dial(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (t *Target) dialNet(ctx context.Context) (net.Conn, error) {
	switch t.transport {
	case QUIC:
		return quicconn.Dial(ctx, t.addr, t.clientTLS, quicconn.Options{})
	default:
		var d net.Dialer
		return d.DialContext(ctx, "tcp", t.addr)
	}
}

// conn is one user's MQTT client. When the connection is lost, the next Send
// dials again (same client id, same session).
type conn struct {
	t       *Target
	user    string
	deliver func(bench.Delivery)

	deliverMu sync.Mutex // one deliver call at a time across reconnections

	mu     sync.Mutex // guards the fields below
	cl     *paho.Client
	rx     *receiver // cl's
	closed bool
}

// dial opens a new network connection and MQTT session connection and
// makes it current. Called with c.mu held or before c is shared.
func (c *conn) dial(ctx context.Context) error {
	nc, err := c.t.dialNet(ctx)
	if err != nil {
		return fmt.Errorf("mochi: dial: %w", err)
	}
	rx := &receiver{deliver: c.deliverOne, settled: make(chan struct{})}
	cl := paho.NewClient(paho.ClientConfig{
		Conn:              packets.NewThreadSafeConn(nc),
		Session:           &ackGate{SessionManager: state.NewInMemory(), rx: rx},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){rx.onPublish},
	})
	expiry := uint32(sessionExpiry)
	ca, err := cl.Connect(ctx, &paho.Connect{
		ClientID:   "inbox-" + c.user,
		CleanStart: false,
		KeepAlive:  30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry},
	})
	if err != nil {
		return fmt.Errorf("mochi: connect %s: %w", c.user, err)
	}
	if !ca.SessionPresent {
		// A new session: subscribe. A present session has its subscription
		// already, and subscribing again could be refused: mochi checks a
		// SUBSCRIBE's packet id against the ids of its own messages in
		// flight to the client.
		sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "inbox/" + c.user, QoS: 1}}})
		if err == nil && (len(sa.Reasons) != 1 || sa.Reasons[0] != 1) {
			err = fmt.Errorf("granted %v, want QoS 1", sa.Reasons)
		}
		if err != nil {
			_ = cl.Disconnect(&paho.Disconnect{})
			return fmt.Errorf("mochi: subscribe %s: %w", c.user, err)
		}
	}
	c.cl, c.rx = cl, rx
	return nil
}

func (c *conn) deliverOne(d bench.Delivery) {
	if c.deliver == nil {
		return
	}
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	c.deliver(d)
}

// Send publishes at QoS 1 and returns on the PUBACK. When the connection is
// lost it dials again and publishes again (QoS 1 is at-least-once: the
// broker may then hold the message twice).
func (c *conn) Send(ctx context.Context, to string, body []byte) error {
	pub := &paho.Publish{QoS: 1, Topic: "inbox/" + to, Payload: body}
	backoff := 50 * time.Millisecond
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return net.ErrClosed
		}
		cl := c.cl
		c.mu.Unlock()
		_, err := cl.Publish(ctx, pub)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("mochi: publish: %w", err)
		}
		select {
		case <-cl.Done(): // the connection is gone: dial again
		default:
			return fmt.Errorf("mochi: publish: %w", err) // refused on a live connection
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("mochi: publish: %w", ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
		c.mu.Lock()
		if !c.closed && c.cl == cl {
			if err := c.dial(ctx); err != nil {
				c.t.srv.Log.Debug("redial failed", "user", c.user, "error", err)
			}
		}
		c.mu.Unlock()
	}
}

// Close stops delivering, waits until every delivered message's PUBACK is
// written, then sends DISCONNECT (normal: the session stays) and closes.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cl, rx := c.cl, c.rx
	c.mu.Unlock()

	settled := rx.beginClose()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-settled:
	case <-cl.Done():
	case <-t.C:
	}
	if err := cl.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("mochi: disconnect %s: %w", c.user, err)
	}
	return nil
}

// receiver hands one connection's messages over and decides which of them
// are acknowledged: exactly those delivered. paho calls onPublish and then
// ackGate.Ack for each message, one message at a time, on its handler
// goroutine.
type receiver struct {
	deliver func(bench.Delivery)

	mu        sync.Mutex
	closing   bool
	owed      bool          // a message was delivered and its PUBACK is not written yet
	settled   chan struct{} // closed once closing and nothing is owed
	settledOK bool
}

func (r *receiver) onPublish(p paho.PublishReceived) (bool, error) {
	at := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return true, nil // not delivered; ackGate leaves it unacknowledged
	}
	r.deliver(bench.Delivery{Body: p.Packet.Payload, At: at})
	r.owed = true
	return true, nil
}

// beginClose stops delivery; the returned channel closes once the last
// delivered message's PUBACK is written.
func (r *receiver) beginClose() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closing = true
	r.settleLocked()
	return r.settled
}

func (r *receiver) settleLocked() {
	if r.closing && !r.owed && !r.settledOK {
		r.settledOK = true
		close(r.settled)
	}
}

// ackGate is paho's session state with one change: it writes a PUBACK only
// for a message the receiver delivered.
type ackGate struct {
	session.SessionManager
	rx *receiver
}

func (g *ackGate) Ack(pb *packets.Publish) error {
	g.rx.mu.Lock()
	owed := g.rx.owed
	g.rx.mu.Unlock()
	if !owed {
		return nil // arrived while closing: the broker sends it again next time
	}
	err := g.SessionManager.Ack(pb)
	g.rx.mu.Lock()
	g.rx.owed = false
	g.rx.settleLocked()
	g.rx.mu.Unlock()
	return err
}
