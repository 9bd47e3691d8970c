// Package edge terminates Tern's client connections: QUIC (quic-go) with TLS
// 1.3 and ALPN tern/1, token authentication, the session stream (Hello,
// Welcome, Notify, GoAway), one request per stream, and the translation
// between wire messages and the core API (Backend). It is the only package
// that knows both the protocol and core's types; the one table mapping core's
// errors to wire codes lives here (translate.go).
//
// A Server takes connections (ServeConn) or listeners (Serve); Listen is a
// helper that opens a socket and a 0-RTT-capable listener with settings
// suited to many small, mostly idle connections.
//
// # Concurrency
//
// Per connection: one goroutine (run, owned by ServeConn) reads the Hello and
// then writes the session stream — a single writer, so notifies are
// coalesced to the newest head and never queue up; one goroutine reads the
// session stream; one accepts request streams; one short-lived goroutine
// serves each request (at most QUICOptions.MaxStreams at a time). All of them
// end with the QUIC connection. Shutdown stops accepting, sends GoAway with
// a jittered reconnect delay, waits for requests in flight (bounded by its
// context), then closes the connections and waits for their goroutines.
// core.Sink methods (Notify, Replaced) never block.
package edge
