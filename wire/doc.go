// Package wire is Tern's protocol: the protobuf messages (tern.proto), how
// they are framed on QUIC streams, the ALPN and capability version, and the
// error codes with the ranges that tell a client what to do.
//
// wire is a leaf: it imports only the standard library and protobuf, so that
// the server (edge) and the client SDK can both depend on it and on nothing of
// each other.
//
// # Protocol flow
//
// A client dials QUIC with ALPN [ALPN] ("tern/1") and TLS 1.3.
//
//  1. The first bidirectional stream the client opens is the session stream.
//     The client writes SessionUp{Hello}; the server answers
//     SessionDown{Welcome}, or SessionDown{Error} and closes the connection.
//  2. For the life of the connection the server writes SessionDown{Notify}
//     (coalesced: only the newest seq matters) and, before it goes away,
//     SessionDown{GoAway}. The client may write SessionUp{AppStateUpdate}.
//  3. Every request is its own bidirectional stream: the client writes one
//     Request frame and closes its send side; the server writes one Response
//     frame and closes. Requests never block each other.
//
// A frame is the message's length as an unsigned LEB128 varint followed by
// the protobuf encoding of the message. Frames longer than the receiver's
// maximum are refused with [CodeFrameTooLarge] before their body is read.
// Unknown fields are ignored; a Request whose oneof the server does not
// know is answered with [CodeUnsupported]; unknown session frames are
// skipped.
//
// # Concurrency
//
// Functions in this package hold no state and are safe for concurrent use;
// generated messages are not safe for concurrent mutation.
package wire
