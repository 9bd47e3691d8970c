package core

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// forwarder appends outbox items to their recipients' mailboxes. An item is
// retried with exponential backoff (and jitter) until the recipient's shard
// has applied its DeliverCmd; only then is it removed from the outbox, in
// batches. Because items are durable in the sender's shard and DeliverCmd is
// idempotent, a crash anywhere in between delivers each item exactly once
// after the restart: start re-queues everything left in the outbox.
type forwarder struct {
	c *Core

	wake chan struct{} // cap 1: the queue changed
	kick chan struct{} // cap 1: the done buffer has filled
	sem  chan struct{} // in-flight deliveries

	mu      sync.Mutex
	queue   itemQueue              // guarded by mu; by due time
	pending map[OutboxKey]struct{} // guarded by mu; queued or in flight
	done    map[int][]OutboxKey    // guarded by mu; delivered, to remove, by shard
	attempt map[OutboxKey]int      // guarded by mu; failed attempts so far
	loaded  bool                   // guarded by mu; the startup scan finished

	wg sync.WaitGroup // run, flushLoop and every delivery
}

func newForwarder(c *Core) *forwarder {
	return &forwarder{
		c:       c,
		wake:    make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		sem:     make(chan struct{}, c.cfg.Forward.MaxInFlight),
		pending: make(map[OutboxKey]struct{}),
		done:    make(map[int][]OutboxKey),
		attempt: make(map[OutboxKey]int),
	}
}

func (f *forwarder) start() {
	f.wg.Add(2)
	go f.run()
	go f.flushLoop()
}

func (f *forwarder) wait() { f.wg.Wait() }

// enqueue schedules items for delivery at due (zero: now). Items already
// pending are ignored.
func (f *forwarder) enqueue(items []OutboxItem, due time.Time) {
	f.mu.Lock()
	for i := range items {
		k := items[i].Key()
		if _, ok := f.pending[k]; ok {
			continue
		}
		f.pending[k] = struct{}{}
		heap.Push(&f.queue, &queued{item: items[i], due: due})
	}
	n := len(f.pending)
	f.mu.Unlock()
	f.c.m.Set(MetricForwardPending, float64(n))
	signal(f.wake)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// load re-queues every item in every shard's outbox.
func (f *forwarder) load(ctx context.Context) {
	for shard := range f.c.store.Shards() {
		var batch []OutboxItem
		err := f.c.store.Outbox(ctx, shard, func(o OutboxItem) bool {
			batch = append(batch, o)
			if len(batch) == 1024 {
				f.enqueue(batch, time.Time{})
				batch = batch[:0]
			}
			return true
		})
		f.enqueue(batch, time.Time{})
		if err != nil {
			f.c.log.Error("forwarder: reading outbox", "shard", shard, "err", err)
		}
	}
	f.mu.Lock()
	f.loaded = true
	f.mu.Unlock()
	f.c.starting.Done()
}

func (f *forwarder) run() {
	defer f.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-f.c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	f.load(ctx)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		item, wait := f.next()
		if item != nil {
			select {
			case f.sem <- struct{}{}:
			case <-f.c.stop:
				return
			}
			f.wg.Add(1)
			go f.deliver(ctx, item)
			continue
		}
		timer.Reset(wait)
		select {
		case <-f.wake:
		case <-timer.C:
		case <-f.c.stop:
			return
		}
	}
}

// next pops the first due item, or returns how long until one is due.
func (f *forwarder) next() (*OutboxItem, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) == 0 {
		return nil, time.Hour
	}
	q := f.queue[0]
	if wait := time.Until(q.due); !q.due.IsZero() && wait > 0 {
		return nil, wait
	}
	heap.Pop(&f.queue)
	return &q.item, 0
}

func (f *forwarder) deliver(ctx context.Context, item *OutboxItem) {
	defer f.wg.Done()
	defer func() { <-f.sem }()
	cmd := &DeliverCmd{Item: *item, Now: f.c.now(), RetainCount: f.c.cfg.RetainCount, DeliveryTTL: f.c.cfg.DeliveryTTL}
	r, err := f.c.store.Apply(ctx, cmd)
	k := item.Key()
	if err != nil {
		if ctx.Err() != nil {
			return // stopping; the item stays in the outbox for the next start
		}
		f.mu.Lock()
		n := f.attempt[k] + 1
		f.attempt[k] = n
		delete(f.pending, k)
		f.mu.Unlock()
		f.c.m.Add(MetricForwardRetries, Reason(err), 1)
		f.c.log.Warn("forwarder: delivery failed, will retry", "to_shard", UserShard(item.Recipient, f.c.store.Shards()), "attempt", n, "err", err)
		f.enqueue([]OutboxItem{*item}, time.Now().Add(f.backoff(n)))
		return
	}
	f.c.applied(r)
	if !r.Duplicate {
		f.c.m.Add(MetricDelivered, "", 1)
	}
	shard := UserShard(item.Entry.From, f.c.store.Shards())
	f.mu.Lock()
	delete(f.attempt, k)
	f.done[shard] = append(f.done[shard], k)
	full := len(f.done[shard]) >= 512
	f.mu.Unlock()
	if full {
		signal(f.kick)
	}
}

// backoff is the delay before attempt n+1: exponential from MinBackoff,
// capped at MaxBackoff, with up to 50% jitter so that retries of many items
// spread out.
func (f *forwarder) backoff(n int) time.Duration {
	cfg := f.c.cfg.Forward
	d := cfg.MinBackoff
	for i := 1; i < n && d < cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, cfg.MaxBackoff)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// flushLoop removes delivered items from the outbox. Losing a flush to a
// crash is harmless: the items are delivered again, and DeliverCmd answers
// from its marker.
func (f *forwarder) flushLoop() {
	defer f.wg.Done()
	t := time.NewTicker(f.c.cfg.Forward.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-f.kick:
		case <-f.c.stop:
			// Deliveries may still be finishing; flush after them with a
			// short bounded wait.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			for range cap(f.sem) {
				select {
				case f.sem <- struct{}{}:
				case <-ctx.Done():
				}
			}
			f.flush(ctx)
			cancel()
			return
		}
		f.flush(context.Background())
	}
}

func (f *forwarder) flush(ctx context.Context) {
	f.mu.Lock()
	done := f.done
	f.done = make(map[int][]OutboxKey)
	f.mu.Unlock()
	for shard, keys := range done {
		if _, err := f.c.store.Apply(ctx, &OutboxDoneCmd{Keys: keys}); err != nil {
			f.c.log.Warn("forwarder: removing delivered items failed; they will be delivered again and deduplicated", "shard", shard, "items", len(keys), "err", err)
			// Leave them pending in memory as done; requeue to the buffer.
			f.mu.Lock()
			f.done[shard] = append(f.done[shard], keys...)
			f.mu.Unlock()
			continue
		}
		f.mu.Lock()
		for _, k := range keys {
			delete(f.pending, k)
		}
		n := len(f.pending)
		f.mu.Unlock()
		f.c.m.Set(MetricForwardPending, float64(n))
	}
}

// Pending returns the number of outbox items not yet delivered and removed,
// and whether the startup scan of the outbox has finished.
func (c *Core) Pending() (n int, loaded bool) {
	c.fwd.mu.Lock()
	defer c.fwd.mu.Unlock()
	return len(c.fwd.pending), c.fwd.loaded
}

type queued struct {
	item OutboxItem
	due  time.Time
}

type itemQueue []*queued

func (q itemQueue) Len() int { return len(q) }
func (q itemQueue) Less(i, j int) bool {
	return q[i].due.Before(q[j].due)
}
func (q itemQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *itemQueue) Push(x any)   { *q = append(*q, x.(*queued)) }
func (q *itemQueue) Pop() any {
	old := *q
	n := len(old)
	x := old[n-1]
	old[n-1] = nil
	*q = old[:n-1]
	return x
}
