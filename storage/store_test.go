package storage

import (
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

// TestMain fails the package if a writer goroutine outlives the tests: every
// store a test opens must be closed, and Close must stop its writers.
func TestMain(m *testing.M) {
	code := m.Run()
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if code == 0 && strings.Contains(stacks, "(*shardWriter).run") {
		fmt.Fprintf(os.Stderr, "storage: writer goroutines outlived the tests:\n%s\n", stacks)
		code = 1
	}
	os.Exit(code)
}
