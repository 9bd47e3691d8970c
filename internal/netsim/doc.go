// Package netsim is a UDP proxy that stands between QUIC clients and a
// server on loopback and behaves like a bad mobile network. The kernel Tern
// tests on has no netem: this proxy is the network for Tern's tests and
// benchmarks.
//
// # What it simulates
//
// Each direction has its own [Link]: one-way delay with jitter (packets may
// overtake each other), independent loss, bursty loss (a Gilbert–Elliott
// two-state chain), reordering by holding packets back, duplication, and a
// bandwidth cap that serialises packets through a FIFO of bounded size ahead
// of the delay (tail drop when full). [Proxy.Blackhole] drops everything both
// ways for a while, as in a tunnel or a lift; packets in flight when it
// starts are lost too.
//
// Each distinct client source address is a flow with its own upstream
// socket towards the target, as a NAT would give it, so when a client moves
// to a new local socket (QUIC connection migration) the server sees a new
// source address. Server→client packets of a flow go back to the client
// from the proxy's listening socket. [Proxy.Rebind] and [Proxy.RebindTo]
// simulate NAT rebinding: every flow gets a new upstream socket, and
// packets the server sends to an old port are dropped. A flow idle for
// Config.FlowIdle is closed, like an expiring NAT mapping; the client's
// next packet opens a new flow with a new port.
//
// The proxy only ever sends to the Target and back to the clients that
// sent to it, and both Target and Listen must be loopback (127.0.0.0/8 or
// ::1): New refuses anything else with [ErrNotLoopback], and names are
// never looked up ("localhost" is taken as 127.0.0.1).
//
// Random decisions come from a math/rand/v2 PCG per direction seeded from
// Config.Seed, so with a fixed seed and a fixed arrival order each
// direction's drops, jitter and duplicates repeat exactly.
//
// # Round trips
//
// For tests that must count round trips rather than wall time (0-RTT,
// pipelining), every packet is stamped with a causal depth on arrival:
//
//   - a client→server packet gets 1 + the highest depth of any
//     server→client packet delivered to a client so far;
//   - a server→client packet gets the highest depth of any client→server
//     packet delivered to the server so far.
//
// [Proxy.RoundTrips] is the highest depth of the server→client packets
// delivered so far. A client that sends its first flight and reads the
// answer sees 1 (so does a 0-RTT request); a TLS 1-RTT handshake followed by
// a request and its answer is 2. Read it when the answer arrives: later
// packets (acknowledgements, HANDSHAKE_DONE, session tickets) can deepen it.
// The count is global over all flows. [Proxy.ResetRoundTrips] zeroes it;
// packets stamped before the reset do not count when delivered.
//
// # Concurrency
//
// All methods are safe for concurrent use while traffic flows. SetLinks,
// Blackhole and SetBlackhole take effect for packets arriving from then on
// (the blackhole also for packets due from then on). The proxy owns these
// goroutines, all stopped and waited for by Close: one reading the
// listening socket, one per upstream socket, one delivery goroutine per
// direction (a min-heap of packets by release time and a single timer), and
// one closing idle flows. Close is idempotent.
package netsim
