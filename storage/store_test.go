package storage

import (
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
