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
package bench
