package client

import (
	"crypto/tls"
	"net"
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
	mu   sync.Mutex
	gate chan struct{} // nil: open; otherwise closed when the gate opens
}

var _ net.PacketConn = (*gatedConn)(nil)

func (g *gatedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := g.udp.ReadFrom(b)
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

func (g *gatedConn) WriteTo(b []byte, addr net.Addr) (int, error) { return g.udp.WriteTo(b, addr) }
func (g *gatedConn) Close() error                                 { return g.udp.Close() }
func (g *gatedConn) LocalAddr() net.Addr                          { return g.udp.LocalAddr() }
func (g *gatedConn) SetDeadline(t time.Time) error                { return g.udp.SetDeadline(t) }
func (g *gatedConn) SetReadDeadline(t time.Time) error            { return g.udp.SetReadDeadline(t) }
func (g *gatedConn) SetWriteDeadline(t time.Time) error           { return g.udp.SetWriteDeadline(t) }
func (g *gatedConn) SetReadBuffer(n int) error                    { return g.udp.SetReadBuffer(n) }
func (g *gatedConn) SetWriteBuffer(n int) error                   { return g.udp.SetWriteBuffer(n) }
func (g *gatedConn) SyscallConn() (syscall.RawConn, error)        { return g.udp.SyscallConn() }

// sessionCache wraps the TLS session cache to learn whether a dial can go
// 0-RTT: when the ticket it returns does not allow early data, the dial's
// gate opens at once.
type sessionCache struct {
	tls.ClientSessionCache
	mu      sync.Mutex
	release func() // the gate of the dial in progress
}

func (s *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	cs, ok := s.ClientSessionCache.Get(key)
	if !ok || cs == nil || !allowsEarlyData(cs) {
		s.mu.Lock()
		if s.release != nil {
			s.release()
		}
		s.mu.Unlock()
	}
	return cs, ok
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
