package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ternhq/tern/core"
)

// recordingMetrics keeps what it is given.
type recordingMetrics struct {
	mu           sync.Mutex
	counters     map[string]float64   // name + "/" + label
	observations map[string][]float64 // by name
}

func newRecordingMetrics() *recordingMetrics {
	return &recordingMetrics{counters: map[string]float64{}, observations: map[string][]float64{}}
}

func (m *recordingMetrics) Add(name, label string, delta float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counters[name+"/"+label] += delta
}

func (m *recordingMetrics) Observe(name string, v float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observations[name] = append(m.observations[name], v)
}

func (m *recordingMetrics) Set(string, float64) {}

func (m *recordingMetrics) counter(name, label string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counters[name+"/"+label]
}

func (m *recordingMetrics) observed(name string) []float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]float64(nil), m.observations[name]...)
}

// limitedBackend is the memory backend with a transaction size limit and
// failing commits, to drive the writer's split and failure paths.
type limitedBackend struct {
	*memBackend
	maxWrites  int   // writes a transaction takes before errTxnTooBig
	failCommit error // returned by commit when set
	commits    int   // successful commits
}

func newLimitedBackend(maxWrites int) *limitedBackend {
	return &limitedBackend{memBackend: &memBackend{shards: make([]atomic.Pointer[treapNode], 1)}, maxWrites: maxWrites}
}

func (b *limitedBackend) begin(shard int) kvTxn {
	return &limitedTxn{kvTxn: b.memBackend.begin(shard), b: b}
}

type limitedTxn struct {
	kvTxn
	b      *limitedBackend
	writes int
}

func (t *limitedTxn) set(key, value []byte, expiresAt uint64) error {
	if t.writes++; t.writes > t.b.maxWrites {
		return errTxnTooBig
	}
	return t.kvTxn.set(key, value, expiresAt)
}

func (t *limitedTxn) delete(key []byte) error {
	if t.writes++; t.writes > t.b.maxWrites {
		return errTxnTooBig
	}
	return t.kvTxn.delete(key)
}

func (t *limitedTxn) commit(applied, durable func(error)) {
	if t.b.failCommit != nil {
		t.kvTxn.discard()
		applied(t.b.failCommit)
		return
	}
	t.b.commits++
	t.kvTxn.commit(applied, durable)
}

// heldBackend is the memory backend whose commits wait until the test
// completes them, to drive the pipeline.
type heldBackend struct {
	*memBackend
	commits chan heldCommit
}

type heldCommit struct {
	txn              kvTxn
	applied, durable func(error)
}

// complete finishes the commit: with err it fails and writes nothing.
func (c heldCommit) complete(err error) {
	if err != nil {
		c.txn.discard()
		c.applied(err)
		return
	}
	c.txn.commit(c.applied, c.durable)
}

func (b *heldBackend) begin(shard int) kvTxn {
	return &heldTxn{kvTxn: b.memBackend.begin(shard), b: b}
}

type heldTxn struct {
	kvTxn
	b *heldBackend
}

func (t *heldTxn) commit(applied, durable func(error)) {
	t.b.commits <- heldCommit{t.kvTxn, applied, durable}
}

// testWriter is a writer of shard 0 of 1 that the test drives by calling
// process and settle itself (no run goroutine).
func testWriter(be backend, m core.Metrics) *shardWriter {
	if m == nil {
		m = core.NopMetrics{}
	}
	return &shardWriter{be: be, shard: 0, shards: 1, maxBatch: DefaultMaxBatch, metrics: m, log: slog.New(slog.DiscardHandler)}
}

// process applies reqs as one batch and commits it, as run does with a
// batch from the queue.
func process(w *shardWriter, reqs []*request) {
	b := w.newBatch()
	for _, r := range reqs {
		w.add(b, r)
	}
	w.commitBatch(b)
}

func requests(ctx context.Context, cmds ...core.Command) []*request {
	var reqs []*request
	for _, c := range cmds {
		reqs = append(reqs, &request{ctx: ctx, cmd: c, done: make(chan outcome, 1)})
	}
	return reqs
}

// answers returns the outcome of every request, which must have been
// answered already.
func answers(t *testing.T, reqs []*request) []outcome {
	t.Helper()
	var out []outcome
	for i, r := range reqs {
		select {
		case o := <-r.done:
			out = append(out, o)
		default:
			t.Fatalf("request %d not answered", i)
		}
	}
	return out
}

func sendCmd(u core.UserID, cmid string, body []byte) *core.SendCmd {
	now := time.UnixMilli(time.Now().UnixMilli())
	return &core.SendCmd{
		Sender: u, Device: "phone", ClientMsgID: core.ClientMsgID(cmid), ID: core.NewMessageID(now),
		Now: now, Body: body, DedupWindow: time.Hour,
	}
}

func headIn(t *testing.T, be backend, u core.UserID) (core.Head, uint64) {
	t.Helper()
	var (
		h       core.Head
		applied uint64
	)
	err := be.view(0, func(kv kvReader) error {
		var err error
		if h, err = readHead(kv, 0, u); err != nil {
			return err
		}
		applied, err = readApplied(kv, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, applied
}

var errTestFail = errors.New("test command failed")

// writeThenFailCmd writes u's head, then fails.
type writeThenFailCmd struct{ user core.UserID }

func (c *writeThenFailCmd) Shard(int) int { return 0 }

func (c *writeThenFailCmd) Apply(tx core.StateTx) (core.Result, error) {
	if err := tx.PutHead(c.user, core.Head{Head: 999}); err != nil {
		return core.Result{}, err
	}
	return core.Result{Seq: 999}, errTestFail
}

// blocksCmd writes n blocks of user: n writes in one command.
type blocksCmd struct {
	user core.UserID
	n    int
}

func (c *blocksCmd) Shard(int) int { return 0 }

func (c *blocksCmd) Apply(tx core.StateTx) (core.Result, error) {
	for i := range c.n {
		if err := tx.PutBlock(c.user, core.UserID(fmt.Sprint(i))); err != nil {
			return core.Result{}, err
		}
	}
	return core.Result{}, nil
}

// TestBatchIsolatesCommands drives one batch with a failing command, a
// canceled one and a duplicate among good ones: one transaction, each
// command its own outcome.
func TestBatchIsolatesCommands(t *testing.T) {
	be := newLimitedBackend(1 << 20)
	m := newRecordingMetrics()
	w := testWriter(be, m)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	u := core.UserID("alice")
	first := sendCmd(u, "1", nil)
	reqs := requests(context.Background(), first, &writeThenFailCmd{u}, sendCmd(u, "2", nil), sendCmd(u, "3", nil), sendCmd(u, "1", nil))
	reqs[3].ctx = canceled
	process(w, reqs)
	w.settle()

	got := answers(t, reqs)
	switch {
	case got[0].err != nil || got[0].res.Seq != 1:
		t.Fatalf("first send: %+v", got[0])
	case !errors.Is(got[1].err, errTestFail) || got[1].res.Seq != 0:
		t.Fatalf("failing command: %+v", got[1])
	case got[2].err != nil || got[2].res.Seq != 2:
		t.Fatalf("send after the failure: %+v (it must not see the failed write)", got[2])
	case !errors.Is(got[3].err, context.Canceled):
		t.Fatalf("canceled command: %+v", got[3])
	case got[4].err != nil || !got[4].res.Duplicate || got[4].res.ID != first.ID:
		t.Fatalf("duplicate in the same batch: %+v", got[4])
	}
	if h, applied := headIn(t, be, u); h.Head != 2 || applied != 4 {
		t.Fatalf("head %+v, applied %d; want head 2, applied 4 (the canceled command skipped)", h, applied)
	}
	if be.commits != 1 {
		t.Fatalf("%d commits, want 1", be.commits)
	}
	if got := m.observed(MetricBatchCommands); len(got) != 1 || got[0] != 4 {
		t.Fatalf("batch sizes %v, want [4]", got)
	}
	if ok, failed := m.counter(MetricCommands, "ok"), m.counter(MetricCommands, "error"); ok != 3 || failed != 1 {
		t.Fatalf("commands ok %v, error %v; want 3 and 1", ok, failed)
	}
	if got := m.observed(MetricCommitSeconds); len(got) != 1 {
		t.Fatalf("commit seconds observed %d times, want 1", len(got))
	}
}

// TestBatchSplitsWhenTooBig checks that a batch that does not fit one
// transaction commits in several, never splitting a command, and that a
// command too big on its own fails alone.
func TestBatchSplitsWhenTooBig(t *testing.T) {
	// A SendCmd without recipients writes 4 keys: dedup, entry, head,
	// applied index.
	be := newLimitedBackend(10)
	w := testWriter(be, nil)
	u := core.UserID("alice")
	reqs := requests(context.Background(),
		sendCmd(u, "1", nil), sendCmd(u, "2", nil), sendCmd(u, "3", nil), // 12 writes: split before the 3rd
		&blocksCmd{user: u, n: 20}, // too big alone
		sendCmd(u, "4", nil), sendCmd(u, "5", nil))
	process(w, reqs)
	w.settle()
	got := answers(t, reqs)
	for i, want := range []core.Seq{1, 2, 3, 0, 4, 5} {
		if i == 3 {
			if !errors.Is(got[i].err, errTxnTooBig) {
				t.Fatalf("command too big alone: %+v, want errTxnTooBig", got[i])
			}
			continue
		}
		if got[i].err != nil || got[i].res.Seq != want {
			t.Fatalf("send %d: %+v, want seq %d", i, got[i], want)
		}
	}
	// The refused command counts as applied: its Apply ran and failed.
	if h, applied := headIn(t, be, u); h.Head != 5 || applied != 6 {
		t.Fatalf("head %+v, applied %d; want 5 and 6", h, applied)
	}
	if be.commits != 4 { // [1 2] [3] [refused] [4 5]
		t.Fatalf("%d commits, want 4", be.commits)
	}
	var blocked bool
	_ = be.view(0, func(kv kvReader) error {
		blocked, _ = exists(kv, blockKey(0, u, "0"))
		return nil
	})
	if blocked {
		t.Fatal("part of the refused command was committed")
	}
}

// TestFailedCommitFailsTransaction checks that every command of a failed
// commit gets the error, the applied index goes back, and the next batch
// starts from the committed state.
func TestFailedCommitFailsTransaction(t *testing.T) {
	be := newLimitedBackend(1 << 20)
	w := testWriter(be, nil)
	u := core.UserID("alice")
	process(w, requests(context.Background(), sendCmd(u, "1", nil)))
	w.settle()

	diskFull := errors.New("disk full")
	be.failCommit = diskFull
	reqs := requests(context.Background(), sendCmd(u, "2", nil), &writeThenFailCmd{u}, sendCmd(u, "3", nil))
	process(w, reqs)
	w.settle()
	for i, o := range answers(t, reqs) {
		if !errors.Is(o.err, diskFull) {
			t.Fatalf("command %d of a failed commit: %+v", i, o)
		}
	}
	if w.applied != 1 {
		t.Fatalf("applied index %d after a failed commit, want 1", w.applied)
	}

	be.failCommit = nil
	reqs = requests(context.Background(), sendCmd(u, "2", nil))
	process(w, reqs)
	w.settle()
	if o := answers(t, reqs)[0]; o.err != nil || o.res.Seq != 2 || o.res.Duplicate {
		t.Fatalf("send after a failed commit: %+v, want seq 2", o)
	}
	if h, applied := headIn(t, be, u); h.Head != 2 || applied != 2 {
		t.Fatalf("head %+v, applied %d; want 2 and 2", h, applied)
	}
}

// TestPipeline drives two batches through the one-deep commit pipeline:
// the second is applied over the first's writes while the first commits,
// and applied again when that commit fails.
func TestPipeline(t *testing.T) {
	tests := []struct {
		name      string
		firstErr  error
		wantFirst outcome
		wantSeq   core.Seq // of the second send
	}{
		{"first commits", nil, outcome{res: core.Result{Seq: 1}}, 2},
		{"first fails", errors.New("disk gone"), outcome{err: errors.New("disk gone")}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := &heldBackend{memBackend: &memBackend{shards: make([]atomic.Pointer[treapNode], 1)}, commits: make(chan heldCommit, 1)}
			w := testWriter(be, nil)
			u := core.UserID("alice")
			first := requests(context.Background(), sendCmd(u, "1", nil))
			process(w, first) // starts the commit and returns
			second := requests(context.Background(), sendCmd(u, "2", nil))
			processed := make(chan struct{})
			go func() {
				defer close(processed)
				process(w, second) // applies, then waits for the first commit
			}()
			(<-be.commits).complete(tt.firstErr)
			(<-be.commits).complete(nil)
			<-processed
			w.settle()

			o := <-first[0].done
			if (o.err != nil) != (tt.wantFirst.err != nil) || o.res.Seq != tt.wantFirst.res.Seq {
				t.Fatalf("first send: %+v, want %+v", o, tt.wantFirst)
			}
			if o := <-second[0].done; o.err != nil || o.res.Seq != tt.wantSeq {
				t.Fatalf("second send: %+v, want seq %d", o, tt.wantSeq)
			}
			if h, applied := headIn(t, be, u); h.Head != tt.wantSeq || applied != uint64(tt.wantSeq) {
				t.Fatalf("head %+v, applied %d; want %d", h, applied, tt.wantSeq)
			}
		})
	}
}

// TestBadgerTxnTooBig runs batches through a Badger with a small
// transaction limit (15% of the memtable).
func TestBadgerTxnTooBig(t *testing.T) {
	m := newRecordingMetrics()
	s, err := OpenBadger(t.TempDir(), Options{Metrics: m, tuneBadger: func(o *badger.Options) {
		o.MemTableSize = 1 << 20 // transactions up to ~157 KB
		o.ValueThreshold = 64 << 10
		o.BlockCacheSize = 1 << 20
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u := core.UserID("alice")
	body := bytes.Repeat([]byte{'x'}, 20<<10)
	const sends = 32
	// Queue everything behind a held writer, so that it arrives as one
	// batch: 640 KB of bodies, and one command of ~3000 keys, over
	// Badger's entry limit on its own.
	release := holdWriter(t, s)
	var cmds []core.Command
	for i := range sends {
		cmds = append(cmds, sendCmd(u, fmt.Sprint(i), body))
		if i == sends/2 {
			cmds = append(cmds, &blocksCmd{user: u, n: 3000})
		}
	}
	reqs := requests(context.Background(), cmds...)
	for _, r := range reqs {
		s.writers[0].queue <- r
	}
	release()
	seq := core.Seq(0)
	for i, r := range reqs {
		o := <-r.done
		if _, big := r.cmd.(*blocksCmd); big {
			if !errors.Is(o.err, errTxnTooBig) {
				t.Fatalf("a command too big alone: %+v, want errTxnTooBig", o)
			}
			continue
		}
		if seq++; o.err != nil || o.res.Seq != seq {
			t.Fatalf("send %d: %+v, want seq %d", i, o, seq)
		}
	}
	es, err := s.Entries(context.Background(), u, 0, 0, 0)
	if err != nil || len(es) != sends || es[sends-1].Seq != sends {
		t.Fatalf("%d entries (err %v), want %d", len(es), err, sends)
	}
	if applied, _ := s.AppliedIndex(context.Background(), 0); applied != 1+sends+1 { // the gate and the refused command too
		t.Fatalf("applied index %d, want %d", applied, 1+sends+1)
	}
	// The gate's own transaction, then the batch in several.
	if n := len(m.observed(MetricBatchCommands)); n < 1+(sends*20)/157 {
		t.Fatalf("%d commits for %d KB of bodies, want a split", n, sends*20)
	}
}

// gateCmd holds its shard's writer inside Apply until released.
type gateCmd struct {
	started, release chan struct{}
}

func newGate() *gateCmd {
	return &gateCmd{started: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateCmd) Shard(int) int { return 0 }

func (g *gateCmd) Apply(core.StateTx) (core.Result, error) {
	close(g.started)
	<-g.release
	return core.Result{}, nil
}

// holdWriter applies a gate on s's shard 0 and returns once the writer is
// inside it; release lets it go and waits for the gate's Apply to return.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	g := newGate()
	done := make(chan error, 1)
	go func() {
		_, err := s.Apply(context.Background(), g)
		done <- err
	}()
	<-g.started
	return func() {
		close(g.release)
		if err := <-done; err != nil {
			t.Errorf("gate: %v", err)
		}
	}
}

func TestApplyOverloaded(t *testing.T) {
	m := newRecordingMetrics()
	s := NewMemory(Options{QueueSize: 2, Metrics: m})
	defer s.Close()
	release := holdWriter(t, s)
	queued := requests(context.Background(), sendCmd("alice", "1", nil), sendCmd("alice", "2", nil))
	for _, r := range queued {
		s.writers[0].queue <- r // the queue is now full
	}
	if _, err := s.Apply(context.Background(), sendCmd("alice", "3", nil)); !errors.Is(err, core.ErrOverloaded) {
		t.Fatalf("apply to a full queue: %v, want ErrOverloaded", err)
	}
	if n := m.counter(MetricOverloaded, ""); n != 1 {
		t.Fatalf("overload counter %v, want 1", n)
	}
	release()
	for i, r := range queued {
		if o := <-r.done; o.err != nil || o.res.Seq != core.Seq(i+1) {
			t.Fatalf("queued send %d: %+v", i, o)
		}
	}
}

func TestApplyCanceledWhileWaiting(t *testing.T) {
	s := NewMemory(Options{})
	defer s.Close()
	release := holdWriter(t, s)

	// A command whose context ends while it waits in the queue is skipped.
	ctx, cancel := context.WithCancel(context.Background())
	skipped := requests(ctx, sendCmd("alice", "1", nil))[0]
	s.writers[0].queue <- skipped
	// Apply returns the context's error when it ends while waiting.
	errc := make(chan error, 1)
	go func() {
		_, err := s.Apply(ctx, sendCmd("bob", "1", nil))
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("apply canceled while waiting: %v", err)
	}
	release()
	if o := <-skipped.done; !errors.Is(o.err, context.Canceled) {
		t.Fatalf("queued command with a canceled context: %+v", o)
	}
	if h, _ := s.Head(context.Background(), "alice"); h.Head != 0 {
		t.Fatalf("a skipped command was applied: %+v", h)
	}
}

func TestCloseAppliesQueuedCommands(t *testing.T) {
	for _, backend := range []string{"memory", "badger"} {
		t.Run(backend, func(t *testing.T) {
			var s *Store
			if backend == "memory" {
				s = NewMemory(Options{Shards: 2})
			} else {
				var err error
				if s, err = OpenBadger(t.TempDir(), Options{Shards: 2, tuneBadger: smallBadger}); err != nil {
					t.Fatal(err)
				}
			}
			release := holdWriter(t, s)
			u := userOfShard(0, 2)
			queued := requests(context.Background(), sendCmd(u, "1", nil), sendCmd(u, "2", nil))
			for _, r := range queued {
				s.writers[0].queue <- r
			}
			closed := make(chan error, 1)
			go func() { closed <- s.Close() }()
			// Close stops accepting before it waits for the writers.
			for {
				s.mu.RLock()
				c := s.closed
				s.mu.RUnlock()
				if c {
					break
				}
				runtime.Gosched()
			}
			if _, err := s.Apply(context.Background(), sendCmd(u, "3", nil)); !errors.Is(err, core.ErrClosed) {
				t.Fatalf("apply while closing: %v", err)
			}
			release()
			if err := <-closed; err != nil {
				t.Fatalf("close: %v", err)
			}
			for i, r := range queued {
				if o := <-r.done; o.err != nil || o.res.Seq != core.Seq(i+1) {
					t.Fatalf("command queued before close: %+v", o)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second close: %v", err)
			}
			buf := make([]byte, 1<<20)
			if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "(*shardWriter).run") || strings.Contains(stacks, "(*groupCommit).run") {
				t.Fatalf("a writer or the syncer outlived Close:\n%s", stacks)
			}
		})
	}
}

func userOfShard(shard, shards int) core.UserID {
	for i := 0; ; i++ {
		if u := core.UserID(fmt.Sprint("user-", i)); core.UserShard(u, shards) == shard {
			return u
		}
	}
}

// TestBadgerLogsToSlog checks that Badger's INFO lines arrive at Debug.
func TestBadgerLogsToSlog(t *testing.T) {
	h := &recordingHandler{}
	s, err := OpenBadger(t.TempDir(), Options{Logger: slog.New(h), tuneBadger: smallBadger})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.records) == 0 {
		t.Fatal("no logs from Badger")
	}
	for _, r := range h.records {
		if r.Level > slog.LevelDebug {
			t.Errorf("Badger logged %q at %s", r.Message, r.Level)
		}
	}
}

type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }
