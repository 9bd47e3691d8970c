package netsim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Proxy. The zero value of each field but Target means
// its documented default.
type Config struct {
	// Target is the server's UDP address: a loopback IP literal (127.0.0.0/8
	// or ::1) or "localhost" (taken as 127.0.0.1, never looked up) and a port.
	Target string
	// Listen is where clients send; it must be loopback too. Default "127.0.0.1:0".
	Listen string
	// Up impairs client→server packets, Down server→client packets.
	Up, Down Link
	// Seed seeds the random decisions; 0 means time-based.
	Seed int64
	// FlowIdle closes a flow that saw no packet in either direction for this
	// long, like an expiring NAT mapping. Default 2 minutes.
	FlowIdle time.Duration
}

// DefaultFlowIdle is the flow idle timeout when Config.FlowIdle is 0.
const DefaultFlowIdle = 2 * time.Minute

var (
	// ErrNotLoopback is returned for a Target, Listen or RebindTo address
	// outside 127.0.0.0/8 and ::1: the proxy must never send traffic elsewhere.
	ErrNotLoopback = errors.New("not a loopback address")
	// ErrClosed is returned by Rebind and RebindTo after Close.
	ErrClosed = errors.New("netsim: proxy closed")
)

// maxOldSockets bounds the upstream sockets a flow keeps reading after
// Rebind replaced them (to count late packets as Drops.Rebound).
const maxOldSockets = 4

// socketBuffer is the kernel buffer size asked for on every socket (the
// kernel may grant less).
const socketBuffer = 2 << 20

// Proxy forwards UDP datagrams between clients and one target, impairing
// them on the way. See the package documentation.
type Proxy struct {
	target   netip.AddrPort
	ln       *net.UDPConn // clients send here; server→client packets leave from here
	flowIdle time.Duration
	start    time.Time // time base for the atomics below
	up, down *pipe

	downIPs        sync.Map // netip.Addr → struct{}: client networks that are down
	blackholeOn    atomic.Bool
	blackholeUntil atomic.Int64 // ns since start; the blackhole is on before it

	rtMu    sync.Mutex // guards the round-trip state
	rtEpoch uint64     // bumped by ResetRoundTrips
	maxUp   int64      // highest depth delivered to the server in rtEpoch
	maxDown int64      // highest depth delivered to a client in rtEpoch

	done      chan struct{} // closed by Close: stops run and expireFlows
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex // guards the fields below
	closed bool
	flows  map[netip.AddrPort]*flow
	bindIP netip.Addr // upstream sockets bind to bindIP:0
}

// flow is one client source address and its upstream socket.
type flow struct {
	client   netip.AddrPort
	lastSeen atomic.Int64 // ns since Proxy.start

	mu   sync.Mutex
	conn *net.UDPConn   // current upstream socket; nil once the flow is closed
	old  []*net.UDPConn // replaced by Rebind, still read (and dropped from)
}

func (f *flow) current() *net.UDPConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conn
}

func (f *flow) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
	for _, c := range f.old {
		c.Close()
	}
	f.old = nil
}

// New starts a proxy listening on cfg.Listen and forwarding to cfg.Target.
func New(cfg Config) (*Proxy, error) {
	target, err := parseLoopback("Target", cfg.Target)
	if err != nil {
		return nil, err
	}
	if target.Port() == 0 {
		return nil, fmt.Errorf("netsim: Target %q: want a port", cfg.Target)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	listen, err := parseLoopback("Listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	if err := cfg.Up.validate(); err != nil {
		return nil, fmt.Errorf("netsim: Up: %w", err)
	}
	if err := cfg.Down.validate(); err != nil {
		return nil, fmt.Errorf("netsim: Down: %w", err)
	}
	switch {
	case cfg.FlowIdle < 0:
		return nil, fmt.Errorf("netsim: FlowIdle = %v: want >= 0", cfg.FlowIdle)
	case cfg.FlowIdle == 0:
		cfg.FlowIdle = DefaultFlowIdle
	}
	seed := uint64(cfg.Seed)
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}

	ln, err := listenUDP(listen)
	if err != nil {
		return nil, fmt.Errorf("netsim: listen: %w", err)
	}
	p := &Proxy{
		target:   target,
		ln:       ln,
		flowIdle: cfg.FlowIdle,
		start:    time.Now(),
		done:     make(chan struct{}),
		flows:    make(map[netip.AddrPort]*flow),
		bindIP:   netip.IPv6Loopback(),
	}
	if target.Addr().Is4() {
		p.bindIP = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	// One stream per direction, so that each direction's decisions depend
	// only on its own packets.
	p.up = newPipe(cfg.Up, rand.New(rand.NewPCG(seed, 1)), p.deliverUp, p.blackholed)
	p.down = newPipe(cfg.Down, rand.New(rand.NewPCG(seed, 2)), p.deliverDown, p.blackholed)

	p.wg.Add(4)
	go func() { defer p.wg.Done(); p.up.run(p.done) }()
	go func() { defer p.wg.Done(); p.down.run(p.done) }()
	go p.readClients()
	go p.expireFlows()
	return p, nil
}

// parseLoopback parses a host:port whose host is a loopback IP literal or
// "localhost". It never resolves names, so it sends nothing anywhere.
func parseLoopback(what, s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netsim: %s %q: %w", what, s, err)
	}
	var ip netip.Addr
	if host == "localhost" {
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	} else if ip, err = netip.ParseAddr(host); err != nil {
		return netip.AddrPort{}, fmt.Errorf("netsim: %s %q: want a loopback IP literal or localhost: %w", what, s, ErrNotLoopback)
	}
	ip = ip.Unmap()
	if !ip.IsLoopback() || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("netsim: %s %q: %w (want 127.0.0.0/8 or ::1)", what, s, ErrNotLoopback)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("netsim: %s %q: bad port: %w", what, s, err)
	}
	return netip.AddrPortFrom(ip, uint16(n)), nil
}

func listenUDP(ap netip.AddrPort) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	// Best effort: the kernel caps these at its own maximum.
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
	return c, nil
}

// Addr is the address clients send to.
func (p *Proxy) Addr() string { return p.ln.LocalAddr().String() }

// SetLinks replaces both links. Packets already scheduled keep their fate;
// packets arriving from now on see the new links. The bursty-loss state and
// the bandwidth FIFO's backlog carry over. It panics on a Link that New
// would refuse.
func (p *Proxy) SetLinks(up, down Link) {
	if err := up.validate(); err != nil {
		panic("netsim: SetLinks: Up: " + err.Error())
	}
	if err := down.validate(); err != nil {
		panic("netsim: SetLinks: Down: " + err.Error())
	}
	p.up.setLink(up)
	p.down.setLink(down)
}

// Links returns the links in force, defaults filled in.
func (p *Proxy) Links() (up, down Link) { return p.up.getLink(), p.down.getLink() }

// Blackhole drops every packet both ways for d: packets arriving and
// packets due for delivery. Blackhole(0) ends any blackhole now, as does
// SetBlackhole(false).
func (p *Proxy) Blackhole(d time.Duration) {
	if d <= 0 {
		p.SetBlackhole(false)
		return
	}
	p.blackholeUntil.Store(int64(time.Since(p.start) + d))
}

// SetBlackhole turns the blackhole on until SetBlackhole(false) or
// Blackhole(0).
func (p *Proxy) SetBlackhole(on bool) {
	p.blackholeOn.Store(on)
	if !on {
		p.blackholeUntil.Store(0)
	}
}

// SetClientIPDown takes the network of the clients whose address is ip down
// (or up again): every packet from or to such a client is dropped as
// blackholed, including packets in flight. It models one interface of a
// phone going away (Wi-Fi out of range) while another (cellular, a client
// socket bound to another loopback address) keeps working.
func (p *Proxy) SetClientIPDown(ip string, down bool) error {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("netsim: client ip %q: %w", ip, err)
	}
	if down {
		p.downIPs.Store(a.Unmap(), struct{}{})
	} else {
		p.downIPs.Delete(a.Unmap())
	}
	return nil
}

func (p *Proxy) clientDown(client netip.AddrPort) bool {
	_, down := p.downIPs.Load(client.Addr())
	return down
}

func (p *Proxy) blackholed(now time.Time) bool {
	return p.blackholeOn.Load() || int64(now.Sub(p.start)) < p.blackholeUntil.Load()
}

// Rebind simulates NAT rebinding: every flow gets a new upstream socket,
// so the server sees a new source port. Server→client packets sent to an
// old port afterwards are dropped (Drops.Rebound). Packets still in flight
// towards the server leave from the new socket.
func (p *Proxy) Rebind() error { return p.rebind(netip.Addr{}) }

// RebindTo is Rebind with the new upstream sockets, and those of flows
// created later, bound to ip (e.g. "127.0.0.2"): the client's public
// address changed. ip must be loopback, of the Target's family.
func (p *Proxy) RebindTo(ip string) error {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("netsim: RebindTo %q: %w", ip, err)
	}
	a = a.Unmap()
	if !a.IsLoopback() || a.Zone() != "" {
		return fmt.Errorf("netsim: RebindTo %q: %w (want 127.0.0.0/8 or ::1)", ip, ErrNotLoopback)
	}
	if a.Is4() != p.target.Addr().Is4() {
		return fmt.Errorf("netsim: RebindTo %q: Target %v is of the other IP family", ip, p.target)
	}
	return p.rebind(a)
}

// rebind gives every flow a new upstream socket on ip, or on the current
// bind IP when ip is the zero Addr.
func (p *Proxy) rebind(ip netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if ip.IsValid() {
		p.bindIP = ip
	}
	ip = p.bindIP
	var errs []error
	for _, f := range p.flows {
		conn, err := listenUDP(netip.AddrPortFrom(ip, 0))
		if err != nil {
			errs = append(errs, fmt.Errorf("netsim: rebind flow %v: %w", f.client, err))
			continue
		}
		f.mu.Lock()
		f.old = append(f.old, f.conn)
		f.conn = conn
		if len(f.old) > maxOldSockets {
			f.old[0].Close()
			f.old = f.old[1:]
		}
		f.mu.Unlock()
		p.wg.Add(1)
		go p.readServer(f, conn)
	}
	return errors.Join(errs...)
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	return Stats{Up: p.up.snapshot(), Down: p.down.snapshot()}
}

// Flows is the number of open flows (distinct client addresses).
func (p *Proxy) Flows() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.flows)
}

// RoundTrips is the highest causal depth of the server→client packets
// delivered since New or the last ResetRoundTrips; see the package
// documentation for the definition.
func (p *Proxy) RoundTrips() int {
	p.rtMu.Lock()
	defer p.rtMu.Unlock()
	return int(p.maxDown)
}

// ResetRoundTrips zeroes the round-trip count. Packets already in flight
// were stamped before the reset: their delivery does not count.
func (p *Proxy) ResetRoundTrips() {
	p.rtMu.Lock()
	defer p.rtMu.Unlock()
	p.rtEpoch++
	p.maxUp, p.maxDown = 0, 0
}

// stamp sets a packet's causal depth on arrival.
func (p *Proxy) stamp(pkt *packet, up bool) {
	p.rtMu.Lock()
	defer p.rtMu.Unlock()
	pkt.epoch = p.rtEpoch
	if up {
		pkt.depth = p.maxDown + 1
	} else {
		pkt.depth = p.maxUp
	}
}

// delivered raises the maximum for the packet's direction. Called before
// the packet is written, so RoundTrips counts a packet the client can read.
func (p *Proxy) delivered(pkt *packet, up bool) {
	p.rtMu.Lock()
	defer p.rtMu.Unlock()
	if pkt.epoch != p.rtEpoch {
		return
	}
	if up {
		p.maxUp = max(p.maxUp, pkt.depth)
	} else {
		p.maxDown = max(p.maxDown, pkt.depth)
	}
}

// Close stops every goroutine, closes every socket and waits. It is
// idempotent; packets still queued are discarded.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		flows := p.flows
		p.flows = nil
		p.mu.Unlock()

		close(p.done)
		p.closeErr = p.ln.Close()
		for _, f := range flows {
			f.close()
		}
		p.wg.Wait()
		p.up.drain()
		p.down.drain()
	})
	return p.closeErr
}

func (p *Proxy) touch(f *flow) { f.lastSeen.Store(int64(time.Since(p.start))) }

// readClients reads the listening socket until Close closes it.
func (p *Proxy) readClients() {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // only Close closes it; UDP reads report no peer errors
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if p.clientDown(from) {
			p.up.dropArrived(n, dropBlackhole)
			continue
		}
		f, err := p.flowFor(from)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return
			}
			p.up.dropArrived(n, dropError)
			continue
		}
		p.touch(f)
		pkt := newPacket(buf[:n])
		pkt.flow = f
		p.stamp(pkt, true)
		p.up.arrive(pkt)
	}
}

// flowFor returns the flow of a client address, opening it if new.
func (p *Proxy) flowFor(client netip.AddrPort) (*flow, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if f, ok := p.flows[client]; ok {
		return f, nil
	}
	conn, err := listenUDP(netip.AddrPortFrom(p.bindIP, 0))
	if err != nil {
		return nil, fmt.Errorf("netsim: open flow %v: %w", client, err)
	}
	f := &flow{client: client, conn: conn}
	p.touch(f)
	p.flows[client] = f
	p.wg.Add(1)
	go p.readServer(f, conn)
	return f, nil
}

// readServer reads one upstream socket of f until it is closed (by Close,
// by expireFlows, or by rebind when too many old sockets pile up).
func (p *Proxy) readServer(f *flow, conn *net.UDPConn) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != p.target {
			continue // only the target talks to upstream sockets
		}
		if f.current() != conn {
			p.down.dropArrived(n, dropRebound)
			continue
		}
		p.touch(f)
		pkt := newPacket(buf[:n])
		pkt.flow = f
		p.stamp(pkt, false)
		p.down.arrive(pkt)
	}
}

func (p *Proxy) deliverUp(pkt *packet) dropReason {
	conn := pkt.flow.current()
	if conn == nil {
		return dropClosedFlow
	}
	if p.clientDown(pkt.flow.client) {
		return dropBlackhole
	}
	p.delivered(pkt, true)
	if _, err := conn.WriteToUDPAddrPort(pkt.payload(), p.target); err != nil {
		if pkt.flow.current() == nil {
			return dropClosedFlow
		}
		return dropError
	}
	return dropNone
}

func (p *Proxy) deliverDown(pkt *packet) dropReason {
	if pkt.flow.current() == nil {
		return dropClosedFlow
	}
	if p.clientDown(pkt.flow.client) {
		return dropBlackhole
	}
	p.delivered(pkt, false)
	if _, err := p.ln.WriteToUDPAddrPort(pkt.payload(), pkt.flow.client); err != nil {
		return dropError
	}
	return dropNone
}

// expireFlows closes flows idle for flowIdle until Close.
func (p *Proxy) expireFlows() {
	defer p.wg.Done()
	t := time.NewTicker(min(max(p.flowIdle/4, 5*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		now := int64(time.Since(p.start))
		p.mu.Lock()
		for client, f := range p.flows {
			if now-f.lastSeen.Load() >= int64(p.flowIdle) {
				delete(p.flows, client)
				f.close()
			}
		}
		p.mu.Unlock()
	}
}
