// Package bench measures Tern — and, through the same Target interface, its
// peers — on mobile-messaging workloads: durable throughput, latency at a
// fixed rate, idle connections, reconnect storms, and bad mobile networks.
// Every scenario runs a delivery validator over what each receiver got:
// ordered, unique, reliable (every acknowledged message arrives, no gaps)
// and resumable (a reconnecting client continues where it stopped).
//
// bench drives Tern only through its public client SDK (package client); it
// never imports the server's packages. cmd/tern starts the server it
// measures (in process, or as a child process) and hands bench a Target.
//
// # Scenarios
//
// Each scenario is a function over a Target returning a *Result (named
// figures, time series, a latency CDF and the Validation):
//
//   - Throughput: N senders → M receivers with a window of sends in flight
//     per sender; sent/s (acknowledged), delivered/s end to end, CPU per
//     message.
//   - Latency: an open-loop fixed rate; send → delivered percentiles
//     measured from the scheduled send time (no coordinated omission).
//   - Connections: a ramp to N idle connections; the server's memory and
//     keepalive CPU per connection, from its /metrics (ServerMetrics).
//     Worker processes (Worker, ServeWorker) hold shares of the clients
//     when one process cannot open enough sockets.
//   - Storm: N clients disconnected at once, sent a message each, then all
//     reconnected at once, with 0-RTT and then with full handshakes.
//   - Mobile: the latency workload with the receivers behind an
//     internal/netsim proxy (delay, jitter, loss) switching networks.
//
// Optional capabilities (ZeroRTTSetter, Proxyable, NetworkSwitcher,
// HandshakeReporter, StatsReporter) let scenarios use what only some
// targets can do; Tern has them all.
//
// # Validator
//
// Message bodies carry a Stamp (run, sender, receiver, per-pair counter,
// send time), so deliveries of any target are checked the same way. A
// History records every send (issued, acknowledged or failed) and every
// delivery per receiver and session (one per Connect); Validate checks the
// guarantees over it after the run (see Guarantee) and names the first
// violations. The workloads issue a pair's sends one after the other, so the
// order of issue is the order the pair's messages must arrive in.
//
// # Concurrency
//
// Scenarios own every goroutine they start (clients, senders, the progress
// line) and stop them before returning; a Result is not shared. A History
// is safe for concurrent use under the rules on its type.
package bench
