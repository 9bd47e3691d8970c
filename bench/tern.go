package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/wire"
)

// TernConfig configures the Tern target.
type TernConfig struct {
	// Addr is the edge's UDP host:port. Required.
	Addr string
	// TLS holds the roots and ServerName the clients use; every user gets
	// a clone with its own session cache (for resumption and 0-RTT).
	TLS *tls.Config
	// Token mints a token for one of the benchmark's users (any device
	// name; one device per user). Required. Like an app, each user keeps
	// the token it got and asks for a new one after 10 minutes
	// (tokenReuse), so tokens must be valid for longer than that.
	Token func(user string) (string, error)
	// Client, when set, adjusts each client's configuration last (timeouts,
	// QUIC settings...). The bench owns OnMessage, SeqStore and TokenFunc.
	Client func(user string, c *client.Config)
	// Name labels the target; default "tern".
	Name string
	// LocalIPs, when set, are the local addresses clients bind, taken in
	// turn (one per Connect). Default: when Addr is an IPv4 loopback
	// address, 64 loopback addresses (127.42.0.1–127.42.0.64), since one
	// address has only the kernel's ephemeral port range (28,232 ports by
	// default) for every client socket of every process on it; otherwise
	// none (any address).
	LocalIPs []string
}

// Tern is the Target for Tern, driven through the client SDK. Each user
// has one device; its seq (what it was handed) and its TLS session cache
// live in the Tern value across Connects, so a user that connects again
// resumes where it stopped, in 0-RTT when the server's ticket allows.
// Deliveries are the messages sent to the user; the copies of its own
// sends that the SDK also pulls (Message.Mine) are left out.
type Tern struct {
	cfg     TernConfig
	addr    string // where clients connect: cfg.Addr, or a proxy for Via
	users   *sync.Map
	noEarly *atomic.Bool   // SetZeroRTT(false)
	next    *atomic.Uint64 // LocalIPs turn
}

var (
	_ Target        = (*Tern)(nil)
	_ ZeroRTTSetter = (*Tern)(nil)
	_ Proxyable     = (*Tern)(nil)
)

// ternUser is the state a user's device keeps between connections.
type ternUser struct {
	seq     *client.MemorySeqStore
	tickets tls.ClientSessionCache

	mu     sync.Mutex
	token  string
	minted time.Time
}

// tokenReuse is how long a user keeps a minted token. An app holds its
// device's token across reconnects; minting one per connect would put an
// Ed25519 signature per reconnect into the clients' CPU (~2% of a
// reconnect storm's).
const tokenReuse = 10 * time.Minute

// tokenFor returns u's token, minting one with mint when it has none or
// its token is older than tokenReuse.
func (u *ternUser) tokenFor(mint func() (string, error)) (string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.token != "" && time.Since(u.minted) < tokenReuse {
		return u.token, nil
	}
	tok, err := mint()
	if err != nil {
		return "", err
	}
	u.token, u.minted = tok, time.Now()
	return tok, nil
}

// NewTern returns the Tern target.
func NewTern(cfg TernConfig) (*Tern, error) {
	if cfg.Addr == "" {
		return nil, errors.New("bench: TernConfig.Addr is required")
	}
	if cfg.Token == nil {
		return nil, errors.New("bench: TernConfig.Token is required")
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{}
	}
	if cfg.Name == "" {
		cfg.Name = "tern"
	}
	if cfg.LocalIPs == nil {
		cfg.LocalIPs = loopbackSpread(cfg.Addr)
	}
	return &Tern{cfg: cfg, addr: cfg.Addr, users: new(sync.Map), noEarly: new(atomic.Bool), next: new(atomic.Uint64)}, nil
}

// loopbackSpread is the default TernConfig.LocalIPs for addr.
func loopbackSpread(addr string) []string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		return nil
	}
	ips := make([]string, 64)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.42.0.%d", i+1)
	}
	return ips
}

// Name implements Target.
func (t *Tern) Name() string { return t.cfg.Name }

// Addr implements Proxyable: the server's address.
func (t *Tern) Addr() string { return t.cfg.Addr }

// Via implements Proxyable.
func (t *Tern) Via(addr string) Target {
	v := *t
	v.addr = addr
	return &v
}

// SetZeroRTT implements ZeroRTTSetter. Off, connects use Disable0RTT and a
// fresh TLS session cache: full handshakes.
func (t *Tern) SetZeroRTT(on bool) { t.noEarly.Store(!on) }

// Close implements Target; the Tern target holds nothing beyond its conns.
func (t *Tern) Close() error { return nil }

// localAddr is the next client's local address, "" for any.
func (t *Tern) localAddr() string {
	if len(t.cfg.LocalIPs) == 0 {
		return ""
	}
	i := t.next.Add(1) - 1
	return net.JoinHostPort(t.cfg.LocalIPs[i%uint64(len(t.cfg.LocalIPs))], "0")
}

func (t *Tern) user(name string) *ternUser {
	if u, ok := t.users.Load(name); ok {
		return u.(*ternUser)
	}
	u, _ := t.users.LoadOrStore(name, &ternUser{
		seq:     client.NewMemorySeqStore(0),
		tickets: tls.NewLRUClientSessionCache(2),
	})
	return u.(*ternUser)
}

// Connect implements Target.
func (t *Tern) Connect(ctx context.Context, user string, deliver func(Delivery)) (Conn, error) {
	u := t.user(user)
	tc := t.cfg.TLS.Clone()
	cfg := client.Config{
		Addr:      t.addr,
		TLS:       tc,
		Platform:  wire.Platform_PLATFORM_DESKTOP,
		LocalAddr: t.localAddr(),
		SeqStore:  u.seq,
		TokenFunc: func(context.Context) (string, error) {
			return u.tokenFor(func() (string, error) { return t.cfg.Token(user) })
		},
	}
	if t.noEarly.Load() {
		cfg.Disable0RTT = true
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	} else {
		tc.ClientSessionCache = u.tickets
	}
	if t.cfg.Client != nil {
		t.cfg.Client(user, &cfg)
	}
	cfg.OnMessage = func(m client.Message) {
		if m.Mine {
			return
		}
		deliver(Delivery{Seq: m.Seq, ID: m.ID.String(), Body: m.Body, At: time.Now()})
	}
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("tern: connect %s: %w", user, err)
	}
	return &ternConn{c: c}, nil
}

type ternConn struct{ c *client.Client }

var (
	_ NetworkSwitcher   = (*ternConn)(nil)
	_ HandshakeReporter = (*ternConn)(nil)
	_ StatsReporter     = (*ternConn)(nil)
)

func (c *ternConn) Send(ctx context.Context, to string, body []byte) error {
	_, err := c.c.SendWith(ctx, client.SendOptions{To: to, Body: body})
	return err
}

func (c *ternConn) Close() error { return c.c.Close() }

func (c *ternConn) SwitchNetwork(ctx context.Context, localAddr string) error {
	return c.c.SwitchNetwork(ctx, localAddr)
}

func (c *ternConn) Handshake() Handshake {
	s := c.c.Stats()
	return Handshake{Resumed: s.Resumed > 0, ZeroRTT: s.Used0RTT > 0}
}

func (c *ternConn) Stats() map[string]uint64 {
	s := c.c.Stats()
	return map[string]uint64{
		"dials": s.Dials, "connects": s.Connects, "reconnects": s.Reconnects,
		"handshakes_full": s.Handshakes, "handshakes_resumed": s.Resumed, "zero_rtt": s.Used0RTT, "zero_rtt_rejected": s.Rejected0RTT,
		"disconnects": s.Disconnects, "goaways": s.GoAways,
		"notifies": s.Notifies, "syncs": s.Syncs, "resyncs": s.Resyncs, "acks": s.Acks,
		"inline": s.Inline, "stale_notifies": s.StaleNotifies,
		"sends": s.Sends, "send_retries": s.SendRetries,
		"migrations": s.Migrations, "migration_failures": s.MigrationFailures, "dead_paths": s.DeadPaths,
		"datagrams_out": s.DatagramsOut, "datagrams_in": s.DatagramsIn,
	}
}
