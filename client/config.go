package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ternhq/tern/wire"
)

// Version is the SDK's version, sent in Hello.client_version as "tern-go/<Version>".
const Version = "0.1.0"

// Config configures a Client. The zero value of every field means the default
// stated beside it. Dial copies the Config; changing it afterwards has no
// effect.
type Config struct {
	// Addr is the edge's host:port. Required. It is resolved again on every
	// (re)connect.
	Addr string
	// LocalAddr is the local UDP address the client binds, e.g.
	// "127.0.0.2:0". Default: any address, any port.
	LocalAddr string

	// TLS holds the caller's roots and ServerName. The client clones it and
	// sets NextProtos to [wire.ALPN], MinVersion to TLS 1.3 and, when nil, a
	// ClientSessionCache (needed for resumption and 0-RTT). Default: an empty
	// config (system roots, ServerName from Addr).
	TLS *tls.Config
	// QUIC overrides quic-go's settings. The client clones it and fills the
	// zero fields: KeepAlivePeriod 15s (or the server's Welcome.keepalive_ms
	// for later connections), MaxIdleTimeout 45s, HandshakeIdleTimeout
	// RequestTimeout (quic-go then gives a handshake twice that in all: the
	// attempt's own bound), small receive windows, no streams opened by the
	// server, and a TokenStore kept across reconnects.
	//
	// Why a patient handshake: when an edge restarts, every client comes
	// back at once and the edge answers in arrival order; a handshake that
	// has heard nothing for quic-go's default 5s is usually queued, not
	// lost (lost packets are sent again long before), and a client that
	// gives up and dials again starts a second handshake at the back of
	// the queue, which only makes the storm longer for everyone.
	QUIC *quic.Config
	// DisableMigration makes SwitchNetwork reconnect from the new socket
	// (with 0-RTT when possible) instead of migrating the connection, for
	// servers or load balancers that cannot follow a migrated connection.
	DisableMigration bool
	// Disable0RTT turns off 0-RTT. By default, when the TLS session cache
	// holds a ticket for the server, the client dials with 0-RTT and sends
	// its Hello and first Sync before the handshake completes.
	Disable0RTT bool

	// Token is the device's credential. Either Token or TokenFunc is required.
	Token string
	// TokenFunc, when set, is called on every (re)connect for a fresh token,
	// and once more right away when the server answers TOKEN_EXPIRED.
	TokenFunc func(context.Context) (string, error)
	// Device is optional; when set it must equal the token's device.
	Device   string
	Platform wire.Platform
	// AppState is the initial app state; SetAppState changes it.
	AppState wire.AppState
	// Push, when set, is sent in every Hello to register the device's push
	// token.
	Push *wire.PushRegistration

	// SeqStore keeps the last seq the client has handed to the app. Default:
	// a FileSeqStore under StateDir named after the user and device of the
	// first Welcome (the first Hello of a process then reports seq 0, which
	// acknowledges nothing).
	SeqStore SeqStore
	// StateDir is where the default SeqStore lives. Default:
	// os.UserConfigDir()/tern.
	StateDir string

	// OnMessage, when set, is called with every message, in seq order, from
	// the client's pull goroutine. The message counts as handed over when
	// OnMessage returns. It must not call Close. When nil, messages go to
	// Messages().
	OnMessage func(Message)
	// MessageBuffer is the capacity of the Messages() channel. Default 256; a
	// negative value makes the channel unbuffered.
	MessageBuffer int
	// OnEvent, when set, receives connection and sync events. Calls are
	// serialised and made from the client's goroutines: it must return
	// quickly and must not call Close.
	OnEvent func(Event)
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger

	// ReconnectMin and ReconnectMax bound the exponential backoff (with full
	// jitter) between connection attempts and between retries of a request.
	// Defaults 100ms and 30s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// RequestTimeout bounds one attempt of a request, and the wait for the
	// Welcome. Default 10s.
	RequestTimeout time.Duration
	// SyncLimit is the page size asked for, in entries. Default 0: the
	// server's default.
	SyncLimit int
	// DeadPathTimeout declares the network path dead when the connection
	// has received nothing for this long since it sent a packet (a request,
	// a keepalive) that is owed an answer. The client then moves the
	// connection to a fresh socket (a new NAT mapping) and, when that path
	// cannot be validated either, reconnects. Default 8s; negative disables the check (the connection
	// then lives until QUIC's idle timeout).
	DeadPathTimeout time.Duration
	// SendBatch is the most concurrent sends packed into one request (a
	// send_batch). A send never waits for others: it goes at once while
	// fewer than SendsInFlight send requests are in flight, and sends that
	// queued behind them share the next request. Default 0: 64
	// (wire.MaxSendBatch, also the upper bound); 1 sends each message on a
	// stream of its own.
	SendBatch int
	// SendsInFlight is how many send requests may be in flight at once.
	// Default 8.
	SendsInFlight int
}

func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		return c, errors.New("client: Config.Addr is required")
	}
	if c.Token == "" && c.TokenFunc == nil {
		return c, errors.New("client: Config.Token or Config.TokenFunc is required")
	}
	if c.SendBatch <= 0 || c.SendBatch > wire.MaxSendBatch {
		c.SendBatch = wire.MaxSendBatch
	}
	if c.SendsInFlight <= 0 {
		c.SendsInFlight = 8
	}
	if c.SyncLimit < 0 {
		return c, fmt.Errorf("client: Config.SyncLimit %d is negative", c.SyncLimit)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReconnectMin, 100*time.Millisecond)
	def(&c.ReconnectMax, 30*time.Second)
	def(&c.RequestTimeout, 10*time.Second)
	if c.DeadPathTimeout == 0 {
		c.DeadPathTimeout = 8 * time.Second
	}
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = c.ReconnectMin
	}
	switch {
	case c.MessageBuffer == 0:
		c.MessageBuffer = 256
	case c.MessageBuffer < 0:
		c.MessageBuffer = 0
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.SeqStore == nil && c.StateDir == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return c, fmt.Errorf("client: no StateDir and no user config dir: %w", err)
		}
		c.StateDir = filepath.Join(dir, "tern")
	}
	return c, nil
}

// tlsConfig returns the TLS config every dial uses: the caller's, cloned, with
// the protocol's requirements, and its session cache wrapped (see gate.go).
func (c Config) tlsConfig() (*tls.Config, *sessionCache) {
	var t *tls.Config
	if c.TLS != nil {
		t = c.TLS.Clone()
	} else {
		t = &tls.Config{}
	}
	t.NextProtos = []string{wire.ALPN}
	if t.MinVersion < tls.VersionTLS13 {
		t.MinVersion = tls.VersionTLS13
	}
	if t.ClientSessionCache == nil {
		t.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	}
	cache := &sessionCache{ClientSessionCache: t.ClientSessionCache}
	t.ClientSessionCache = cache
	if t.ServerName == "" {
		if host, _, err := net.SplitHostPort(c.Addr); err == nil {
			t.ServerName = host
		}
	}
	return t, cache
}

// Default QUIC settings: a phone holds one connection with little data in
// flight, so the windows are small.
const (
	defaultKeepAlive       = 15 * time.Second
	defaultMaxIdleTimeout  = 45 * time.Second
	defaultStreamWindow    = 256 << 10
	defaultMaxStreamWindow = 2 << 20
	defaultConnWindow      = 512 << 10
	defaultMaxConnWindow   = 4 << 20
)

// quicConfig returns the QUIC config every dial uses.
func (c Config) quicConfig() *quic.Config {
	var q *quic.Config
	if c.QUIC != nil {
		q = c.QUIC.Clone()
	} else {
		q = &quic.Config{}
	}
	if q.KeepAlivePeriod == 0 {
		q.KeepAlivePeriod = defaultKeepAlive
	}
	if q.MaxIdleTimeout == 0 {
		q.MaxIdleTimeout = defaultMaxIdleTimeout
	}
	if q.HandshakeIdleTimeout == 0 {
		q.HandshakeIdleTimeout = c.RequestTimeout
	}
	if q.InitialStreamReceiveWindow == 0 {
		q.InitialStreamReceiveWindow = defaultStreamWindow
	}
	if q.MaxStreamReceiveWindow == 0 {
		q.MaxStreamReceiveWindow = defaultMaxStreamWindow
	}
	if q.InitialConnectionReceiveWindow == 0 {
		q.InitialConnectionReceiveWindow = defaultConnWindow
	}
	if q.MaxConnectionReceiveWindow == 0 {
		q.MaxConnectionReceiveWindow = defaultMaxConnWindow
	}
	// The server never opens streams.
	if q.MaxIncomingStreams == 0 {
		q.MaxIncomingStreams = -1
	}
	if q.MaxIncomingUniStreams == 0 {
		q.MaxIncomingUniStreams = -1
	}
	if q.TokenStore == nil {
		q.TokenStore = quic.NewLRUTokenStore(4, 4)
	}
	return q
}
