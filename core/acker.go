package core

import (
	"context"
	"sync"
	"time"
)

// The seq a Sync asks after acknowledges what the device has, but the Sync
// does not wait for that ack to be durable: losing it in a crash only means
// that entries the device already holds are offered again, and the device
// skips them by seq. So a Sync hands its ack to the acker, which coalesces
// acks per device and applies them in the background, and the Sync's page
// goes out without waiting for an fsync. Explicit Acks stay synchronous.

type ackKey struct {
	user   UserID
	device DeviceID
}

type acker struct {
	c       *Core
	mu      sync.Mutex
	pending map[ackKey]Seq
	wake    chan struct{} // cap 1
}

func newAcker(c *Core) *acker {
	return &acker{c: c, pending: map[ackKey]Seq{}, wake: make(chan struct{}, 1)}
}

// add queues an ack of seq by (u, d).
func (a *acker) add(u UserID, d DeviceID, seq Seq) {
	k := ackKey{u, d}
	a.mu.Lock()
	if seq > a.pending[k] {
		a.pending[k] = seq
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// run applies queued acks until Core closes, then what is left once,
// within a bound.
func (a *acker) run() {
	defer a.c.wg.Done()
	for {
		select {
		case <-a.wake:
			a.flush(context.Background())
		case <-a.c.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			a.flush(ctx)
			cancel()
			return
		}
	}
}

// flush applies every queued ack, concurrently so that they share the
// storage writer's transactions, and returns when all are done.
func (a *acker) flush(ctx context.Context) {
	a.mu.Lock()
	batch := a.pending
	a.pending = map[ackKey]Seq{}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for k, seq := range batch {
		wg.Go(func() {
			if _, err := a.c.store.Apply(ctx, &AckCmd{User: k.user, Device: k.device, Seq: seq, Mode: a.c.cfg.AckMode}); err != nil {
				a.c.log.Debug("background ack failed", "err", err)
			}
		})
	}
	wg.Wait()
}
