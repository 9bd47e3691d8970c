package storage

import (
	"bytes"
	"math/rand/v2"
	"sync/atomic"
)

// NewMemory returns a store that keeps its state in memory only: for tests
// and `tern serve --memory`. It runs the same writer, key layout and codecs
// as OpenBadger; commits are atomic but not durable, and expired dedup and
// delivery records are kept (core checks expiry itself). It panics if
// opts.Shards is over MaxShards.
func NewMemory(opts Options) *Store {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		panic(err)
	}
	be := &memBackend{shards: make([]atomic.Pointer[treapNode], opts.Shards)}
	s, err := newStore(be, opts)
	if err != nil {
		panic(err) // reading an empty tree cannot fail
	}
	return s
}

// memBackend keeps one persistent (copy-on-write) treap per shard. A
// transaction builds new versions of the shard's tree next to the committed
// one and commits by publishing its root, so readers take a snapshot by
// loading one pointer and never lock.
type memBackend struct {
	shards []atomic.Pointer[treapNode] // committed roots; stored only by the shard's writer
}

func (m *memBackend) view(shard int, fn func(kvReader) error) error {
	return fn(memView{root: m.shards[shard].Load()})
}

func (m *memBackend) snapshot(shard int) kvSnapshot {
	return memView{root: m.shards[shard].Load()}
}

func (m *memBackend) begin(shard int) kvTxn {
	return &memTxn{published: &m.shards[shard]}
}

func (m *memBackend) failure() error { return nil }

func (m *memBackend) flush() {}

func (m *memBackend) close() error { return nil }

// memView reads one version of a tree.
type memView struct {
	root *treapNode
}

func (memView) release() {}

func (v memView) get(key []byte) ([]byte, bool, error) {
	n := v.root
	for n != nil {
		switch c := bytes.Compare(key, n.key); {
		case c < 0:
			n = n.left
		case c > 0:
			n = n.right
		default:
			return n.value, true, nil
		}
	}
	return nil, false, nil
}

func (v memView) scan(prefix, start []byte, fn func(key, value []byte) (bool, error)) error {
	if bytes.Compare(start, prefix) < 0 {
		start = prefix
	}
	var err error
	ascend(v.root, start, func(n *treapNode) bool {
		if !bytes.HasPrefix(n.key, prefix) {
			return false
		}
		var more bool
		more, err = fn(n.key, n.value)
		return more && err == nil
	})
	return err
}

// memTxn is a write transaction: its writes, applied at commit to the
// shard's tree as it is then, and published at once. Commits are atomic but
// not durable; applied and durable are both called before commit returns.
type memTxn struct {
	writes    []kvWrite
	published *atomic.Pointer[treapNode] // stored only by the shard's writer
}

func (t *memTxn) set(key, value []byte, _ uint64) error {
	t.writes = append(t.writes, kvWrite{key: key, value: value})
	return nil
}

func (t *memTxn) delete(key []byte) error {
	t.writes = append(t.writes, kvWrite{key: key, deleted: true})
	return nil
}

func (t *memTxn) commit(applied, durable func(error)) {
	root := t.published.Load()
	for _, w := range t.writes {
		if w.deleted {
			root = treapDelete(root, w.key)
		} else {
			root = treapInsert(root, w.key, w.value, rand.Uint64())
		}
	}
	t.published.Store(root)
	t.writes = nil
	applied(nil)
	durable(nil)
}

func (t *memTxn) discard() { t.writes = nil }

// treapNode is a node of a persistent treap: a binary search tree by key
// that is a max-heap by pri. Nodes are never changed once published;
// updates copy the path from the root.
type treapNode struct {
	key, value  []byte
	pri         uint64
	left, right *treapNode
}

func treapInsert(n *treapNode, key, value []byte, pri uint64) *treapNode {
	if n == nil {
		return &treapNode{key: key, value: value, pri: pri}
	}
	c := bytes.Compare(key, n.key)
	if c == 0 {
		m := *n
		m.value = value
		return &m
	}
	if pri > n.pri {
		l, r := treapSplit(n, key)
		return &treapNode{key: key, value: value, pri: pri, left: l, right: r}
	}
	m := *n
	if c < 0 {
		m.left = treapInsert(n.left, key, value, pri)
	} else {
		m.right = treapInsert(n.right, key, value, pri)
	}
	return &m
}

// treapSplit returns the trees of n's keys below key and above key; a node
// with key itself is dropped.
func treapSplit(n *treapNode, key []byte) (below, above *treapNode) {
	if n == nil {
		return nil, nil
	}
	switch c := bytes.Compare(n.key, key); {
	case c < 0:
		m := *n
		l, r := treapSplit(n.right, key)
		m.right = l
		return &m, r
	case c > 0:
		m := *n
		l, r := treapSplit(n.left, key)
		m.left = r
		return l, &m
	default:
		return n.left, n.right
	}
}

// treapMerge joins a and b, every key of a being below every key of b.
func treapMerge(a, b *treapNode) *treapNode {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.pri > b.pri:
		m := *a
		m.right = treapMerge(a.right, b)
		return &m
	default:
		m := *b
		m.left = treapMerge(a, b.left)
		return &m
	}
}

// treapDelete returns n without key; n itself when key is absent.
func treapDelete(n *treapNode, key []byte) *treapNode {
	if n == nil {
		return nil
	}
	c := bytes.Compare(key, n.key)
	if c == 0 {
		return treapMerge(n.left, n.right)
	}
	m := *n
	if c < 0 {
		m.left = treapDelete(n.left, key)
		if m.left == n.left {
			return n
		}
	} else {
		m.right = treapDelete(n.right, key)
		if m.right == n.right {
			return n
		}
	}
	return &m
}

// ascend calls fn for every node with key >= start, in key order, until fn
// returns false. It reports whether fn never did.
func ascend(n *treapNode, start []byte, fn func(*treapNode) bool) bool {
	for n != nil {
		if bytes.Compare(n.key, start) >= 0 {
			if !ascend(n.left, start, fn) || !fn(n) {
				return false
			}
		}
		n = n.right
	}
	return true
}
