// Package client is Tern's Go client SDK, used by apps and by the bench
// suite. It keeps one QUIC connection to an edge (ALPN tern/1, see
// docs/protocol.md), pulls the user's mailbox whenever the server notifies
// it, and sends messages with idempotent retries.
//
// # What it does
//
//   - Dial connects, says Hello with the last stored seq and waits for the
//     Welcome. A background loop then keeps a session up: it reconnects with
//     exponential backoff and full jitter, follows GoAway (after the
//     announced delay), asks TokenFunc for a fresh token on every connect
//     and once more on TOKEN_EXPIRED, and stops for good on terminal
//     failures (SESSION_REPLACED, UNAUTHENTICATED...), reporting them through
//     OnEvent, Err and the errors of later calls.
//   - Reconnects resume the TLS session; when the ticket allows it the
//     client sends its Hello and first Sync in 0-RTT data (both are safe to
//     replay) and redoes them if the server rejects the early data. Group
//     and block changes never go in 0-RTT data.
//   - A pull loop runs after a Welcome that shows new entries, on every
//     Notify above the local seq, and for Sync: it asks for pages after the
//     local seq until has_more is false, hands the entries over, saves the
//     seq and acknowledges it. A RESYNC_NEEDED answer is accepted
//     explicitly: the local seq moves to floor-1 (entries were trimmed) or
//     to the head (the server holds less than the client), an EventResync
//     says so, and the pull goes on.
//   - Every request is its own stream with a per-attempt timeout. Sends
//     carry a client_msg_id (random unless given) and are retried with the
//     same id after connection loss, stream resets, timeouts and retryable
//     codes, so that each is stored once; a send issued while disconnected
//     waits for the next session, bounded by its context.
//   - SwitchNetwork moves the connection to a new local socket with QUIC
//     connection migration, or falls back to a reconnect.
//
// # Delivery guarantee
//
// Messages reach the app (OnMessage, or the Messages channel) in seq order,
// each seq at most once per Client: entries at or below the local seq are
// skipped. The seq is saved to the SeqStore after each page is handed over
// and before it is reported to the server, which counts a reported seq as
// acknowledged; so nothing is acknowledged that the app was not given.
// Across restarts delivery is exactly once when the SeqStore write is
// atomic with the app's own processing (implement SeqStore in the app's
// database), and at least once otherwise: a crash between handing a page
// over and saving the seq redelivers that page. With the Messages channel a
// message counts as handed over once it is in the channel, so messages
// buffered there when the process dies are not redelivered; apps that need
// more use OnMessage, whose return means handed over. The only messages
// never delivered are those the server trimmed before the client pulled
// them, and the client reports them with EventResync.
//
// # Concurrency
//
// A Client is safe for concurrent use. Dial starts two goroutines, the
// connection loop (which owns the connection and its session-stream reader)
// and the pull loop (which owns the local seq, the SeqStore and message
// delivery); request calls run on the caller's goroutine. Close stops them
// and waits for them, including an OnMessage call in progress, so OnMessage
// and OnEvent must not call Close. OnEvent calls are serialised and must
// return quickly; OnMessage calls come from the pull loop one at a time.
package client
