package storage

import (
	"fmt"
	"sync"

	"github.com/ternhq/tern/core"
)

// blockers is the set of users of one shard who may block someone: every
// user with a block record when the store opened, and every user a PutBlock
// named since. Users are never removed (after a DeleteBlock the lookup just
// finds nothing), so the set is a superset of the blockers. A user outside
// it blocks nobody: the block lookup every direct send makes (twice when
// both users share a shard), which almost always misses, is then skipped.
// Reads take no lock (sync.Map suits a set read on every send and written
// rarely).
type blockers struct{ m sync.Map }

// may reports whether u may block someone.
func (b *blockers) may(u core.UserID) bool {
	_, ok := b.m.Load(u)
	return ok
}

// add notes that u may block someone. PutBlock calls it before its write
// commits: a concurrent read then looks the block up, and finds it or not
// depending on the commit, as without the set.
func (b *blockers) add(u core.UserID) { b.m.LoadOrStore(u, struct{}{}) }

// loadBlockers fills b with the blockers of shard that kv holds.
func loadBlockers(kv kvReader, shard int, b *blockers) error {
	prefix := shardPrefix(tagBlock, shard, 0)
	return kv.scan(prefix, prefix, func(key, _ []byte) (bool, error) {
		by, _, err := parsePrefixedID(key[len(prefix):])
		if err != nil {
			// Skipping it would let this blocker's blocks be ignored.
			return false, fmt.Errorf("block key %q: %w", key, err)
		}
		b.add(core.UserID(by))
		return true, nil
	})
}
