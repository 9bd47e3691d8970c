package bench

import "context"

// Optional capabilities. A Target or Conn may implement these; a scenario
// that needs one says so in its result when the target lacks it (and does
// without, or refuses to run).

// ZeroRTTSetter is a Target whose clients can resume their TLS sessions
// and send 0-RTT data on reconnect. SetZeroRTT(false) makes later Connects
// do full handshakes without 0-RTT (fresh TLS state); true restores
// resumption with 0-RTT.
type ZeroRTTSetter interface {
	SetZeroRTT(on bool)
}

// Proxyable is a Target reachable on a loopback UDP address, whose clients
// can be pointed at another address (a netsim proxy in front of it).
type Proxyable interface {
	// Addr is the server's UDP address.
	Addr() string
	// Via returns a Target whose clients connect to addr instead. It shares
	// the receiver's client state (what it delivered, TLS sessions), so a
	// user may move between the two.
	Via(addr string) Target
}

// NetworkSwitcher is a Conn that can move to another local address, as a
// phone moving from Wi-Fi to cellular.
type NetworkSwitcher interface {
	// SwitchNetwork moves the connection to localAddr (e.g. "127.0.0.2:0").
	// An error means the target fell back to something other than a
	// migration (a reconnect, for Tern) or failed.
	SwitchNetwork(ctx context.Context, localAddr string) error
}

// Handshake says how a Conn's connection was established.
type Handshake struct {
	Resumed bool // the TLS session was resumed
	ZeroRTT bool // the server accepted 0-RTT data
}

// HandshakeReporter is a Conn that knows how its connection was set up.
type HandshakeReporter interface {
	Handshake() Handshake
}

// StatsReporter is a Conn with client-side counters (reconnects,
// migrations...), summed over a scenario's conns in its result.
type StatsReporter interface {
	Stats() map[string]uint64
}
