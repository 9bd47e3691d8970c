package netsim_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/internal/netsim"
)

// waitTimeout bounds every wait for a condition; reaching it is a failure,
// never a timing assertion.
const waitTimeout = 10 * time.Second

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// echoServer answers every datagram with the same bytes and remembers the
// source addresses it saw.
type echoServer struct {
	conn *net.UDPConn
	done chan struct{}

	mu      sync.Mutex
	sources []netip.AddrPort // distinct, in order of first appearance
	count   int
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{conn: conn, done: make(chan struct{})}
	go e.serve()
	t.Cleanup(func() {
		conn.Close()
		<-e.done
	})
	return e
}

func (e *echoServer) serve() {
	defer close(e.done)
	buf := make([]byte, 64<<10)
	for {
		n, from, err := e.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		e.mu.Lock()
		e.count++
		if !slices.Contains(e.sources, from) {
			e.sources = append(e.sources, from)
		}
		e.mu.Unlock()
		e.conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

func (e *echoServer) addr() string { return e.conn.LocalAddr().String() }

func (e *echoServer) lastSource() netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.sources) == 0 {
		return netip.AddrPort{}
	}
	return e.sources[len(e.sources)-1]
}

func (e *echoServer) numSources() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sources)
}

// client is a UDP socket that sends to the proxy and records what comes back.
type client struct {
	t    *testing.T
	conn *net.UDPConn
	done chan struct{}

	mu  sync.Mutex
	got []echo
}

type echo struct {
	seq uint32
	at  time.Time
	b   []byte
}

func newClient(t *testing.T, p *netsim.Proxy) *client { return newClientFrom(t, p, "") }

// newClientFrom is newClient with the client's socket bound to local ("":
// the system's choice).
func newClientFrom(t *testing.T, p *netsim.Proxy, local string) *client {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", p.Addr()) // an IP literal: no lookup
	if err != nil {
		t.Fatal(err)
	}
	var laddr *net.UDPAddr
	if local != "" {
		if laddr, err = net.ResolveUDPAddr("udp", local); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c
}

func (c *client) read() {
	defer close(c.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		e := echo{at: time.Now(), b: slices.Clone(buf[:n])}
		if n >= 4 {
			e.seq = binary.BigEndian.Uint32(buf)
		}
		c.mu.Lock()
		c.got = append(c.got, e)
		c.mu.Unlock()
	}
}

func (c *client) close() {
	c.conn.Close()
	<-c.done
}

// send sends a datagram of size bytes (at least 4) carrying seq.
func (c *client) send(seq uint32, size int) {
	c.t.Helper()
	if _, err := c.conn.Write(payload(seq, size)); err != nil {
		c.t.Fatal(err)
	}
}

func payload(seq uint32, size int) []byte {
	b := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(b, seq)
	for i := 4; i < len(b); i++ {
		b[i] = byte(seq) + byte(i)
	}
	return b
}

func (c *client) echoes() []echo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func (c *client) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *client) waitCount(n int) []echo {
	c.t.Helper()
	waitFor(c.t, "echoes", func() bool { return c.count() >= n })
	return c.echoes()
}

// sendPaced sends n datagrams with seqs first.. and, every window packets,
// waits for the traffic to quiesce, so that no socket buffer on the way
// overflows (a kernel drop would be invisible to Stats). c must be the only
// client of p.
func sendPaced(t *testing.T, p *netsim.Proxy, c *client, first uint32, n, size int) {
	t.Helper()
	const window = 50
	base := p.Stats().Up.Packets
	for i := range n {
		c.send(first+uint32(i), size)
		if (i+1)%window == 0 || i == n-1 {
			want := base + int64(i+1)
			waitFor(t, "the window to quiesce", func() bool {
				s := p.Stats()
				return s.Up.Packets == want && s.Up.Queued == 0 && s.Down.Queued == 0 &&
					s.Down.Packets == s.Up.Delivered && int64(c.count()) == s.Down.Delivered
			})
		}
	}
}

// settle waits until nothing is queued and every packet delivered to the
// echo server has come back to the proxy; it returns the final stats.
func settle(t *testing.T, p *netsim.Proxy) netsim.Stats {
	t.Helper()
	var s netsim.Stats
	waitFor(t, "the proxy to settle", func() bool {
		s = p.Stats()
		return s.Up.Queued == 0 && s.Down.Queued == 0 && s.Down.Packets == s.Up.Delivered
	})
	checkBalance(t, "up", s.Up)
	checkBalance(t, "down", s.Down)
	return s
}

func checkBalance(t *testing.T, dir string, s netsim.DirStats) {
	t.Helper()
	if s.Packets+s.Duplicated != s.Delivered+s.Dropped.Total()+s.Queued {
		t.Errorf("%s stats do not balance: %+v", dir, s)
	}
}

func newProxy(t *testing.T, cfg netsim.Config) *netsim.Proxy {
	t.Helper()
	p, err := netsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPassThrough(t *testing.T) {
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr(), Seed: 1})
	c := newClient(t, p)
	const windows, window = 10, 50
	for w := range windows {
		for i := range window {
			seq := uint32(w*window + i)
			c.send(seq, 1+int(seq)*7%1400)
		}
		c.waitCount((w + 1) * window)
	}
	got := c.echoes()
	if len(got) != windows*window {
		t.Fatalf("%d echoes, want %d", len(got), windows*window)
	}
	for i, e := range got {
		want := payload(uint32(i), 1+i*7%1400)
		if !slices.Equal(e.b, want) {
			t.Fatalf("echo %d: got %d bytes seq %d, want %d bytes seq %d", i, len(e.b), e.seq, len(want), i)
		}
	}
	s := settle(t, p)
	if s.Up.Delivered != windows*window || s.Down.Delivered != windows*window || s.Up.Dropped.Total()+s.Down.Dropped.Total() != 0 {
		t.Errorf("stats %+v", s)
	}
	if s.Up.Reordered+s.Down.Reordered != 0 {
		t.Errorf("reordered without impairments: %+v", s)
	}
}

func TestDelayIsALowerBound(t *testing.T) {
	const delay = 15 * time.Millisecond
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr(), Up: netsim.Link{Delay: delay}, Down: netsim.Link{Delay: delay}})
	c := newClient(t, p)
	sent := make([]time.Time, 20)
	for i := range sent {
		sent[i] = time.Now()
		c.send(uint32(i), 100)
	}
	for _, e := range c.waitCount(len(sent)) {
		if rtt := e.at.Sub(sent[e.seq]); rtt < 2*delay {
			t.Errorf("packet %d came back after %v, want >= %v", e.seq, rtt, 2*delay)
		}
	}
}

// missingRuns returns the lengths of the runs of consecutive seqs in
// [0, n) that never came back.
func missingRuns(got []echo, n int) []int {
	seen := make([]bool, n)
	for _, e := range got {
		seen[e.seq] = true
	}
	var runs []int
	run := 0
	for _, ok := range seen {
		if !ok {
			run++
			continue
		}
		if run > 0 {
			runs = append(runs, run)
		}
		run = 0
	}
	if run > 0 {
		runs = append(runs, run)
	}
	return runs
}

func mean(xs []int) float64 {
	sum := 0
	for _, x := range xs {
		sum += x
	}
	return float64(sum) / float64(len(xs))
}

func TestLoss(t *testing.T) {
	const n = 2000
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr(), Up: netsim.Link{Loss: 0.1}, Seed: 1})
	c := newClient(t, p)
	sendPaced(t, p, c, 0, n, 64)
	s := settle(t, p)
	dropped := s.Up.Dropped.Loss
	if dropped < n*6/100 || dropped > n*14/100 {
		t.Errorf("dropped %d of %d at 10%% loss, want 6–14%%", dropped, n)
	}
	if s.Up.Packets != n || dropped != s.Up.Packets-s.Up.Delivered || s.Up.Dropped.Total() != dropped {
		t.Errorf("drops do not add up: %+v", s.Up)
	}
	got := c.waitCount(int(s.Up.Delivered))
	if len(got) != int(s.Up.Delivered) {
		t.Errorf("%d echoes, proxy delivered %d", len(got), s.Up.Delivered)
	}
	// Independent losses rarely come in runs.
	if m := mean(missingRuns(got, n)); m > 1.5 {
		t.Errorf("mean run of independent losses is %.2f, want about 1.1", m)
	}
}

func TestBurstyLoss(t *testing.T) {
	const n = 2000
	e := startEcho(t)
	// Bad 1 packet in 6 on average (0.05/(0.05+0.25)); a burst lasts 4 packets on average.
	p := newProxy(t, netsim.Config{Target: e.addr(), Up: netsim.Link{BurstStart: 0.05, BurstEnd: 0.25, BurstLoss: 1}, Seed: 1})
	c := newClient(t, p)
	sendPaced(t, p, c, 0, n, 64)
	s := settle(t, p)
	got := c.waitCount(int(s.Up.Delivered))
	runs := missingRuns(got, n)
	if len(runs) == 0 {
		t.Fatal("nothing lost")
	}
	if m := mean(runs); m <= 1.5 {
		t.Errorf("mean loss run %.2f packets, want > 1.5 (bursts of 4 expected)", m)
	}
	if s.Up.Dropped.Burst != int64(n-len(got)) || s.Up.Dropped.Loss != 0 {
		t.Errorf("Dropped %+v, %d echoes of %d", s.Up.Dropped, len(got), n)
	}
}

func TestDuplicate(t *testing.T) {
	const n = 500
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr(), Up: netsim.Link{Duplicate: 0.2}, Seed: 1})
	c := newClient(t, p)
	sendPaced(t, p, c, 0, n, 64)
	s := settle(t, p)
	if s.Up.Duplicated < n/10 || s.Up.Duplicated > n*3/10 {
		t.Errorf("duplicated %d of %d at 20%%", s.Up.Duplicated, n)
	}
	got := c.waitCount(n + int(s.Up.Duplicated))
	copies := make(map[uint32]int)
	for _, e := range got {
		copies[e.seq]++
	}
	twice := 0
	for seq := range uint32(n) {
		switch copies[seq] {
		case 1:
		case 2:
			twice++
		default:
			t.Errorf("seq %d came back %d times", seq, copies[seq])
		}
	}
	if int64(twice) != s.Up.Duplicated || len(got) != n+twice {
		t.Errorf("%d echoes, %d seqs twice; Stats.Up.Duplicated = %d", len(got), twice, s.Up.Duplicated)
	}
}

func TestReorder(t *testing.T) {
	for _, tc := range []struct {
		name string
		link netsim.Link
	}{
		{"held back", netsim.Link{Delay: 2 * time.Millisecond, Reorder: 0.2, ReorderDelay: 20 * time.Millisecond}},
		{"jitter", netsim.Link{Delay: 10 * time.Millisecond, Jitter: 8 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 200
			e := startEcho(t)
			p := newProxy(t, netsim.Config{Target: e.addr(), Up: tc.link, Seed: 1})
			c := newClient(t, p)
			sendPaced(t, p, c, 0, n, 64)
			got := c.waitCount(n)
			late := 0
			var highest uint32
			for i, e := range got {
				if i > 0 && e.seq < highest {
					late++
				}
				highest = max(highest, e.seq)
			}
			if late == 0 {
				t.Error("every packet came back in order")
			}
			s := settle(t, p)
			if s.Up.Reordered == 0 {
				t.Errorf("Stats.Up.Reordered = 0, the client saw %d late", late)
			}
			if tc.link.Reorder > 0 && s.Up.HeldBack == 0 {
				t.Error("Stats.Up.HeldBack = 0")
			}
		})
	}
}

func TestBandwidth(t *testing.T) {
	t.Run("serialises", func(t *testing.T) {
		const bw, n, size = 1_000_000, 100, 1000 // 100 kB at 1 MB/s: at least 100 ms
		e := startEcho(t)
		p := newProxy(t, netsim.Config{Target: e.addr(), Up: netsim.Link{Bandwidth: bw, QueueBytes: 1 << 20}})
		c := newClient(t, p)
		start := time.Now()
		sendPaced(t, p, c, 0, n, size)
		c.waitCount(n)
		if elapsed, min := time.Since(start), time.Duration(n*size)*time.Second/bw; elapsed < min {
			t.Errorf("%d bytes through %d B/s took %v, want >= %v", n*size, bw, elapsed, min)
		}
		if s := settle(t, p); s.Up.Dropped.Total() != 0 {
			t.Errorf("drops below the queue limit: %+v", s.Up.Dropped)
		}
	})
	t.Run("tail drops", func(t *testing.T) {
		// 10 kB/s drains 10 bytes per ms: a 4000-byte FIFO holds about 4 of a burst of 50.
		const n = 50
		e := startEcho(t)
		p := newProxy(t, netsim.Config{Target: e.addr(), Up: netsim.Link{Bandwidth: 10_000, QueueBytes: 4000}})
		c := newClient(t, p)
		for i := range n {
			c.send(uint32(i), 1000)
		}
		waitFor(t, "the proxy to read the burst", func() bool { return p.Stats().Up.Packets == n })
		s := p.Stats()
		if s.Up.Dropped.Queue < n/2 {
			t.Errorf("Dropped.Queue = %d of a burst of %d into a 4-packet FIFO", s.Up.Dropped.Queue, n)
		}
		checkBalance(t, "up", s.Up)
	})
}

func TestBlackhole(t *testing.T) {
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr()})
	c := newClient(t, p)
	c.send(0, 64)
	c.waitCount(1)
	upstream := e.lastSource() // where the server reaches this client's flow

	p.SetBlackhole(true)
	sendPaced(t, p, c, 1, 20, 64)
	s := p.Stats()
	if s.Up.Dropped.Blackhole != 20 || s.Up.Delivered != 1 {
		t.Fatalf("blackhole on: %+v", s.Up)
	}
	// Server→client too.
	e.conn.WriteToUDPAddrPort(payload(99, 64), upstream)
	waitFor(t, "the server's packet", func() bool { return p.Stats().Down.Packets == 2 })
	if s := p.Stats(); s.Down.Dropped.Blackhole != 1 || s.Down.Delivered != 1 {
		t.Fatalf("blackhole on, server→client: %+v", s.Down)
	}

	p.SetBlackhole(false)
	c.send(100, 64)
	if got := c.waitCount(2); got[1].seq != 100 {
		t.Fatalf("after the blackhole: got seq %d, want 100", got[1].seq)
	}

	const d = 100 * time.Millisecond
	start := time.Now()
	p.Blackhole(d)
	for seq := uint32(200); c.count() == 2; seq++ {
		if time.Since(start) > waitTimeout {
			t.Fatal("traffic did not resume after the blackhole")
		}
		c.send(seq, 64)
		time.Sleep(5 * time.Millisecond)
	}
	if elapsed := c.echoes()[2].at.Sub(start); elapsed < d {
		t.Errorf("traffic passed %v into a %v blackhole", elapsed, d)
	}
	if p.Stats().Up.Dropped.Blackhole == 20 {
		t.Error("Blackhole(d) dropped nothing")
	}

	p.Blackhole(time.Hour)
	p.Blackhole(0)
	n := c.count()
	c.send(1000, 64)
	c.waitCount(n + 1)
}

func TestRebind(t *testing.T) {
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr()})
	c := newClient(t, p)

	c.send(1, 64)
	c.waitCount(1)
	first := e.lastSource()

	if err := p.Rebind(); err != nil {
		t.Fatal(err)
	}
	c.send(2, 64)
	if got := c.waitCount(2); got[1].seq != 2 {
		t.Fatalf("after Rebind: echo seq %d", got[1].seq)
	}
	second := e.lastSource()
	if second == first || second.Addr() != first.Addr() {
		t.Errorf("after Rebind the server saw %v, before %v: want a new port on the same IP", second, first)
	}

	// The old mapping is gone: a late packet to it is dropped.
	e.conn.WriteToUDPAddrPort(payload(3, 64), first)
	waitFor(t, "the late packet", func() bool { return p.Stats().Down.Dropped.Rebound == 1 })

	if err := p.RebindTo("127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	c.send(4, 64)
	if got := c.waitCount(3); got[2].seq != 4 {
		t.Fatalf("after RebindTo: echo seq %d, want 4 (the late packet must not arrive)", got[2].seq)
	}
	if third := e.lastSource(); third.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("after RebindTo(127.0.0.2) the server saw %v", third)
	}
	if p.Flows() != 1 {
		t.Errorf("Flows() = %d, want 1", p.Flows())
	}
	if c.count() != 3 {
		t.Errorf("client got %d packets, want 3", c.count())
	}

	if err := p.RebindTo("10.0.0.1"); !errors.Is(err, netsim.ErrNotLoopback) {
		t.Errorf("RebindTo(10.0.0.1) = %v, want ErrNotLoopback", err)
	}
	if err := p.RebindTo("::1"); err == nil {
		t.Error("RebindTo(::1) with an IPv4 target succeeded")
	}
}

func TestClientMigration(t *testing.T) {
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr()})
	c1 := newClient(t, p)
	c1.send(1, 64)
	c1.waitCount(1)
	first := e.lastSource()

	c2 := newClient(t, p) // the client moved to a new local socket
	c2.send(2, 64)
	if got := c2.waitCount(1); got[0].seq != 2 {
		t.Fatalf("new socket got seq %d", got[0].seq)
	}
	if second := e.lastSource(); second == first {
		t.Errorf("the server saw the same source %v from a new client socket", second)
	}
	if p.Flows() != 2 {
		t.Errorf("Flows() = %d, want 2", p.Flows())
	}
	// The old socket still has its own flow.
	c1.send(3, 64)
	c1.waitCount(2)
	if e.numSources() != 2 {
		t.Errorf("the server saw %d sources, want 2", e.numSources())
	}
	if c2.count() != 1 {
		t.Errorf("an echo for the old socket reached the new one")
	}
}

// TestClientIPDown: one of a phone's networks goes away (its client sockets
// hear nothing and reach nothing) while another keeps working.
func TestClientIPDown(t *testing.T) {
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr()})
	wifi := newClientFrom(t, p, "127.0.0.1:0")
	cell := newClientFrom(t, p, "127.0.0.2:0")
	wifi.send(1, 64)
	wifi.waitCount(1)
	if err := p.SetClientIPDown("127.0.0.1", true); err != nil {
		t.Fatal(err)
	}
	wifi.send(2, 64)
	waitFor(t, "the packet from the downed network to be dropped", func() bool { return p.Stats().Up.Dropped.Blackhole == 1 })
	cell.send(3, 64)
	if got := cell.waitCount(1); got[0].seq != 3 {
		t.Fatalf("the other network got seq %d", got[0].seq)
	}
	if wifi.count() != 1 {
		t.Fatalf("the downed network received %d echoes, want only the one before", wifi.count())
	}
	if err := p.SetClientIPDown("127.0.0.1", false); err != nil {
		t.Fatal(err)
	}
	wifi.send(4, 64)
	if got := wifi.waitCount(2); got[1].seq != 4 {
		t.Fatalf("after the network came back: seq %d", got[1].seq)
	}
	if err := p.SetClientIPDown("not-an-ip", true); err == nil {
		t.Fatal("a malformed ip was accepted")
	}
}

func TestFlowIdle(t *testing.T) {
	t.Run("expired flow reopens on a new port", func(t *testing.T) {
		e := startEcho(t)
		p := newProxy(t, netsim.Config{Target: e.addr(), FlowIdle: 30 * time.Millisecond})
		c := newClient(t, p)
		c.send(1, 64)
		c.waitCount(1)
		first := e.lastSource()
		waitFor(t, "the flow to expire", func() bool { return p.Flows() == 0 })
		c.send(2, 64)
		c.waitCount(2)
		if second := e.lastSource(); second == first {
			t.Errorf("after the mapping expired the server still sees %v", second)
		}
	})
	t.Run("queued packets of a closed flow are dropped", func(t *testing.T) {
		e := startEcho(t)
		p := newProxy(t, netsim.Config{Target: e.addr(), FlowIdle: 10 * time.Millisecond, Up: netsim.Link{Delay: 250 * time.Millisecond}})
		c := newClient(t, p)
		c.send(1, 64)
		waitFor(t, "the packet's fate", func() bool { s := p.Stats(); return s.Up.Packets == 1 && s.Up.Queued == 0 })
		if s := p.Stats(); s.Up.Dropped.ClosedFlow != 1 {
			t.Errorf("Dropped = %+v, want one ClosedFlow", s.Up.Dropped)
		}
	})
}

func TestRoundTrips(t *testing.T) {
	e := startEcho(t)
	// The delay back keeps a burst from the client inside one flight.
	p := newProxy(t, netsim.Config{Target: e.addr(), Down: netsim.Link{Delay: 20 * time.Millisecond}})
	c := newClient(t, p)
	if n := p.RoundTrips(); n != 0 {
		t.Fatalf("RoundTrips() = %d before any traffic", n)
	}
	c.send(1, 64)
	c.waitCount(1)
	if n := p.RoundTrips(); n != 1 {
		t.Errorf("request/response: RoundTrips() = %d, want 1", n)
	}
	c.send(2, 64) // triggered by the answer
	c.waitCount(2)
	if n := p.RoundTrips(); n != 2 {
		t.Errorf("a second request after the answer: RoundTrips() = %d, want 2", n)
	}

	p.ResetRoundTrips()
	if n := p.RoundTrips(); n != 0 {
		t.Errorf("after ResetRoundTrips: %d", n)
	}
	for seq := range uint32(3) { // one flight of three packets
		c.send(10+seq, 64)
	}
	c.waitCount(5)
	if n := p.RoundTrips(); n != 1 {
		t.Errorf("three pipelined requests: RoundTrips() = %d, want 1", n)
	}
}

func TestNewRefuses(t *testing.T) {
	for name, cfg := range map[string]netsim.Config{
		"private target":      {Target: "10.0.0.1:443"},
		"public target":       {Target: "8.8.8.8:53"},
		"IPv6 target":         {Target: "[2001:db8::1]:443"},
		"name target":         {Target: "example.com:443"},
		"unspecified target":  {Target: "0.0.0.0:443"},
		"wildcard listen":     {Target: "127.0.0.1:443", Listen: "0.0.0.0:0"},
		"private listen":      {Target: "127.0.0.1:443", Listen: "192.168.1.1:0"},
		"empty target":        {},
		"target without port": {Target: "127.0.0.1:0"},
		"bad loss":            {Target: "127.0.0.1:443", Up: netsim.Link{Loss: 2}},
		"negative FlowIdle":   {Target: "127.0.0.1:443", FlowIdle: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := netsim.New(cfg)
			if err == nil {
				p.Close()
				t.Fatalf("New(%+v) succeeded", cfg)
			}
		})
	}
	for _, target := range []string{"10.0.0.1:443", "8.8.8.8:53", "example.com:443", "[2001:db8::1]:443"} {
		if _, err := netsim.New(netsim.Config{Target: target}); !errors.Is(err, netsim.ErrNotLoopback) {
			t.Errorf("New(Target %s) = %v, want ErrNotLoopback", target, err)
		}
	}
	for _, target := range []string{"localhost:443", "127.0.0.2:443", "127.255.0.1:443"} {
		p, err := netsim.New(netsim.Config{Target: target})
		if err != nil {
			t.Errorf("New(Target %s) = %v", target, err)
			continue
		}
		p.Close()
	}
}

func TestSetLinksPanicsOnInvalidLink(t *testing.T) {
	p := newProxy(t, netsim.Config{Target: "127.0.0.1:9"})
	defer func() {
		if recover() == nil {
			t.Error("SetLinks accepted Loss = -1")
		}
	}()
	p.SetLinks(netsim.Link{Loss: -1}, netsim.Link{})
}

// Configuration changes while traffic flows (run with -race).
func TestConcurrentControl(t *testing.T) {
	e := startEcho(t)
	p := newProxy(t, netsim.Config{Target: e.addr(), Seed: 1})
	clients := []*client{newClient(t, p), newClient(t, p), newClient(t, p)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for seq := uint32(0); ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				c.conn.Write(payload(seq, 200))
				time.Sleep(100 * time.Microsecond)
			}
		})
	}
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			l := netsim.Link{Delay: time.Duration(i%3) * time.Millisecond, Jitter: time.Millisecond, Loss: 0.05, Duplicate: 0.05, Reorder: 0.05, Bandwidth: int64(i%2) * 1_000_000}
			p.SetLinks(l, l)
			p.Blackhole(time.Duration(i%2) * time.Millisecond)
			if i%10 == 0 {
				if err := p.Rebind(); err != nil {
					t.Error(err)
				}
			}
			p.Stats()
			p.RoundTrips()
			p.Flows()
			p.Links()
			time.Sleep(time.Millisecond)
		}
	})
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	s := p.Stats()
	checkBalance(t, "up", s.Up)
	checkBalance(t, "down", s.Down)
	if s.Up.Delivered == 0 || s.Down.Delivered == 0 {
		t.Errorf("nothing got through: %+v", s)
	}
}

func TestCloseReleasesEverything(t *testing.T) {
	e := startEcho(t)
	before := runtime.NumGoroutine()

	p, err := netsim.New(netsim.Config{Target: e.addr(), Up: netsim.Link{Delay: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	var conns []*net.UDPConn
	for range 3 {
		conn, err := net.Dial("udp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn.(*net.UDPConn))
		conn.Write([]byte("queued for an hour"))
	}
	waitFor(t, "three flows", func() bool { return p.Flows() == 3 })
	for range 2 {
		if err := p.Rebind(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := p.Rebind(); !errors.Is(err, netsim.ErrClosed) {
		t.Errorf("Rebind after Close = %v, want ErrClosed", err)
	}
	if p.Flows() != 0 {
		t.Errorf("Flows() = %d after Close", p.Flows())
	}
	for _, c := range conns {
		c.Close()
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
