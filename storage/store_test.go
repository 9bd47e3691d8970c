package storage

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/storage/storetest"
)

// smallBadger keeps test databases small: tests open dozens of them.
func smallBadger(o *badger.Options) {
	o.MemTableSize = 8 << 20
	o.BlockCacheSize = 8 << 20
	o.ValueThreshold = 64 << 10
	o.NumCompactors = 2
}

func TestBadgerStore(t *testing.T) {
	storetest.Run(t, storetest.Factory{
		Open: func(dir string, shards int) (core.Store, error) {
			return OpenBadger(dir, Options{Shards: shards, tuneBadger: smallBadger})
		},
		Persistent: true,
	})
}

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, storetest.Factory{
		Open: func(_ string, shards int) (core.Store, error) {
			return NewMemory(Options{Shards: shards}), nil
		},
	})
}

func TestBadgerRefusesIncompatibleDirs(t *testing.T) {
	rawSet := func(t *testing.T, dir string, key, value []byte) {
		t.Helper()
		db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key, value) }); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	created := func(t *testing.T, shards int) string {
		t.Helper()
		dir := t.TempDir()
		s, err := OpenBadger(dir, Options{Shards: shards, tuneBadger: smallBadger})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name   string
		dir    func(t *testing.T) string
		shards int
		want   error
	}{
		{"unknown format version", func(t *testing.T) string {
			dir := created(t, 1)
			rawSet(t, dir, keyFormatVersion, []byte{0, 0, 0, formatVersion + 1})
			return dir
		}, 1, ErrFormatVersion},
		{"data without a format version", func(t *testing.T) string {
			dir := t.TempDir()
			rawSet(t, dir, []byte("someone else's key"), []byte("x"))
			return dir
		}, 1, ErrFormatVersion},
		{"more shards", func(t *testing.T) string { return created(t, 2) }, 4, ErrShardCount},
		{"default shards on a 2-shard dir", func(t *testing.T) string { return created(t, 2) }, 0, ErrShardCount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenBadger(tt.dir(t), Options{Shards: tt.shards, tuneBadger: smallBadger})
			if !errors.Is(err, tt.want) {
				if err == nil {
					_ = s.Close()
				}
				t.Fatalf("open: %v, want %v", err, tt.want)
			}
		})
	}
}

// TestMain fails the package if a writer or syncer goroutine outlives the
// tests: every store a test opens must be closed, and Close must stop them.
func TestMain(m *testing.M) {
	code := m.Run()
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if code == 0 && (strings.Contains(stacks, "(*shardWriter).run") || strings.Contains(stacks, "(*groupCommit).run")) {
		fmt.Fprintf(os.Stderr, "storage: writer or syncer goroutines outlived the tests:\n%s\n", stacks)
		code = 1
	}
	os.Exit(code)
}
