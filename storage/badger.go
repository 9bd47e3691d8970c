package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"

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
// Every commit is fsync'd. A fresh directory is stamped with the format
// version and opts.Shards; a directory with another version or shard count
// is refused (ErrFormatVersion, ErrShardCount).
func OpenBadger(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithDetectConflicts(false). // one writer per shard, and shards have disjoint keys
		WithLogger(nil)
	if opts.Logger != nil {
		bo = bo.WithLogger(badgerLogger{opts.Logger})
	}
	if opts.tuneBadger != nil {
		opts.tuneBadger(&bo)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("storage: open badger in %s: %w", dir, err)
	}
	if err := stampFormat(db, opts.Shards); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	s, err := newStore(&badgerBackend{db: db}, opts)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	return s, nil
}

// stampFormat writes the format version and shard count into an empty
// database, or checks them in an existing one.
func stampFormat(db *badger.DB, shards int) error {
	return db.Update(func(txn *badger.Txn) error {
		version, ok, err := getUint32(txn, keyFormatVersion)
		if err != nil {
			return err
		}
		if !ok {
			it := txn.NewIterator(badger.IteratorOptions{})
			it.Rewind()
			empty := !it.Valid()
			it.Close()
			if !empty {
				return fmt.Errorf("%w: data without a format version", ErrFormatVersion)
			}
			if err := txn.Set(keyFormatVersion, binary.BigEndian.AppendUint32(nil, formatVersion)); err != nil {
				return err
			}
			return txn.Set(keyShardCount, binary.BigEndian.AppendUint32(nil, uint32(shards)))
		}
		if version != formatVersion {
			return fmt.Errorf("%w: found %d, this build reads %d", ErrFormatVersion, version, formatVersion)
		}
		stored, ok, err := getUint32(txn, keyShardCount)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no shard count stored", ErrShardCount)
		}
		if int(stored) != shards {
			return fmt.Errorf("%w: created with %d shards, opened with %d", ErrShardCount, stored, shards)
		}
		return nil
	})
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

type badgerBackend struct {
	db *badger.DB
}

func (b *badgerBackend) view(_ int, fn func(kvReader) error) error {
	return b.db.View(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
}

func (b *badgerBackend) snapshot(int) kvSnapshot {
	return badgerTxn{b.db.NewTransaction(false)}
}

func (b *badgerBackend) begin(int) kvTxn {
	return badgerTxn{b.db.NewTransaction(true)}
}

func (b *badgerBackend) close() error { return b.db.Close() }

// badgerTxn adapts a Badger transaction: a read-only one for views and
// snapshots, a write-only one for the writer's commits.
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

func (t badgerTxn) commit(done func(error)) {
	t.txn.CommitWith(func(err error) { done(badgerErr(err)) })
}

func (t badgerTxn) discard() { t.txn.Discard() }

func (t badgerTxn) release() { t.txn.Discard() }

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
