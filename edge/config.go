package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/wire"
)

// Config configures a Server. The zero value of every field but Auth means
// the default stated beside it.
type Config struct {
	// Auth checks Hello tokens. Required.
	Auth Authenticator
	// MaxFrameSize bounds every frame a client writes and every frame the
	// server writes, in bytes. Default wire.DefaultMaxFrameSize (256 KiB).
	MaxFrameSize int
	// HelloTimeout is how long a new connection may take to open its session
	// stream and send a Hello. Default 10s.
	HelloTimeout time.Duration
	// RequestTimeout bounds reading one request, serving it and writing its
	// response. Default 15s.
	RequestTimeout time.Duration
	// KeepAlive is the keepalive period advertised to clients in Welcome.
	// Default 15s, below the ~30s UDP mapping timeout of many mobile NATs.
	KeepAlive time.Duration
	// InlineBytes bounds the bodies of the new entries a Notify carries
	// inline to a capability-3 client, in bytes: a device that is caught up
	// gets small messages without a pull round trip. Default 2048; negative:
	// Notifies never carry entries.
	InlineBytes int
	// GoAwayJitter spreads the reconnect_after_ms of a drain's GoAways over
	// [0, GoAwayJitter), so that clients do not all come back at once.
	// Default 5s.
	GoAwayJitter time.Duration
	// Logger receives the edge's logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives the edge's metrics (MetricDescs); nil discards them.
	Metrics core.Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = wire.DefaultMaxFrameSize
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 10 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 15 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.GoAwayJitter == 0 {
		c.GoAwayJitter = 5 * time.Second
	}
	if c.InlineBytes == 0 {
		c.InlineBytes = 2048
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = core.NopMetrics{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Auth == nil:
		return fmt.Errorf("edge: no authenticator")
	case c.MaxFrameSize < 1024:
		return fmt.Errorf("edge: max frame size %d below 1024 bytes", c.MaxFrameSize)
	case c.HelloTimeout < 0, c.RequestTimeout < 0, c.KeepAlive < 0, c.GoAwayJitter < 0:
		return fmt.Errorf("edge: negative duration")
	}
	return nil
}

// QUICOptions are the transport settings of a listener. Zero values mean the
// defaults stated beside them.
type QUICOptions struct {
	// IdleTimeout closes a connection that received nothing for this long.
	// Default 60s.
	IdleTimeout time.Duration
	// KeepAlive makes the server send a packet when idle for this long.
	// Default 0: the server does not keep alive; clients do (they know
	// their NAT's timeouts).
	KeepAlive time.Duration
	// MaxStreams bounds concurrent requests per connection. Default 100.
	MaxStreams int64
	// StreamWindow and ConnWindow are the initial receive windows, in
	// bytes; frames are small, so small windows keep idle connections
	// cheap. Defaults 64 KiB and 128 KiB; both grow up to 4× on demand.
	StreamWindow uint64
	ConnWindow   uint64
	// Disable0RTT refuses 0-RTT data. Default: 0-RTT is accepted (replay is
	// safe for the requests a client puts there; see docs/protocol.md).
	Disable0RTT bool
	// Secrets, when set, make stateless resets, address tokens and TLS
	// session tickets survive restarts (see Secrets). Default: fresh random
	// keys per listener.
	Secrets *Secrets
	// Handshakes bounds the TLS handshakes the listener works on at once;
	// the others wait their turn, oldest first (see handshakeGate: in a
	// reconnect storm this is what lets the oldest handshakes finish
	// instead of all of them finishing late). Default 32 × GOMAXPROCS;
	// negative: no bound.
	Handshakes int
	// HandshakeTimeout bounds a handshake from the client's first packet,
	// its wait for a turn included; a handshake that waited half of it is
	// refused. Default 20s, the Tern SDK's bound on a connection attempt.
	HandshakeTimeout time.Duration
	// ReceiveBuffer is the size asked for the UDP socket's receive buffer,
	// in bytes, when Listen opens the socket. A reconnect storm delivers
	// thousands of Initial packets at once; what does not fit is dropped by
	// the kernel, and a client whose Initial is dropped retries after an
	// exponential backoff. Listen asks with SO_RCVBUFFORCE (needs
	// CAP_NET_ADMIN), then with SO_RCVBUF, which the kernel caps at
	// net.core.rmem_max (raise that sysctl to give an unprivileged server
	// the full size). Default 32 MiB; negative: quic-go's own (7 MiB when
	// allowed).
	ReceiveBuffer int
	// Metrics receives the listener's handshake metrics
	// (MetricHandshakeWait, MetricHandshakesShed) and the packets its QUIC
	// transport dropped (MetricPacketsDropped); nil discards them.
	Metrics core.Metrics
}

// withDefaults fills in the zero values.
func (o QUICOptions) withDefaults() QUICOptions {
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.MaxStreams == 0 {
		o.MaxStreams = 100
	}
	if o.StreamWindow == 0 {
		o.StreamWindow = 64 << 10
	}
	if o.ConnWindow == 0 {
		o.ConnWindow = 128 << 10
	}
	if o.Handshakes == 0 {
		o.Handshakes = 32 * runtime.GOMAXPROCS(0)
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 20 * time.Second
	}
	if o.ReceiveBuffer == 0 {
		o.ReceiveBuffer = 32 << 20
	}
	if o.Metrics == nil {
		o.Metrics = core.NopMetrics{}
	}
	return o
}

// QUICConfig returns the quic-go configuration for a Tern listener.
func (o QUICOptions) QUICConfig() *quic.Config {
	o = o.withDefaults()
	return &quic.Config{
		MaxIdleTimeout:                 o.IdleTimeout,
		KeepAlivePeriod:                o.KeepAlive,
		MaxIncomingStreams:             o.MaxStreams,
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     o.StreamWindow,
		MaxStreamReceiveWindow:         4 * o.StreamWindow,
		InitialConnectionReceiveWindow: o.ConnWindow,
		MaxConnectionReceiveWindow:     4 * o.ConnWindow,
		Allow0RTT:                      !o.Disable0RTT,
		// quic-go aborts a handshake after twice this without a packet,
		// and any handshake after twice this in all.
		HandshakeIdleTimeout: o.HandshakeTimeout / 2,
	}
}

// Listener is a QUIC listener on a UDP socket it owns. Closing it stops
// accepting but leaves established connections alone (Server.Shutdown drains
// and closes those); CloseTransport then releases the socket.
type Listener struct {
	*quic.EarlyListener
	Transport *quic.Transport
	socket    io.Closer      // closed by CloseTransport when Listen opened it
	gate      *handshakeGate // nil: handshakes are not bounded
}

// Listen opens a UDP socket on addr and a QUIC listener on it that accepts
// 0-RTT, with tlsConf (see ServerTLSConfig) and o's transport settings.
func Listen(addr string, tlsConf *tls.Config, o QUICOptions) (*Listener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("edge: listen %s: %w", addr, err)
	}
	uc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("edge: listen %s: %w", addr, err)
	}
	if n := o.withDefaults().ReceiveBuffer; n > 0 {
		setReceiveBuffer(uc, n)
	}
	l, err := ListenOn(uc, tlsConf, o)
	if err != nil {
		uc.Close()
		return nil, err
	}
	l.socket = uc
	return l, nil
}

// ListenOn is Listen over a socket the caller opened (and keeps owning).
func ListenOn(pc net.PacketConn, tlsConf *tls.Config, o QUICOptions) (*Listener, error) {
	o = o.withDefaults()
	tr := &quic.Transport{Conn: pc, Tracer: dropCounter{m: o.Metrics}}
	tlsConf = tlsConf.Clone()
	if o.Secrets != nil {
		tr.StatelessResetKey = &o.Secrets.StatelessReset
		tr.TokenGeneratorKey = &o.Secrets.TokenGenerator
		o.Secrets.apply(tlsConf)
	}
	var gate *handshakeGate
	if o.Handshakes > 0 {
		gate = &handshakeGate{slots: make(chan struct{}, o.Handshakes), maxWait: o.HandshakeTimeout / 2, m: o.Metrics}
		gate.install(tlsConf, tr)
	}
	ln, err := tr.ListenEarly(tlsConf, o.QUICConfig())
	if err != nil {
		return nil, fmt.Errorf("edge: listen: %w", err)
	}
	return &Listener{EarlyListener: ln, Transport: tr, gate: gate}, nil
}

// Accept returns the next connection ready for 0-RTT data (its TLS
// handshake's first flight is written); it gives back the connection's
// handshake slot.
func (l *Listener) Accept(ctx context.Context) (*quic.Conn, error) {
	qc, err := l.EarlyListener.Accept(ctx)
	if err == nil {
		admitted(qc)
	}
	return qc, err
}

// CloseTransport closes the listener and the transport, and with them every
// connection still open, and the socket when Listen opened it.
func (l *Listener) CloseTransport() error {
	l.EarlyListener.Close()
	err := l.Transport.Close()
	if l.socket != nil {
		l.socket.Close()
	}
	return err
}
