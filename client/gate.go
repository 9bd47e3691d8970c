package client

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// 0-RTT and quic-go#4303.
//
// In quic-go v0.65 a stream opened during 0-RTT reads the server's transport
// parameters while the connection's run loop replaces them on processing the
// server's handshake, with no synchronisation between the two (quic-go
// issue #4303, open). The client therefore holds back the packets it reads
// from its socket while it opens its 0-RTT streams: the run loop cannot see
// the server's handshake before the streams exist, and releasing the gate
// orders the two for the Go memory model (and the race detector).
//
// The gate is held only for a dial that can go 0-RTT: the session cache
// wrapper releases it at once when it has no ticket allowing early data, and
// a timer releases it when the dial did not return early after all (a ticket
// the TLS stack declined), so a 1-RTT handshake never waits on it for long.

// gateFallback bounds how long a dial that does not go 0-RTT holds packets.
const gateFallback = 250 * time.Millisecond

// gatedConn is the client's UDP socket. It is deliberately not a
// quic.OOBCapablePacketConn (no ReadMsgUDP), so that quic-go reads through
// ReadFrom; it keeps SyscallConn, so that quic-go still sets the DF bit and
// runs path MTU discovery. A phone's one connection does not need GSO or
// batched reads.
type gatedConn struct {
	udp  *net.UDPConn
	st   *counters // datagrams in and out
	mu   sync.Mutex
	gate chan struct{} // nil: open; otherwise closed when the gate opens

	// The last sender's address as a net.Addr, reused while datagrams come
	// from it (nearly always) so that a read allocates nothing. Only the
	// transport's one reading goroutine uses these.
	from     netip.AddrPort
	fromAddr net.Addr
}

var _ net.PacketConn = (*gatedConn)(nil)

func (g *gatedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := g.udp.ReadFromUDPAddrPort(b)
	var addr net.Addr
	if err == nil {
		g.st.datagramsIn.Add(1)
		if from != g.from || g.fromAddr == nil {
			g.from, g.fromAddr = from, net.UDPAddrFromAddrPort(from)
		}
		addr = g.fromAddr
	}
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return n, addr, err
}

// hold closes the gate; the returned func opens it (once, any goroutine).
func (g *gatedConn) hold() (release func()) {
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			if g.gate == gate {
				g.gate = nil
			}
			g.mu.Unlock()
			close(gate)
		})
	}
}

func (g *gatedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var n int
	var err error
	if ua, ok := addr.(*net.UDPAddr); ok {
		n, err = g.udp.WriteToUDPAddrPort(b, ua.AddrPort()) // no sockaddr allocated
	} else {
		n, err = g.udp.WriteTo(b, addr)
	}
	if err == nil {
		g.st.datagramsOut.Add(1)
	}
	return n, err
}

func (g *gatedConn) Close() error                          { return g.udp.Close() }
func (g *gatedConn) LocalAddr() net.Addr                   { return g.udp.LocalAddr() }
func (g *gatedConn) SetDeadline(t time.Time) error         { return g.udp.SetDeadline(t) }
func (g *gatedConn) SetReadDeadline(t time.Time) error     { return g.udp.SetReadDeadline(t) }
func (g *gatedConn) SetWriteDeadline(t time.Time) error    { return g.udp.SetWriteDeadline(t) }
func (g *gatedConn) SetReadBuffer(n int) error             { return g.udp.SetReadBuffer(n) }
func (g *gatedConn) SetWriteBuffer(n int) error            { return g.udp.SetWriteBuffer(n) }
func (g *gatedConn) SyscallConn() (syscall.RawConn, error) { return g.udp.SyscallConn() }

// sessionCache wraps the TLS session cache to learn whether a dial can go
// 0-RTT: when the ticket it returns does not allow early data, the dial's
// gate opens at once.
//
// It also keeps tickets alive through outages: crypto/tls drops a ticket
// whenever a handshake that tried to resume with it fails, including when it
// failed only because the network did not answer. A phone that retried while
// offline would then lose 0-RTT exactly when it comes back. The cache
// remembers what was dropped during a dial, and settle puts it back when the
// dial failed for want of a network.
type sessionCache struct {
	tls.ClientSessionCache
	mu      sync.Mutex
	release func()                             // the gate of the dial in progress
	handed  map[string]*tls.ClientSessionState // tickets Get handed out during the dial
	dropped map[string]*tls.ClientSessionState // of those, the ones crypto/tls deleted
}

func (s *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	cs, ok := s.ClientSessionCache.Get(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok && cs != nil {
		if s.handed == nil {
			s.handed = make(map[string]*tls.ClientSessionState, 1)
		}
		s.handed[key] = cs
	}
	if (!ok || cs == nil || !allowsEarlyData(cs)) && s.release != nil {
		s.release()
	}
	return cs, ok
}

func (s *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	if cs == nil {
		s.mu.Lock()
		if old := s.handed[key]; old != nil {
			if s.dropped == nil {
				s.dropped = make(map[string]*tls.ClientSessionState, 1)
			}
			s.dropped[key] = old
		}
		s.mu.Unlock()
	}
	s.ClientSessionCache.Put(key, cs)
}

// settle ends a dial: when it failed because the network did not answer
// (unreachable, timeout), the tickets crypto/tls dropped meanwhile are put
// back; otherwise (success, or a server that refused) they stay dropped.
func (s *sessionCache) settle(networkFailure bool) {
	s.mu.Lock()
	dropped := s.dropped
	s.dropped, s.handed = nil, nil
	s.mu.Unlock()
	if !networkFailure {
		return
	}
	for key, cs := range dropped {
		if _, ok := s.ClientSessionCache.Get(key); !ok {
			s.ClientSessionCache.Put(key, cs)
		}
	}
}

func (s *sessionCache) setRelease(release func()) {
	s.mu.Lock()
	s.release = release
	s.mu.Unlock()
}

func allowsEarlyData(cs *tls.ClientSessionState) bool {
	_, st, err := cs.ResumptionState()
	return err == nil && st != nil && st.EarlyData
}
