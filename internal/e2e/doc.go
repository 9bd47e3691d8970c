// Package e2e holds Tern's end-to-end tests: real QUIC on 127.0.0.1, real
// TLS and tokens, real Badger files, the client SDK or a raw protocol
// client, and — for crash safety — the tern binary as a child process that
// the tests SIGKILL and restart.
package e2e
