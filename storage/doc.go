// Package storage is the durable implementation of core.Store: the key
// layout and value encodings of Tern's state, the batching writer that
// applies core's deterministic commands, and recovery on open.
//
// Two backends share everything above a small ordered key-value interface:
// OpenBadger (Badger v4, every commit fsync'd before it is answered or
// read) and NewMemory (a copy-on-write treap per shard, for tests and
// `tern serve --memory`). Both pass the contract suite in storage/storetest.
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
// applies them one after another and commits them in a single transaction.
//
// A commit has two stages. It is applied once its writes are in the
// engine (Badger: its memtable and write-ahead log, in the page cache);
// the shard's writer then reads them. It is durable once fsync'd; only
// then do readers see it and its callers get their results. Commits are
// pipelined one deep on the first stage: while a transaction is being
// applied, the writer applies the next batch over its writes, and commits
// that batch as soon as the first is applied (applying it again if the
// first failed), without waiting for the first to be durable. Between
// commits the writer reads the shard's state through the writes of its
// last few applied commits, kept in memory, over an engine snapshot.
//
// Badger runs in managed mode, without SyncWrites: the store numbers the
// commits itself (after the database's highest version, so timestamps keep
// increasing across restarts), and one syncer goroutine per store, shared
// by the shards, makes them durable in groups. Whenever commits wait, it
// takes the applied watermark W (the highest timestamp at or below which
// every commit was applied: shards commit concurrently, so commits can be
// applied out of order), fdatasyncs the write-ahead logs (and the value
// log files, when a value went there), then publishes W as the durable
// timestamp and answers every commit at or below W. One sync covers every
// commit applied before it started, from every shard, and while it runs
// the writers go on committing: that is the group commit. (Before it
// syncs, the syncer waits for the commits being applied at that moment,
// at most a millisecond, so that they need no sync of their own.)
//
// Badger writes the WAL through a shared mapping of the file. On Linux the
// syncer marks that mapping MADV_RANDOM when it first opens each WAL
// (adviseRandom): without the advice the kernel fills each write fault by
// reading around it into large folios, which are dirtied and written back
// whole, so every sync of a few KiB wrote hundreds of KiB.
//
// The syncer syncs the log files itself rather than calling db.Sync, which
// misses the WAL of a memtable Badger has just rotated and always syncs
// the value log; it follows Badger's file numbering (NNNNN.mem,
// NNNNNN.vlog, checked by TestRotatedLogsAreSynced) to sync each log a
// last time after Badger moved on to the next. Open syncs every log file
// before anything is read, as the previous process may have left unsynced
// commits behind. What this gives up against SyncWrites: unsynced commits
// can reach the disk in any order the kernel writes pages back. Within a
// log that is harmless (replay stops at the first torn entry), but in the
// millisecond or so between a WAL rotation and the next sync, a machine
// crash could keep commits of the new WAL and lose unsynced ones of the
// old, none of them answered or read; likewise a WAL entry could outlive
// the value log data it points to, for values of at least ValueThreshold
// (1 MiB; bodies are far smaller).
//
// Each command writes into its own overlay first, so a command whose Apply
// fails writes nothing and the batch goes on. When Badger refuses a
// transaction as too big, the writer commits what fits and goes on in a new
// one; a command is never split, and one too big on its own fails. Callers
// get their result only once their transaction is durable, from the
// goroutine that completed it (with Badger, the syncer); a failed commit
// fails every command in it. Because shards have disjoint keys and one
// writer each, Badger's conflict detection is off.
//
// Reads (Head, Entries, ...) see durable state only: a Badger read
// transaction at the durable timestamp (memory: a snapshot taken with one
// atomic load), so nobody observes a write that a crash of the machine
// could still take back. Outbox and Mailboxes read in pages, each page at
// the durable timestamp of its own read, and call their fn between reads
// without holding any lock, so fn may call back into the store.
//
// Badger keeps every version of a key until the discard timestamp passes
// it. The syncer moves the discard timestamp up to the durable timestamp,
// at most once a second and never above a read in progress, so that
// compactions drop overwritten and deleted versions (one version is kept).
//
// # Failure
//
// A failed commit (Badger could not apply it) fails the commands in it;
// the writer applies the next batch again over the state before it. A
// failed sync is fatal: after an fsync error the page cache's state is
// unknowable, so the commands it covered fail, the store logs it once at
// Error and from then on every Apply returns an error wrapping
// core.ErrClosed. Reads go on returning the state that was durable before.
// The process must close the store and open it again.
//
// Close stops accepting commands (Apply returns core.ErrClosed), lets each
// writer apply and commit what is already queued, waits for the writers to
// return and for their commits to be durable (answering them), then waits
// for reads in progress and closes the database.
//
// # Expiry
//
// Dedup and delivery records carry Expires. Badger is given Expires plus
// ExpiryGrace (rounded up to the second) as the key's expiry and drops the
// record by wall-clock time afterwards; the memory backend keeps expired
// records. core checks Expires against the command's own time, so both
// answer alike while commands' times are within ExpiryGrace of the clock.
package storage
