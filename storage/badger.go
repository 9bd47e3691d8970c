package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// formatVersion is the version of the key layout and value encodings,
// stored at open and checked on every later open.
const formatVersion = 1

var (
	// ErrFormatVersion says a data directory was written in a format this
	// build does not read.
	ErrFormatVersion = errors.New("storage: unsupported format version")
	// ErrShardCount says a data directory was created with another number
	// of shards than the one asked for; data is laid out by shard.
	ErrShardCount = errors.New("storage: shard count mismatch")
)

// OpenBadger opens (creating it if needed) the Badger database in dir.
// Apply returns once the command's transaction is fsync'd, and reads see
// only fsync'd state. A fresh directory is stamped with the format version
// and opts.Shards; a directory with another version or shard count is
// refused (ErrFormatVersion, ErrShardCount).
//
// Badger runs in managed mode without SyncWrites: the store numbers the
// commits itself, and one syncer goroutine fsyncs Badger's logs for every
// commit applied meanwhile (see groupCommit and the package doc).
func OpenBadger(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(false).      // the syncer fsyncs, once per group of commits
		WithDetectConflicts(false). // one writer per shard, and shards have disjoint keys
		WithNumVersionsToKeep(1).
		WithLogger(nil)
	if opts.Logger != nil {
		bo = bo.WithLogger(badgerLogger{opts.Logger})
	}
	if opts.tuneBadger != nil {
		opts.tuneBadger(&bo)
	}
	db, err := badger.OpenManaged(bo)
	if err != nil {
		return nil, fmt.Errorf("storage: open badger in %s: %w", dir, err)
	}
	be, err := openBadgerBackend(db, bo, opts)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	s, err := newStore(be, opts)
	if err != nil {
		_ = be.close()
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	return s, nil
}

// openBadgerBackend stamps or checks the format, makes everything in the
// database durable (a previous process may have left commits in the page
// cache that were never fsync'd), and starts the syncer.
func openBadgerBackend(db *badger.DB, bo badger.Options, opts Options) (*badgerBackend, error) {
	last, err := stampFormat(db, opts.Shards, db.MaxVersion())
	if err != nil {
		return nil, err
	}
	logs := newBadgerLogs(bo)
	if err := logs.syncAll(); err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	b := &badgerBackend{db: db, logs: logs, valueThreshold: bo.ValueThreshold}
	if bo.VLogPercentile > 0 {
		b.valueThreshold = 0 // Badger moves the threshold: assume any value may go to the value log
	}
	syncLogs := b.syncLogs
	if opts.UnsafeNoSync {
		opts.Logger.Warn("storage: UnsafeNoSync: commands are answered without an fsync; a crash can lose acknowledged data")
		syncLogs = func() error { return nil }
	}
	sync := syncLogs
	if opts.syncHook != nil {
		sync = func() error { return opts.syncHook(syncLogs) }
	}
	setDiscard := db.SetDiscardTs
	if opts.discardHook != nil {
		setDiscard = func(ts uint64) {
			db.SetDiscardTs(ts)
			opts.discardHook(ts)
		}
	}
	b.gc = newGroupCommit(last, opts.Shards, sync, setDiscard, opts)
	return b, nil
}

// stampFormat writes the format version and shard count into an empty
// database, or checks them in an existing one. It reads at last, the
// database's highest timestamp, and returns the highest timestamp after
// it, its own commit included.
func stampFormat(db *badger.DB, shards int, last uint64) (uint64, error) {
	txn := db.NewTransactionAt(last, true)
	defer txn.Discard()
	version, ok, err := getUint32(txn, keyFormatVersion)
	if err != nil {
		return 0, err
	}
	if ok {
		if version != formatVersion {
			return 0, fmt.Errorf("%w: found %d, this build reads %d", ErrFormatVersion, version, formatVersion)
		}
		stored, ok, err := getUint32(txn, keyShardCount)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, fmt.Errorf("%w: no shard count stored", ErrShardCount)
		}
		if int(stored) != shards {
			return 0, fmt.Errorf("%w: created with %d shards, opened with %d", ErrShardCount, stored, shards)
		}
		return last, nil
	}
	it := txn.NewIterator(badger.IteratorOptions{})
	it.Rewind()
	empty := !it.Valid()
	it.Close()
	if !empty {
		return 0, fmt.Errorf("%w: data without a format version", ErrFormatVersion)
	}
	if err := txn.Set(keyFormatVersion, binary.BigEndian.AppendUint32(nil, formatVersion)); err != nil {
		return 0, err
	}
	if err := txn.Set(keyShardCount, binary.BigEndian.AppendUint32(nil, uint32(shards))); err != nil {
		return 0, err
	}
	if err := txn.CommitAt(last+1, nil); err != nil {
		return 0, err
	}
	return last + 1, nil
}

func getUint32(txn *badger.Txn, key []byte) (uint32, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return 0, false, err
	}
	if len(v) != 4 {
		return 0, false, corrupt(string(key), fmt.Sprintf("want 4 bytes, got %d", len(v)))
	}
	return binary.BigEndian.Uint32(v), true, nil
}

// badgerBackend is Badger in managed mode: commits at the timestamps
// groupCommit hands out, views at the durable timestamp, each writer's
// snapshot at its shard's last applied commit.
type badgerBackend struct {
	db             *badger.DB
	gc             *groupCommit
	logs           *badgerLogs  // used by the syncer only
	valueThreshold int64        // values this long or longer go to the value log
	vlogWritten    atomic.Bool  // a value went to the value log since the syncer last looked
	syncs          atomic.Int64 // calls of syncLogs (tests)
}

func (b *badgerBackend) view(_ int, fn func(kvReader) error) error {
	ts := b.gc.beginRead()
	defer b.gc.endRead(ts)
	txn := b.db.NewTransactionAt(ts, false)
	defer txn.Discard()
	return fn(badgerTxn{txn})
}

func (b *badgerBackend) snapshot(shard int) kvSnapshot {
	return badgerTxn{b.db.NewTransactionAt(b.gc.shardReadTs(shard), false)}
}

func (b *badgerBackend) begin(shard int) kvTxn {
	// The transaction is written to only: the writer reads its own layers
	// over its snapshot.
	return &badgerCommitTxn{badgerTxn: badgerTxn{b.db.NewTransactionAt(b.gc.shardReadTs(shard), true)}, b: b, shard: shard}
}

func (b *badgerBackend) failure() error { return b.gc.failure() }

// flush makes every applied commit durable and answers it, and stops the
// syncer.
func (b *badgerBackend) flush() { b.gc.stop() }

// close flushes and closes the database.
func (b *badgerBackend) close() error {
	b.gc.stop()
	b.logs.close()
	return b.db.Close()
}

// syncLogs makes every commit applied before the call durable, by
// fdatasyncing the log files Badger appends commits to: the memtables'
// write-ahead logs (NNNNN.mem), and the value log files (NNNNNN.vlog) when
// a value went there since the last sync.
//
// It does what db.Sync does, and more, for less. db.Sync msyncs the active
// memtable's WAL and the value log file being written, but not a WAL
// Badger moved on from: a memtable that filled up keeps its WAL unsynced
// until it is flushed to a table, so a commit applied just before the
// rotation would be reported durable while only in the page cache. And it
// always msyncs the value log, which costs a device flush (~0.1 ms here)
// even when nothing was written to it, which is the rule: Badger keeps
// values under ValueThreshold (1 MiB by default) in the LSM tree.
//
// Each kind of log is numbered in the order Badger creates the files; a
// file is written only while it is the newest. So the syncer syncs, in
// order, every file from the last one it synced up to the newest: once a
// file is no longer the newest, it was synced for the last time. Value log
// files go first, as the WALs point into them.
//
// An fdatasync of the file covers what was written through Badger's
// shared mapping of it (Linux has one page cache; msync(MS_SYNC) is the
// same call).
func (b *badgerBackend) syncLogs() error {
	b.syncs.Add(1)
	if b.vlogWritten.Swap(false) {
		if err := b.logs.vlog.sync(); err != nil {
			b.vlogWritten.Store(true)
			return err
		}
	}
	return b.logs.wal.sync()
}

// badgerLogs are the log files syncLogs syncs. Used by the syncer only,
// after open.
type badgerLogs struct {
	wal, vlog *logFiles
}

func newBadgerLogs(bo badger.Options) *badgerLogs {
	return &badgerLogs{
		wal:  &logFiles{dir: bo.Dir, ext: ".mem", format: "%05d.mem", advise: true},
		vlog: &logFiles{dir: bo.ValueDir, ext: ".vlog", format: "%06d.vlog"},
	}
}

// syncAll syncs every log file there is, at open: a process that ended
// before its syncer ran may have left commits in the page cache only.
func (l *badgerLogs) syncAll() error {
	for _, k := range []*logFiles{l.vlog, l.wal} {
		if err := k.syncAll(); err != nil {
			return err
		}
	}
	return nil
}

func (l *badgerLogs) close() {
	l.wal.closeNewest()
	l.vlog.closeNewest()
}

// logFiles is one kind of Badger log file, numbered in creation order.
type logFiles struct {
	dir, ext, format string
	newest           int      // number of the newest file seen; every older one is synced
	f                *os.File // newest, once opened
	advise           bool     // mark Badger's mapping of each file MADV_RANDOM (see adviseRandom)
	rotated          int      // files synced after Badger went on to the next (tests)
	advised          int      // files whose mapping was marked (tests)
}

func (l *logFiles) path(n int) string {
	return filepath.Join(l.dir, fmt.Sprintf(l.format, n))
}

// syncAll syncs every file of the kind and finds the newest.
func (l *logFiles) syncAll() error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), l.ext)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if err := syncPath(l.path(n)); err != nil {
			return err
		}
		l.newest = max(l.newest, n)
	}
	return nil
}

// sync syncs the files Badger created since the last call, and the newest.
func (l *logFiles) sync() error {
	for {
		_, err := os.Stat(l.path(l.newest + 1))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return err
		}
		// Badger went on to the next file: sync this one a last time.
		if err := l.syncNewest(); err != nil {
			return err
		}
		l.closeNewest()
		l.newest++
		l.rotated++
	}
	return l.syncNewest()
}

func (l *logFiles) syncNewest() error {
	opened := false
	if l.f == nil {
		f, err := os.Open(l.path(l.newest))
		if errors.Is(err, fs.ErrNotExist) {
			// Gone: a WAL is deleted only once its memtable was
			// flushed to a table, and tables are synced.
			return nil
		}
		if err != nil {
			return err
		}
		l.f = f
		opened = true
	}
	if err := fdatasync(l.f); err != nil {
		return fmt.Errorf("fdatasync %s: %w", l.f.Name(), err)
	}
	if opened && l.advise {
		// After the sync, which the commits waiting on it should not
		// wait for. Badger mapped the file when it created it; pages
		// faulted in before now keep their size, later ones come one
		// page at a time.
		if n, err := adviseRandom(l.f.Name()); err == nil && n > 0 {
			l.advised++
		}
	}
	return nil
}

func (l *logFiles) closeNewest() {
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

// syncPath fdatasyncs the file at path; a file that is gone needs nothing.
func syncPath(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = fdatasync(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fdatasync %s: %w", path, err)
	}
	return nil
}

// badgerTxn adapts a Badger transaction for reads (views, snapshots) and
// writes.
type badgerTxn struct {
	txn *badger.Txn
}

func (t badgerTxn) get(key []byte) ([]byte, bool, error) {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

func (t badgerTxn) scan(prefix, start []byte, fn func(key, value []byte) (bool, error)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	it := t.txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var more bool
		err := item.Value(func(v []byte) error {
			var err error
			more, err = fn(item.Key(), v)
			return err
		})
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (t badgerTxn) set(key, value []byte, expiresAt uint64) error {
	e := badger.NewEntry(key, value)
	e.ExpiresAt = expiresAt
	return badgerErr(t.txn.SetEntry(e))
}

func (t badgerTxn) delete(key []byte) error {
	return badgerErr(t.txn.Delete(key))
}

func (t badgerTxn) discard() { t.txn.Discard() }

func (t badgerTxn) release() { t.txn.Discard() }

// badgerCommitTxn is a shard writer's transaction.
type badgerCommitTxn struct {
	badgerTxn
	b     *badgerBackend
	shard int
	vlog  bool // a value goes to the value log
}

func (t *badgerCommitTxn) set(key, value []byte, expiresAt uint64) error {
	if err := t.badgerTxn.set(key, value, expiresAt); err != nil {
		return err
	}
	if int64(len(value)) >= t.b.valueThreshold {
		t.vlog = true
	}
	return nil
}

// commit commits at the next timestamp. Badger calls back once the writes
// are in the memtable (applied); the syncer calls durable.
func (t *badgerCommitTxn) commit(applied, durable func(error)) {
	ts, err := t.b.gc.begin()
	if err != nil {
		t.txn.Discard()
		applied(err)
		return
	}
	if t.vlog {
		t.b.vlogWritten.Store(true) // before the commit can be applied
	}
	_ = t.txn.CommitAt(ts, func(err error) {
		err = badgerErr(err)
		t.b.gc.appliedAt(ts, t.shard, err, durable)
		applied(err)
	})
}

func badgerErr(err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("%w: %w", errTxnTooBig, err)
	}
	return err
}

// badgerLogger routes Badger's logs to slog. Badger reports routine work
// (compactions, flushes, replay) at INFO, which goes to Debug; its DEBUG
// lines (several per commit) go to levelTrace, below Debug.
type badgerLogger struct {
	log *slog.Logger
}

func (l badgerLogger) Errorf(format string, args ...any) {
	l.logf(slog.LevelError, format, args)
}

func (l badgerLogger) Warningf(format string, args ...any) {
	l.logf(slog.LevelWarn, format, args)
}

func (l badgerLogger) Infof(format string, args ...any) {
	l.logf(slog.LevelDebug, format, args)
}

func (l badgerLogger) Debugf(format string, args ...any) {
	l.logf(levelTrace, format, args)
}

const levelTrace = slog.LevelDebug - 4

func (l badgerLogger) logf(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	l.log.Log(ctx, level, msg, "component", "badger")
}
