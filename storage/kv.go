package storage

import (
	"bytes"
	"errors"
	"time"
)

// The typed state (state.go) is written once over this small ordered
// key-value interface; the Badger and memory backends implement it.

// kvGetter reads single keys.
type kvGetter interface {
	// get returns key's value, which the caller may keep. A missing (or,
	// in Badger, expired) key is ok == false with a nil error.
	get(key []byte) (value []byte, ok bool, err error)
}

// kvWriter is what a command's state reads and writes.
type kvWriter interface {
	kvGetter
	set(key, value []byte, expiresAt uint64) error
	delete(key []byte) error
}

// kvReader is a read-only view of durable state.
type kvReader interface {
	kvGetter
	// scan calls fn for every key that starts with prefix and is >= start,
	// in key order, until fn returns false or an error. key and value are
	// valid only during the call.
	scan(prefix, start []byte, fn func(key, value []byte) (bool, error)) error
}

// kvSnapshot is the view of a shard's state that its writer reads under
// its own uncommitted writes: every commit of the shard applied when it was
// taken, durable or not.
type kvSnapshot interface {
	kvGetter
	release()
}

// kvTxn is a write transaction the writer fills and commits. Reads do not
// go through it: the writer reads its own layers over a snapshot.
type kvTxn interface {
	// set stores value (which the store may keep; the caller must not
	// change it) under key. expiresAt is a Unix time in seconds after
	// which the store may drop the key; 0 means never. errTxnTooBig
	// means the transaction cannot take it.
	set(key, value []byte, expiresAt uint64) error
	delete(key []byte) error
	// commit writes the transaction into the engine, in two stages, each
	// callback possibly on another goroutine and possibly before commit
	// returns. applied is called exactly once: nil means the writes are
	// in the engine and the shard's next snapshot sees them, so the
	// writer may commit its next transaction; an error means the commit
	// failed, and durable is never called. After applied(nil), durable
	// is called exactly once: nil once the writes are durable (Badger:
	// fsync'd) and visible to views, an error if they cannot be made
	// durable (the store has failed).
	commit(applied, durable func(error))
	// discard drops the writes of a transaction that is not committed.
	discard()
}

// backend is one storage engine under the shared key layout.
type backend interface {
	// view runs fn over durable state that includes at least shard's
	// keys (the memory backend keeps one tree per shard).
	view(shard int, fn func(kvReader) error) error
	// snapshot returns a view of shard's applied state as of now.
	snapshot(shard int) kvSnapshot
	// begin starts a write transaction for shard. Only the shard's writer
	// calls it.
	begin(shard int) kvTxn
	// failure is nil, or the error that put the store into its failed
	// state (wrapping core.ErrClosed): no more commits can succeed.
	failure() error
	// flush makes every applied commit durable, or fails it, and answers
	// it. The writers must have returned: nothing commits after it.
	flush()
	// close flushes, then closes the engine.
	close() error
}

// errTxnTooBig says a transaction cannot take another write; the writer
// commits what it has and goes on in a new transaction.
var errTxnTooBig = errors.New("storage: transaction too big")

// ExpiryGrace is added to a record's Expires before it becomes Badger's
// expiry. core decides whether a dedup or delivery record still counts by
// the command's own time; Badger drops keys by the wall clock. The grace
// keeps the command's time authoritative while clocks (or a replayed log)
// lag by less than this, and only lets Badger collect what core has
// certainly stopped counting.
const ExpiryGrace = 6 * time.Hour

// expiresAt converts an expiry time, plus ExpiryGrace, to whole Unix seconds,
// rounded up. The zero time means no expiry.
func expiresAt(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	ms := t.Add(ExpiryGrace).UnixMilli()
	if ms <= 0 {
		return 1 // long expired, but 0 would mean never
	}
	return uint64((ms + 999) / 1000)
}

// kvWrite is one buffered write of an overlay.
type kvWrite struct {
	key, value []byte
	expiresAt  uint64
	deleted    bool
}

// overlay buffers one command's writes over the batch transaction, so that
// a command that fails writes nothing. Reads see the overlay first, then
// the transaction (earlier commands of the batch), then committed state.
//
// A command writes a handful of keys (a send five or six), so the overlay
// finds a key's latest write by scanning its writes from the end; past
// overlayScan writes it indexes them in a map instead.
type overlay struct {
	base   kvGetter
	writes []kvWrite
	latest map[string]int // key → index in writes of its latest write; nil while len(writes) <= overlayScan
}

// overlayScan is how many writes an overlay scans before it indexes them.
const overlayScan = 16

func newOverlay(base kvGetter) *overlay {
	return &overlay{base: base}
}

// find returns the index of key's latest write, or -1.
func (o *overlay) find(key []byte) int {
	if o.latest != nil {
		if i, ok := o.latest[string(key)]; ok {
			return i
		}
		return -1
	}
	for i := len(o.writes) - 1; i >= 0; i-- {
		if bytes.Equal(o.writes[i].key, key) {
			return i
		}
	}
	return -1
}

// isLatest says whether the write at i is its key's latest.
func (o *overlay) isLatest(i int) bool {
	if o.latest != nil {
		return o.latest[string(o.writes[i].key)] == i
	}
	for _, w := range o.writes[i+1:] {
		if bytes.Equal(w.key, o.writes[i].key) {
			return false
		}
	}
	return true
}

func (o *overlay) get(key []byte) ([]byte, bool, error) {
	if i := o.find(key); i >= 0 {
		w := o.writes[i]
		if w.deleted {
			return nil, false, nil
		}
		return w.value, true, nil
	}
	return o.base.get(key)
}

func (o *overlay) set(key, value []byte, expiresAt uint64) error {
	o.put(kvWrite{key: key, value: value, expiresAt: expiresAt})
	return nil
}

func (o *overlay) delete(key []byte) error {
	o.put(kvWrite{key: key, deleted: true})
	return nil
}

func (o *overlay) put(w kvWrite) {
	if o.writes == nil {
		o.writes = make([]kvWrite, 0, 8)
	}
	o.writes = append(o.writes, w)
	switch n := len(o.writes); {
	case o.latest != nil:
		o.latest[string(w.key)] = n - 1
	case n > overlayScan:
		o.latest = make(map[string]int, 2*n)
		for i, w := range o.writes {
			o.latest[string(w.key)] = i
		}
	}
}

// reset drops every buffered write.
func (o *overlay) reset() {
	o.writes = nil
	o.latest = nil
}

// flush applies the latest write of every key to dst, in the order of
// those latest writes. On error dst may hold some of them.
func (o *overlay) flush(dst kvTxn) error {
	for i, w := range o.writes {
		if !o.isLatest(i) {
			continue
		}
		var err error
		if w.deleted {
			err = dst.delete(w.key)
		} else {
			err = dst.set(w.key, w.value, w.expiresAt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// layer is the merged writes of several commands, which later commands
// read before the state under it.
type layer struct {
	writes map[string]kvWrite
	bytes  int // keys and values added, overwritten ones included
}

func newLayer() *layer { return &layer{writes: make(map[string]kvWrite)} }

// add merges o's writes over the layer's.
func (l *layer) add(o *overlay) {
	for i, w := range o.writes {
		if o.isLatest(i) {
			l.writes[string(w.key)] = w
			l.bytes += len(w.key) + len(w.value)
		}
	}
}

// layers reads through a stack of layers, top first, then base.
type layers struct {
	top  []*layer
	base kvGetter
}

func (ls layers) get(key []byte) ([]byte, bool, error) {
	for _, l := range ls.top {
		if w, ok := l.writes[string(key)]; ok {
			if w.deleted {
				return nil, false, nil
			}
			return w.value, true, nil
		}
	}
	return ls.base.get(key)
}
