package storage

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ternhq/tern/core"
)

// Options configures a Store. The zero value of every field means the
// default stated beside it; so does a negative number.
type Options struct {
	// Shards is the number of shards state is split into, each with its
	// own queue, writer goroutine and transactions. It is fixed when a
	// data directory is created; at most MaxShards. Default 1, measured
	// (BenchmarkDurableAppendShards, 2 cores, medians of 4 runs): 1 shard
	// 38k appends/s at 64 appenders and 42k/s at 512; 2 shards 35k and
	// 45k; 4 shards 33k and 48k. The shards' commits are applied
	// concurrently and share the syncer's fsyncs, so more shards no
	// longer mean smaller fsync'd groups; but 2 cores are saturated
	// either way, and these differences are within the run-to-run noise
	// (±15%). Changing the count later means migrating the data: choose
	// it for the layout you will replicate.
	Shards int
	// MaxBatch bounds the commands applied in one transaction. Default
	// 1024.
	MaxBatch int
	// QueueSize bounds each shard's queue of commands waiting for its
	// writer; Apply returns core.ErrOverloaded when it is full. Default
	// 8192.
	QueueSize int
	// Metrics receives the counters in MetricDescs; nil discards them.
	Metrics core.Metrics
	// Logger receives the store's and Badger's logs; nil discards them.
	Logger *slog.Logger
	// UnsafeNoSync, when true, answers commands once they are applied,
	// without the syncer's fdatasync: a crash of the process or the host
	// can lose acknowledged commands (a clean Close still keeps them, as
	// Badger writes its memtables out). It exists to measure how much of
	// a figure the disk's syncs cost, and for throwaway development data;
	// never for data anyone relies on. Default false: every answered
	// command is durable. Badger only; the memory store never syncs.
	UnsafeNoSync bool

	// tuneBadger, when set, adjusts Badger's options (tests only).
	tuneBadger func(*badger.Options)
	// syncHook, when set, runs each of the syncer's syncs in place of
	// sync, which it may call (tests only).
	syncHook func(sync func() error) error
	// discardHook, when set, is told every timestamp given to Badger's
	// SetDiscardTs (tests only).
	discardHook func(ts uint64)
	// discardEvery bounds how often the discard timestamp moves; default
	// defaultDiscardEvery (tests only).
	discardEvery time.Duration
}

// Defaults for Options.
const (
	DefaultShards    = 1
	DefaultMaxBatch  = 1024
	DefaultQueueSize = 8192
)

func (o Options) withDefaults() Options {
	if o.Shards <= 0 {
		o.Shards = DefaultShards
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Metrics == nil {
		o.Metrics = core.NopMetrics{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func (o Options) validate() error {
	if o.Shards > MaxShards {
		return fmt.Errorf("storage: %d shards, at most %d", o.Shards, MaxShards)
	}
	return nil
}

// Store is core.Store over Badger (OpenBadger) or memory (NewMemory). It is
// safe for concurrent use.
type Store struct {
	be      backend
	shards  int
	metrics core.Metrics
	log     *slog.Logger
	writers []*shardWriter
	running sync.WaitGroup // one per writer goroutine

	mu        sync.RWMutex
	closed    bool          // guarded by mu; no more commands are accepted
	beClosed  bool          // guarded by mu; the backend is closed, reads fail
	closeDone chan struct{} // closed when the first Close has finished
}

var _ core.Store = (*Store)(nil)

// newStore reads each shard's applied index and starts the writers.
func newStore(be backend, opts Options) (*Store, error) {
	s := &Store{
		be:        be,
		shards:    opts.Shards,
		metrics:   opts.Metrics,
		log:       opts.Logger,
		closeDone: make(chan struct{}),
	}
	for shard := range opts.Shards {
		var applied uint64
		err := be.view(shard, func(kv kvReader) error {
			var err error
			applied, err = readApplied(kv, shard)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("read applied index of shard %d: %w", shard, err)
		}
		bl := new(blockers)
		if err := be.view(shard, func(kv kvReader) error { return loadBlockers(kv, shard, bl) }); err != nil {
			return nil, fmt.Errorf("read blocks of shard %d: %w", shard, err)
		}
		s.writers = append(s.writers, &shardWriter{
			be:       be,
			shard:    shard,
			shards:   opts.Shards,
			maxBatch: opts.MaxBatch,
			metrics:  opts.Metrics,
			log:      opts.Logger,
			queue:    make(chan *request, opts.QueueSize),
			applied:  applied,
			blockers: bl,
		})
	}
	s.running.Add(len(s.writers))
	for _, w := range s.writers {
		go func() {
			defer s.running.Done()
			w.run()
		}()
	}
	return s, nil
}

// Shards is the number of shards.
func (s *Store) Shards() int { return s.shards }

// Apply queues cmd for its shard's writer and waits until the transaction
// holding it is durable (fsync'd, with Badger) or cmd failed. It returns
// core.ErrOverloaded at once when the shard's queue is full, and an error
// wrapping core.ErrClosed after Close or once a sync has failed. When ctx
// ends first Apply returns ctx's error, but a command the writer has
// already taken may still commit: callers retry idempotently (sends by
// client_msg_id, deliveries by their marker). A queued command whose ctx
// has ended is skipped.
func (s *Store) Apply(ctx context.Context, cmd core.Command) (core.Result, error) {
	if err := ctx.Err(); err != nil {
		return core.Result{}, err
	}
	shard := cmd.Shard(s.shards)
	if shard < 0 || shard >= s.shards {
		return core.Result{}, fmt.Errorf("storage: command for shard %d of %d: %w", shard, s.shards, core.ErrInvalid)
	}
	req := &request{ctx: ctx, cmd: cmd, done: make(chan outcome, 1)}
	if err := s.enqueue(s.writers[shard], req); err != nil {
		return core.Result{}, err
	}
	select {
	case o := <-req.done:
		return o.res, o.err
	case <-ctx.Done():
		return core.Result{}, ctx.Err()
	}
}

func (s *Store) enqueue(w *shardWriter, req *request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("storage: %w", core.ErrClosed)
	}
	if err := s.be.failure(); err != nil {
		return err
	}
	select {
	case w.queue <- req:
		return nil
	default:
		s.metrics.Add(MetricOverloaded, "", 1)
		return fmt.Errorf("storage: queue of shard %d full: %w", w.shard, core.ErrOverloaded)
	}
}

// Close stops accepting commands, applies those already queued, stops the
// writers, waits until what they committed is durable and closes the
// database. Reads keep working until the writers have stopped. Calling it
// again waits for the first call and returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.closeDone
		return nil
	}
	s.closed = true
	for _, w := range s.writers {
		close(w.queue)
	}
	s.mu.Unlock()

	s.running.Wait()
	s.be.flush() // answers what the writers committed

	s.mu.Lock() // waits for reads in progress
	s.beClosed = true
	err := s.be.close()
	s.mu.Unlock()
	close(s.closeDone)
	if err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// read runs fn over the durable state of shard.
func (s *Store) read(ctx context.Context, shard int, fn func(kvReader) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.beClosed {
		return core.ErrClosed
	}
	return s.be.view(shard, fn)
}

func (s *Store) checkShard(shard int) error {
	if shard < 0 || shard >= s.shards {
		return fmt.Errorf("shard %d of %d: %w", shard, s.shards, core.ErrInvalid)
	}
	return nil
}

// Head returns u's mailbox head; the zero Head for an unknown mailbox.
func (s *Store) Head(ctx context.Context, u core.UserID) (core.Head, error) {
	if err := checkIDs(string(u)); err != nil {
		return core.Head{}, fmt.Errorf("storage: head: %w", err)
	}
	shard := core.UserShard(u, s.shards)
	var h core.Head
	err := s.read(ctx, shard, func(kv kvReader) error {
		var err error
		h, err = readHead(kv, shard, u)
		return err
	})
	if err != nil {
		return core.Head{}, fmt.Errorf("storage: head: %w", err)
	}
	return h, nil
}

// Entries returns up to limit (<= 0: any number of) entries of u's mailbox
// with seq > after, in seq order. With maxBytes > 0 it stops before the
// entry whose body would take the bodies' total over maxBytes, except that
// the first entry is always returned.
func (s *Store) Entries(ctx context.Context, u core.UserID, after core.Seq, limit, maxBytes int) ([]core.Entry, error) {
	if err := checkIDs(string(u)); err != nil {
		return nil, fmt.Errorf("storage: entries: %w", err)
	}
	if after == math.MaxUint64 {
		return nil, nil
	}
	shard := core.UserShard(u, s.shards)
	prefix, start := entryPrefix(shard, u), entryKey(shard, u, after+1)
	var (
		entries []core.Entry
		total   int
	)
	err := s.read(ctx, shard, func(kv kvReader) error {
		entries, total = nil, 0
		return kv.scan(prefix, start, func(_, v []byte) (bool, error) {
			e, err := decodeEntry(v)
			if err != nil {
				return false, err
			}
			if maxBytes > 0 && len(entries) > 0 && total+len(e.Body) > maxBytes {
				return false, nil
			}
			entries = append(entries, e)
			total += len(e.Body)
			return limit <= 0 || len(entries) < limit, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: entries: %w", err)
	}
	return entries, nil
}

// Cursor returns the seq device d of u acknowledged last; 0 if none.
func (s *Store) Cursor(ctx context.Context, u core.UserID, d core.DeviceID) (core.Seq, error) {
	if err := checkIDs(string(u), string(d)); err != nil {
		return 0, fmt.Errorf("storage: cursor: %w", err)
	}
	shard := core.UserShard(u, s.shards)
	var seq core.Seq
	err := s.read(ctx, shard, func(kv kvReader) error {
		var err error
		seq, err = readCursor(kv, shard, u, d)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("storage: cursor: %w", err)
	}
	return seq, nil
}

// Group returns g's record and whether g exists.
func (s *Store) Group(ctx context.Context, g core.GroupID) (core.GroupMeta, bool, error) {
	if err := checkIDs(string(g)); err != nil {
		return core.GroupMeta{}, false, fmt.Errorf("storage: group: %w", err)
	}
	shard := core.GroupShard(g, s.shards)
	var (
		m  core.GroupMeta
		ok bool
	)
	err := s.read(ctx, shard, func(kv kvReader) error {
		var err error
		m, ok, err = readGroup(kv, shard, g)
		return err
	})
	if err != nil {
		return core.GroupMeta{}, false, fmt.Errorf("storage: group: %w", err)
	}
	return m, ok, nil
}

// Members returns g's members in id (byte) order.
func (s *Store) Members(ctx context.Context, g core.GroupID) ([]core.UserID, error) {
	if err := checkIDs(string(g)); err != nil {
		return nil, fmt.Errorf("storage: members: %w", err)
	}
	shard := core.GroupShard(g, s.shards)
	prefix := memberPrefix(shard, g)
	var members []core.UserID
	err := s.read(ctx, shard, func(kv kvReader) error {
		members = nil
		return kv.scan(prefix, prefix, func(k, _ []byte) (bool, error) {
			u, err := parseLastID(k[len(prefix):])
			if err != nil {
				return false, err
			}
			members = append(members, core.UserID(u))
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: members: %w", err)
	}
	return members, nil
}

// IsMember reports whether u is a member of g.
func (s *Store) IsMember(ctx context.Context, g core.GroupID, u core.UserID) (bool, error) {
	if err := checkIDs(string(g), string(u)); err != nil {
		return false, fmt.Errorf("storage: is member: %w", err)
	}
	shard := core.GroupShard(g, s.shards)
	var ok bool
	err := s.read(ctx, shard, func(kv kvReader) error {
		var err error
		ok, err = exists(kv, memberKey(shard, g, u))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("storage: is member: %w", err)
	}
	return ok, nil
}

// Blocks reports whether by blocks who.
func (s *Store) Blocks(ctx context.Context, by, who core.UserID) (bool, error) {
	if err := checkIDs(string(by), string(who)); err != nil {
		return false, fmt.Errorf("storage: blocks: %w", err)
	}
	shard := core.UserShard(by, s.shards)
	if !s.writers[shard].blockers.may(by) {
		return false, nil
	}
	var ok bool
	err := s.read(ctx, shard, func(kv kvReader) error {
		var err error
		ok, err = exists(kv, blockKey(shard, by, who))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("storage: blocks: %w", err)
	}
	return ok, nil
}

// Page sizes of Outbox and Mailboxes: items read per read transaction.
const (
	outboxPage  = 128
	mailboxPage = 1024
)

// Outbox calls fn for every outbox item of shard, in key order (sender,
// message id, recipient), until fn returns false. Items are read in pages
// and fn is called between reads, holding no lock: it may call the store.
// Each page reads the durable state as of its own read, so a long scan may
// see items committed while it runs.
func (s *Store) Outbox(ctx context.Context, shard int, fn func(core.OutboxItem) bool) error {
	if err := s.checkShard(shard); err != nil {
		return fmt.Errorf("storage: outbox: %w", err)
	}
	decode := func(_, v []byte) (core.OutboxItem, error) { return decodeOutbox(v) }
	if err := scanPaged(ctx, s, shard, outboxPrefix(shard), outboxPage, decode, fn); err != nil {
		return fmt.Errorf("storage: outbox: %w", err)
	}
	return nil
}

// Mailboxes calls fn for the head of every mailbox of shard, in user id
// order, until fn returns false. Like Outbox, fn runs between paged reads
// and may call the store.
func (s *Store) Mailboxes(ctx context.Context, shard int, fn func(core.UserID, core.Head) bool) error {
	if err := s.checkShard(shard); err != nil {
		return fmt.Errorf("storage: mailboxes: %w", err)
	}
	type mailbox struct {
		user core.UserID
		head core.Head
	}
	decode := func(k, v []byte) (mailbox, error) {
		_, u, err := parseHeadKey(k)
		if err != nil {
			return mailbox{}, err
		}
		h, err := decodeHead(v)
		return mailbox{u, h}, err
	}
	each := func(m mailbox) bool { return fn(m.user, m.head) }
	if err := scanPaged(ctx, s, shard, shardPrefix(tagHead, shard, 0), mailboxPage, decode, each); err != nil {
		return fmt.Errorf("storage: mailboxes: %w", err)
	}
	return nil
}

// PushRegistrations returns the push registrations of u's devices.
func (s *Store) PushRegistrations(ctx context.Context, u core.UserID) (map[core.DeviceID]core.PushRegistration, error) {
	if err := checkIDs(string(u)); err != nil {
		return nil, fmt.Errorf("storage: push registrations: %w", err)
	}
	shard := core.UserShard(u, s.shards)
	prefix := pushPrefix(shard, u)
	var regs map[core.DeviceID]core.PushRegistration
	err := s.read(ctx, shard, func(kv kvReader) error {
		regs = nil
		return kv.scan(prefix, prefix, func(k, v []byte) (bool, error) {
			d, err := parseLastID(k[len(prefix):])
			if err != nil {
				return false, err
			}
			r, err := decodePush(v)
			if err != nil {
				return false, err
			}
			if regs == nil {
				regs = make(map[core.DeviceID]core.PushRegistration, 1)
			}
			regs[core.DeviceID(d)] = r
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: push registrations: %w", err)
	}
	return regs, nil
}

// AllPushRegistrations calls fn for every push registration of shard, in key
// order, until fn returns false. Like Outbox, fn runs between paged reads.
func (s *Store) AllPushRegistrations(ctx context.Context, shard int, fn func(core.UserID, core.DeviceID, core.PushRegistration) bool) error {
	if err := s.checkShard(shard); err != nil {
		return fmt.Errorf("storage: push registrations: %w", err)
	}
	type reg struct {
		user   core.UserID
		device core.DeviceID
		reg    core.PushRegistration
	}
	decode := func(k, v []byte) (reg, error) {
		_, u, d, err := parsePushKey(k)
		if err != nil {
			return reg{}, err
		}
		r, err := decodePush(v)
		return reg{u, d, r}, err
	}
	each := func(r reg) bool { return fn(r.user, r.device, r.reg) }
	if err := scanPaged(ctx, s, shard, shardPrefix(tagPush, shard, 0), mailboxPage, decode, each); err != nil {
		return fmt.Errorf("storage: push registrations: %w", err)
	}
	return nil
}

// scanPaged reads the keys under prefix pageSize at a time, each page in
// one read transaction (at the durable timestamp of its start), and calls
// fn for the decoded items between reads.
func scanPaged[T any](ctx context.Context, s *Store, shard int, prefix []byte, pageSize int,
	decode func(key, value []byte) (T, error), fn func(T) bool) error {
	start := prefix
	for {
		var (
			page []T
			next []byte // the first key not in page; nil at the end
		)
		err := s.read(ctx, shard, func(kv kvReader) error {
			page, next = page[:0], nil
			return kv.scan(prefix, start, func(k, v []byte) (bool, error) {
				if len(page) == pageSize {
					next = append([]byte(nil), k...)
					return false, nil
				}
				item, err := decode(k, v)
				if err != nil {
					return false, err
				}
				page = append(page, item)
				return true, nil
			})
		})
		if err != nil {
			return err
		}
		for _, item := range page {
			if !fn(item) {
				return nil
			}
		}
		if next == nil {
			return nil
		}
		start = next
	}
}

// AppliedIndex returns the number of commands applied to shard since the
// store was created: every command whose Apply ran, whether it succeeded or
// failed, in a durable transaction. It is written in the same transaction
// as the commands' effects.
func (s *Store) AppliedIndex(ctx context.Context, shard int) (uint64, error) {
	if err := s.checkShard(shard); err != nil {
		return 0, fmt.Errorf("storage: applied index: %w", err)
	}
	var n uint64
	err := s.read(ctx, shard, func(kv kvReader) error {
		var err error
		n, err = readApplied(kv, shard)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("storage: applied index: %w", err)
	}
	return n, nil
}
