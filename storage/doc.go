// Package storage is the durable implementation of core.Store: the key
// layout and value encodings of Tern's state, the batching writer that
// applies core's deterministic commands, and recovery on open.
//
// Two backends share everything above a small ordered key-value interface:
// OpenBadger (Badger v4, every commit fsync'd) and NewMemory (a
// copy-on-write treap per shard, for tests and `tern serve --memory`). Both
// pass the contract suite in storage/storetest.
//
// # Key layout
//
// One byte names the table, then the shard as 2 big-endian bytes, then the
// ids and fixed-width big-endian numbers of the record; ids other than the
// last carry a one-byte length. A mailbox's entries are
// 'm' shard len(user) user seq(8), so one prefix covers the mailbox in seq
// order. The full table is in keys.go; the value encodings (a version byte,
// then varints and length-prefixed fields) in codec.go. Two global keys hold
// the format version and the shard count, checked at every open; each shard
// keeps its applied index (commands applied) in the same transaction as
// their effects.
//
// # Concurrency
//
// A Store is safe for concurrent use. Each shard has one writer goroutine,
// started by OpenBadger or NewMemory, which owns every write to the shard's
// keys: Apply puts the command on the shard's bounded queue (failing fast
// with core.ErrOverloaded when it is full), and the writer takes the first
// queued command, drains what else is queued (up to Options.MaxBatch),
// applies them one after another and commits them in a single transaction
// (one fsync). Commits are pipelined one deep: while a transaction commits,
// the writer applies the next batch over its writes, and commits that batch
// once the first returned (applying it again if the first failed).
//
// Each command writes into its own overlay first, so a command whose Apply
// fails writes nothing and the batch goes on. When Badger refuses a
// transaction as too big, the writer commits what fits and goes on in a new
// one; a command is never split, and one too big on its own fails. Callers
// get their result only after their transaction committed, from the
// goroutine that completed the commit; a failed commit fails every command
// in it. Because shards have disjoint keys and one writer each, Badger's
// conflict detection is off.
//
// Reads (Head, Entries, ...) see committed state only, in a read
// transaction (memory: a snapshot taken with one atomic load). Outbox and
// Mailboxes read in pages and call their fn between reads without holding
// any lock, so fn may call back into the store.
//
// Close stops accepting commands (Apply returns core.ErrClosed), lets each
// writer apply and commit what is already queued, waits for the writers to
// return, then waits for reads in progress and closes the database.
//
// # Expiry
//
// Dedup and delivery records carry Expires. Badger is given Expires plus
// ExpiryGrace (rounded up to the second) as the key's expiry and drops the
// record by wall-clock time afterwards; the memory backend keeps expired
// records. core checks Expires against the command's own time, so both
// answer alike while commands' times are within ExpiryGrace of the clock.
package storage
