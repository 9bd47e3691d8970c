// Package core is Tern's logic tier: one mailbox per user with gap-free
// sequence numbers, idempotent sends, syncs and acknowledgements in account
// or device mode, groups with write fan-out through a reliable forwarder,
// blocklists, per-sender rate limits, retention, and the routes from users to
// their live sessions that turn every append into a notify.
//
// core works on plain Go types. It declares what it consumes — Store (with
// StateTx and Command), Sink, Metrics — and never imports the wire protocol,
// QUIC or Badger. Every state change is a deterministic Command applied by
// the Store, so a replication log can later drive the same code.
//
// # Concurrency
//
// A Core is safe for concurrent use. New starts two kinds of goroutines that
// Close stops and waits for: the forwarder (a scheduler, a flusher and at
// most Config.Forward.MaxInFlight deliveries) and the retention sweeper.
// Sink methods are called from whichever goroutine applied the change and
// must not block.
package core
