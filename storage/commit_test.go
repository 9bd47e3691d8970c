package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ternhq/tern/core"
)

// heldSync is a syncHook that, while held, blocks every sync until
// released, and can fail syncs.
type heldSync struct {
	held    atomic.Bool
	fail    atomic.Pointer[error]
	entered chan struct{} // one per held sync that started
	release chan struct{} // closed to let held syncs go on
	calls   atomic.Int64
}

func newHeldSync() *heldSync {
	return &heldSync{entered: make(chan struct{}, 1000), release: make(chan struct{})}
}

// let stops holding syncs and releases those held. Call it once.
func (h *heldSync) let() {
	h.held.Store(false)
	close(h.release)
}

func (h *heldSync) hook(sync func() error) error {
	h.calls.Add(1)
	if h.held.Load() {
		h.entered <- struct{}{}
		<-h.release
	}
	if p := h.fail.Load(); p != nil {
		return *p
	}
	return sync()
}

func openHeld(t *testing.T, dir string, h *heldSync, opts Options) *Store {
	t.Helper()
	opts.syncHook = h.hook
	if opts.tuneBadger == nil {
		opts.tuneBadger = smallBadger
	}
	s, err := OpenBadger(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type applied struct {
	res core.Result
	err error
}

func applyAsync(s *Store, cmd core.Command) chan applied {
	c := make(chan applied, 1)
	go func() {
		res, err := s.Apply(context.Background(), cmd)
		c <- applied{res, err}
	}()
	return c
}

func wantHead(t *testing.T, s *Store, u core.UserID, want core.Seq) {
	t.Helper()
	h, err := s.Head(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	es, err := s.Entries(context.Background(), u, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if h.Head != want || len(es) != int(want) {
		t.Fatalf("%s: head %d and %d entries, want %d", u, h.Head, len(es), want)
	}
}

// TestAnsweredAndVisibleOnlyWhenDurable holds the syncer inside a sync and
// checks that the commands it covers neither return nor show to readers
// until it completes, while the writer applies the next commands over them.
func TestAnsweredAndVisibleOnlyWhenDurable(t *testing.T) {
	h := newHeldSync()
	s := openHeld(t, t.TempDir(), h, Options{})
	defer s.Close()
	var let sync.Once
	defer let.Do(h.let) // before Close, which waits for the held sync
	u := core.UserID("alice")
	if r, err := s.Apply(context.Background(), sendCmd(u, "1", nil)); err != nil || r.Seq != 1 {
		t.Fatalf("first send: %+v, %v", r, err)
	}

	h.held.Store(true)
	second := applyAsync(s, sendCmd(u, "2", nil))
	<-h.entered // the sync covering the second send has started
	third := applyAsync(s, sendCmd(u, "3", nil))

	// The third send is applied over the second, which is applied but not
	// durable: the writer reads what it wrote. Wait until it is applied.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ts := s.be.(*badgerBackend).gc.shardReadTs(0); ts >= 4 { // stamp, first, second, third
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the third send was not applied while the sync was held")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case a := <-second:
		t.Fatalf("the second send returned before its sync completed: %+v", a)
	case a := <-third:
		t.Fatalf("the third send returned before any sync covered it: %+v", a)
	case <-time.After(20 * time.Millisecond):
	}
	wantHead(t, s, u, 1) // readers see durable state only
	if n, err := s.AppliedIndex(context.Background(), 0); err != nil || n != 1 {
		t.Fatalf("applied index %d (%v), want 1 while the sync is held", n, err)
	}

	let.Do(h.let)
	if a := <-second; a.err != nil || a.res.Seq != 2 {
		t.Fatalf("second send: %+v", a)
	}
	if a := <-third; a.err != nil || a.res.Seq != 3 {
		t.Fatalf("third send: %+v, want seq 3 (applied over the second)", a)
	}
	wantHead(t, s, u, 3)
}

// TestSyncFailurePoisonsTheStore fails a sync: the commands it covered
// fail, every later Apply fails with core.ErrClosed, reads still see the
// durable state, and the failure is logged once at Error.
func TestSyncFailurePoisonsTheStore(t *testing.T) {
	h := newHeldSync()
	logs := &recordingHandler{}
	s := openHeld(t, t.TempDir(), h, Options{Logger: slog.New(logs)})
	defer s.Close()
	u := core.UserID("alice")
	if _, err := s.Apply(context.Background(), sendCmd(u, "1", nil)); err != nil {
		t.Fatal(err)
	}

	eio := errors.New("input/output error")
	h.fail.Store(&eio)
	_, err := s.Apply(context.Background(), sendCmd(u, "2", nil))
	if !errors.Is(err, core.ErrClosed) || !errors.Is(err, eio) {
		t.Fatalf("send covered by a failed sync: %v, want ErrClosed wrapping the sync error", err)
	}
	calls := h.calls.Load()
	for i := range 3 {
		_, err := s.Apply(context.Background(), sendCmd(u, fmt.Sprint(3+i), nil))
		if !errors.Is(err, core.ErrClosed) {
			t.Fatalf("send after a failed sync: %v, want ErrClosed", err)
		}
	}
	if n := h.calls.Load(); n != calls {
		t.Fatalf("%d more syncs after the failure", n-calls)
	}
	wantHead(t, s, u, 1)

	logs.mu.Lock()
	var errorsLogged []string
	for _, r := range logs.records {
		if r.Level >= slog.LevelError {
			errorsLogged = append(errorsLogged, r.Message)
		}
	}
	logs.mu.Unlock()
	if len(errorsLogged) != 1 || !strings.Contains(errorsLogged[0], "sync failed") {
		t.Fatalf("errors logged: %q, want one about the failed sync", errorsLogged)
	}
}

// TestTimestampsGoOnAfterReopen writes, reopens, writes again: the second
// write must get a newer timestamp, or reads at the durable timestamp
// would miss it.
func TestTimestampsGoOnAfterReopen(t *testing.T) {
	dir := t.TempDir()
	u := core.UserID("alice")
	var last uint64
	for round := 1; round <= 3; round++ {
		s, err := OpenBadger(dir, Options{tuneBadger: smallBadger})
		if err != nil {
			t.Fatal(err)
		}
		gc := s.be.(*badgerBackend).gc
		durable := func() uint64 {
			ts := gc.beginRead()
			gc.endRead(ts)
			return ts
		}
		if ts := durable(); ts < last {
			t.Fatalf("round %d: durable timestamp %d at open, below %d before", round, ts, last)
		}
		wantHead(t, s, u, core.Seq(round-1))
		if r, err := s.Apply(context.Background(), sendCmd(u, strconv.Itoa(round), nil)); err != nil || r.Seq != core.Seq(round) {
			t.Fatalf("round %d: %+v, %v", round, r, err)
		}
		wantHead(t, s, u, core.Seq(round))
		if ts := durable(); ts <= last {
			t.Fatalf("round %d: durable timestamp %d after a commit, not after %d", round, ts, last)
		}
		last = durable()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiscardTsLetsCompactionDropVersions checks that the durable timestamp
// reaches Badger's discard timestamp, so that a compaction keeps one
// version of a key overwritten many times.
func TestDiscardTsLetsCompactionDropVersions(t *testing.T) {
	dir := t.TempDir()
	u := core.UserID("alice")
	const sends = 50
	var discards []uint64
	var mu sync.Mutex
	opts := Options{tuneBadger: func(o *badger.Options) {
		smallBadger(o)
		// No background compactions, and L0 due for one at two tables:
		// the test compacts when the discard timestamp is set.
		o.NumCompactors = 0
		o.NumLevelZeroTables = 1
		o.NumLevelZeroTablesStall = 10
	}, discardEvery: time.Nanosecond, discardHook: func(ts uint64) {
		mu.Lock()
		discards = append(discards, ts)
		mu.Unlock()
	}}
	s, err := OpenBadger(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range sends {
		if _, err := s.Apply(context.Background(), sendCmd(u, strconv.Itoa(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	n := len(discards)
	increasing := n > 0 && discards[n-1] > 1
	for i := 1; i < n; i++ {
		increasing = increasing && discards[i] > discards[i-1]
	}
	mu.Unlock()
	if n < sends/2 || !increasing {
		t.Fatalf("discard timestamps %v after %d sends, want them to follow the durable timestamp", discards, sends)
	}
	// Close flushes the memtable: every version goes into a table. A
	// second session makes a second table.
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = OpenBadger(dir, opts); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apply(context.Background(), sendCmd("bob", strconv.Itoa(i), nil)); err != nil { // a sync, so a discard
			t.Fatal(err)
		}
	}
	defer s.Close()
	db := s.be.(*badgerBackend).db
	versions := func() int {
		txn := db.NewTransactionAt(^uint64(0), false)
		defer txn.Discard()
		it := txn.NewKeyIterator(headKey(0, u), badger.IteratorOptions{AllVersions: true})
		defer it.Close()
		n := 0
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return n
	}
	if n := versions(); n < sends {
		t.Fatalf("%d versions of the head before compaction, want %d", n, sends)
	}
	if err := db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	if n := versions(); n != 1 {
		t.Fatalf("%d versions of the head after compaction, want 1", n)
	}
	wantHead(t, s, u, sends)
}

// TestRotatedLogsAreSynced makes Badger move on to new memtable WALs and
// value log files, and checks that the syncer followed.
func TestRotatedLogsAreSynced(t *testing.T) {
	dir := t.TempDir()
	opts := Options{tuneBadger: func(o *badger.Options) {
		smallBadger(o)
		o.MemTableSize = 256 << 10
		o.ValueThreshold = 2 << 10 // the big bodies below go to the value log
		o.ValueLogFileSize = 1 << 20
	}}
	s, err := OpenBadger(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent senders, so that the test does not wait for a sync per
	// send. Every other body goes to the value log.
	const senders, sends = 16, 100
	big, small := bytes.Repeat([]byte{'b'}, 4<<10), bytes.Repeat([]byte{'s'}, 1<<10)
	body := func(i int) []byte {
		if i%2 == 0 {
			return big
		}
		return small
	}
	var wg sync.WaitGroup
	for w := range senders {
		wg.Go(func() {
			u := core.UserID(fmt.Sprint("user-", w))
			for i := range sends {
				if _, err := s.Apply(context.Background(), sendCmd(u, strconv.Itoa(i), body(i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	logs := s.be.(*badgerBackend).logs
	if logs.wal.rotated == 0 || logs.vlog.rotated == 0 {
		t.Fatalf("%d WALs and %d value log files synced after rotation, want some of each", logs.wal.rotated, logs.vlog.rotated)
	}
	t.Logf("synced after rotation: %d WALs, %d value log files", logs.wal.rotated, logs.vlog.rotated)
	// The newest of each is the one being synced.
	for _, l := range []*logFiles{logs.wal, logs.vlog} {
		entries, err := os.ReadDir(l.dir)
		if err != nil {
			t.Fatal(err)
		}
		newest := 0
		for _, e := range entries {
			if name, ok := strings.CutSuffix(e.Name(), l.ext); ok {
				n, _ := strconv.Atoi(name)
				newest = max(newest, n)
			}
		}
		if l.newest != newest {
			t.Fatalf("%s: syncing file %d, the newest is %d", l.ext, l.newest, newest)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenBadger(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for w := range senders {
		u := core.UserID(fmt.Sprint("user-", w))
		es, err := s.Entries(context.Background(), u, 0, 0, 0)
		if err != nil || len(es) != sends {
			t.Fatalf("%s: %d entries after reopen (%v), want %d", u, len(es), err, sends)
		}
		for i, e := range es {
			if !bytes.Equal(e.Body, body(i)) {
				t.Fatalf("%s: entry %d has another body", u, e.Seq)
			}
		}
	}
}

// TestGroupCommitWatermark drives groupCommit directly: a commit applied
// ahead of an older one in flight waits for it, a failed commit does not
// hold the others back, and one sync covers every commit applied before it.
func TestGroupCommitWatermark(t *testing.T) {
	var syncs atomic.Int64
	g := newGroupCommit(10, 2, func() error { syncs.Add(1); return nil }, func(uint64) {}, Options{}.withDefaults())
	defer g.stop()
	durable := func() uint64 {
		ts := g.beginRead()
		g.endRead(ts)
		return ts
	}
	done := func() (func(error), chan error) {
		c := make(chan error, 1)
		return func(err error) { c <- err }, c
	}
	waitDone := func(c chan error, what string) {
		t.Helper()
		select {
		case err := <-c:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not durable", what)
		}
	}

	ts1, _ := g.begin()
	ts2, _ := g.begin()
	if ts1 != 11 || ts2 != 12 {
		t.Fatalf("timestamps %d and %d, want 11 and 12", ts1, ts2)
	}
	fn2, c2 := done()
	g.appliedAt(ts2, 1, nil, fn2)
	select {
	case <-c2:
		t.Fatal("a commit became durable while an older one was still being applied")
	case <-time.After(20 * time.Millisecond):
	}
	if d := durable(); d != 10 {
		t.Fatalf("durable %d while commit 11 is in flight, want 10", d)
	}
	if g.shardReadTs(1) != ts2 || g.shardReadTs(0) != 10 {
		t.Fatalf("shard read timestamps %d and %d, want 10 and 12", g.shardReadTs(0), g.shardReadTs(1))
	}
	fn1, c1 := done()
	g.appliedAt(ts1, 0, nil, fn1)
	waitDone(c1, "commit 11")
	waitDone(c2, "commit 12")
	if d := durable(); d != 12 {
		t.Fatalf("durable %d, want 12", d)
	}

	// A failed commit does not hold back the ones after it.
	ts3, _ := g.begin()
	ts4, _ := g.begin()
	fn4, c4 := done()
	g.appliedAt(ts4, 0, nil, fn4)
	g.appliedAt(ts3, 1, errors.New("commit failed"), func(error) { t.Error("durable called for a failed commit") })
	waitDone(c4, "commit 14")
	if d := durable(); d != 14 {
		t.Fatalf("durable %d, want 14", d)
	}
	if n := syncs.Load(); n < 2 || n > 3 {
		t.Fatalf("%d syncs, want 2 or 3", n)
	}
}

// durableHeldBackend is the memory backend whose commits are applied at
// once but made durable only when the test says so.
type durableHeldBackend struct {
	*memBackend
	durable chan func(error)
}

func (b *durableHeldBackend) begin(shard int) kvTxn {
	return &durableHeldTxn{kvTxn: b.memBackend.begin(shard), b: b}
}

type durableHeldTxn struct {
	kvTxn
	b *durableHeldBackend
}

func (t *durableHeldTxn) commit(applied, durable func(error)) {
	t.kvTxn.commit(applied, func(err error) { t.b.durable <- durable })
}

// TestWriterCommitsOnAppliedAnswersOnDurable checks the writer's two
// stages: it commits the next batch once the previous one is applied,
// without waiting for it to be durable, and answers each only when durable.
func TestWriterCommitsOnAppliedAnswersOnDurable(t *testing.T) {
	be := &durableHeldBackend{memBackend: &memBackend{shards: make([]atomic.Pointer[treapNode], 1)}, durable: make(chan func(error), 2)}
	w := testWriter(be, nil)
	u := core.UserID("alice")
	first := requests(context.Background(), sendCmd(u, "1", nil))
	process(w, first)
	second := requests(context.Background(), sendCmd(u, "2", nil))
	process(w, second) // does not wait for the first to be durable
	w.settle()
	durable1, durable2 := <-be.durable, <-be.durable
	for _, r := range append(first, second...) {
		select {
		case o := <-r.done:
			t.Fatalf("answered before durable: %+v", o)
		default:
		}
	}
	durable1(nil)
	if o := answers(t, first)[0]; o.err != nil || o.res.Seq != 1 {
		t.Fatalf("first send: %+v", o)
	}
	select {
	case o := <-second[0].done:
		t.Fatalf("second send answered before durable: %+v", o)
	default:
	}
	durable2(errors.New("sync failed"))
	if o := answers(t, second)[0]; o.err == nil {
		t.Fatalf("second send: %+v, want the durable error", o)
	}
}

// TestUnsafeNoSync checks that with UnsafeNoSync commands are answered and
// visible without a sync of Badger's logs, and that a clean close keeps
// them; without it, every answer waits for a sync.
func TestUnsafeNoSync(t *testing.T) {
	for _, unsafe := range []bool{false, true} {
		t.Run(fmt.Sprint("unsafe=", unsafe), func(t *testing.T) {
			dir := t.TempDir()
			u := core.UserID("alice")
			s, err := OpenBadger(dir, Options{tuneBadger: smallBadger, UnsafeNoSync: unsafe})
			if err != nil {
				t.Fatal(err)
			}
			be := s.be.(*badgerBackend)
			atOpen := be.syncs.Load()
			for i := range 3 {
				if _, err := s.Apply(context.Background(), sendCmd(u, strconv.Itoa(i), nil)); err != nil {
					t.Fatal(err)
				}
			}
			wantHead(t, s, u, 3)
			synced := be.syncs.Load() - atOpen
			if unsafe && synced != 0 || !unsafe && synced == 0 {
				t.Fatalf("%d syncs of the logs for 3 answered commands", synced)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = OpenBadger(dir, Options{tuneBadger: smallBadger})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			wantHead(t, s, u, 3)
		})
	}
}
