package core

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// pushCollapseID is the collapse id of every push: each push targets one
// device, and a newer one should replace an undelivered older one. It names
// no user, since it is sent to Apple and Google.
const pushCollapseID = "tern-sync"

// pushRegsCached bounds the users whose registrations are kept in memory.
const pushRegsCached = 200_000

type deviceKey struct {
	user   UserID
	device DeviceID
}

// pushes decides which devices to wake. It runs on its own goroutine (run),
// fed by applied() through growths, so that reading registrations never
// delays a send's acknowledgement. Its state is in memory: after a restart
// it is derived again from the store (resume).
type pushes struct {
	c       *Core
	p       Pusher
	growths chan Growth // bounded: applied() blocks when the decider lags

	mu      sync.Mutex
	regs    map[UserID]map[DeviceID]PushRegistration // guarded by mu; cache, an empty map means none
	pending map[deviceKey]Seq                        // guarded by mu; one outstanding push per device
}

func newPushes(c *Core, p Pusher) *pushes {
	return &pushes{
		c:       c,
		p:       p,
		growths: make(chan Growth, 4096),
		regs:    make(map[UserID]map[DeviceID]PushRegistration),
		pending: make(map[deviceKey]Seq),
	}
}

// grown hands a mailbox growth to the decider.
func (ps *pushes) grown(g Growth) {
	select {
	case ps.growths <- g:
	case <-ps.c.stop:
	}
}

func (ps *pushes) run() {
	defer ps.c.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ps.c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	ps.resume(ctx)
	ps.c.starting.Done()
	for {
		select {
		case g := <-ps.growths:
			ps.decide(ctx, g)
		case <-ps.c.stop:
			return
		}
	}
}

// decide wakes the devices of g's user that need it: registered, without a
// foreground session, and not already woken.
func (ps *pushes) decide(ctx context.Context, g Growth) {
	if g.Entry != nil && g.Entry.From == g.User {
		return // a user's own sent copy wakes none of its devices
	}
	regs := ps.registrations(ctx, g.User)
	for d, reg := range regs {
		ps.wake(g.User, d, reg, g.Head, g.Entry, "growth")
	}
}

// wake pushes one device unless it is in the foreground or already woken.
func (ps *pushes) wake(u UserID, d DeviceID, reg PushRegistration, head Seq, e *Entry, why string) {
	if ps.c.routes.foreground(u, d) {
		ps.c.m.Add(MetricPushDecisions, "foreground", 1)
		return
	}
	k := deviceKey{u, d}
	ps.mu.Lock()
	_, outstanding := ps.pending[k]
	if !outstanding {
		ps.pending[k] = head
	}
	ps.mu.Unlock()
	if outstanding {
		ps.c.m.Add(MetricPushDecisions, "outstanding", 1)
		return
	}
	req := PushRequest{User: u, Device: d, Reg: reg, Head: head, CollapseID: pushCollapseID}
	if ps.c.cfg.PushPreview && e != nil {
		preview := *e
		req.Preview = &preview
	}
	ps.p.Push(req)
	ps.c.m.Add(MetricPushDecisions, why, 1)
}

// synced clears the device's outstanding push: it has pulled (or is
// connected), so the next growth may wake it again.
func (ps *pushes) synced(u UserID, d DeviceID) {
	k := deviceKey{u, d}
	ps.mu.Lock()
	_, was := ps.pending[k]
	delete(ps.pending, k)
	ps.mu.Unlock()
	if was {
		ps.p.Cancel(u, d)
		ps.c.m.Add(MetricPushDecisions, "cleared", 1)
	}
}

// registrations returns u's registrations, from the cache or the store.
func (ps *pushes) registrations(ctx context.Context, u UserID) map[DeviceID]PushRegistration {
	ps.mu.Lock()
	regs, ok := ps.regs[u]
	ps.mu.Unlock()
	if ok {
		return regs
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	regs, err := ps.c.store.PushRegistrations(rctx, u)
	cancel()
	if err != nil {
		ps.c.log.Warn("push: reading registrations", "err", err)
		return nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.regs) >= pushRegsCached {
		n := 0
		for v := range ps.regs { // drop an arbitrary tenth
			delete(ps.regs, v)
			if n++; n >= pushRegsCached/10 {
				break
			}
		}
	}
	if regs == nil {
		regs = map[DeviceID]PushRegistration{}
	}
	ps.regs[u] = regs
	return regs
}

// cacheSet records a registration change that committed.
func (ps *pushes) cacheSet(u UserID, d DeviceID, reg *PushRegistration) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	regs, ok := ps.regs[u]
	if !ok {
		return // not cached: the next read goes to the store
	}
	next := make(map[DeviceID]PushRegistration, len(regs)+1) // readers hold the old map
	for k, v := range regs {
		next[k] = v
	}
	if reg == nil {
		delete(next, d)
	} else {
		next[d] = *reg
	}
	ps.regs[u] = next
}

// resume derives the pushes owed after a restart: every registered device
// with no session whose cursor is behind its mailbox's head.
func (ps *pushes) resume(ctx context.Context) {
	for shard := range ps.c.store.Shards() {
		type dev struct {
			u   UserID
			d   DeviceID
			reg PushRegistration
		}
		var devs []dev
		err := ps.c.store.AllPushRegistrations(ctx, shard, func(u UserID, d DeviceID, reg PushRegistration) bool {
			devs = append(devs, dev{u, d, reg})
			return ctx.Err() == nil
		})
		if err != nil {
			ps.c.log.Warn("push: scanning registrations", "shard", shard, "err", err)
		}
		for _, v := range devs {
			h, err := ps.c.store.Head(ctx, v.u)
			if err != nil {
				continue
			}
			cur, err := ps.c.store.Cursor(ctx, v.u, v.d)
			if err != nil || cur >= h.Head || ps.c.routes.attached(v.u, v.d) {
				continue
			}
			ps.wake(v.u, v.d, v.reg, h.Head, nil, "resume")
		}
	}
}

func validatePushRegistration(r PushRegistration) error {
	switch {
	case r.Platform != PlatformIOS && r.Platform != PlatformAndroid:
		return fmt.Errorf("%w: push is for iOS (APNs) and Android (FCM) devices", ErrInvalid)
	case r.Token == "" || len(r.Token) > MaxPushTokenLen:
		return fmt.Errorf("%w: push token of %d bytes", ErrInvalid, len(r.Token))
	case len(r.Topic) > 256:
		return fmt.Errorf("%w: APNs topic longer than 256 bytes", ErrInvalid)
	}
	return nil
}

// RegisterPush stores (or replaces) the device's push registration.
func (c *Core) RegisterPush(ctx context.Context, u UserID, d DeviceID, r PushRegistration) error {
	if err := u.Validate(); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	if err := validatePushRegistration(r); err != nil {
		return err
	}
	if _, err := c.store.Apply(ctx, &RegisterPushCmd{User: u, Device: d, Reg: r}); err != nil {
		return fmt.Errorf("core: register push: %w", err)
	}
	if c.push != nil {
		c.push.cacheSet(u, d, &r)
	}
	return nil
}

// UnregisterPush removes the device's push registration (logout).
func (c *Core) UnregisterPush(ctx context.Context, u UserID, d DeviceID) error {
	return c.dropPush(ctx, u, d, "")
}

// DropPushToken removes the device's registration if it still holds token:
// the Pusher calls it when APNs or FCM says the token is dead.
func (c *Core) DropPushToken(ctx context.Context, u UserID, d DeviceID, token, reason string) {
	if err := c.dropPush(ctx, u, d, token); err != nil {
		c.log.Warn("push: dropping a dead token", "reason", reason, "err", err)
		return
	}
	c.m.Add(MetricPushDecisions, "token_dropped", 1)
	c.log.Info("push: token dropped", "reason", reason)
}

func (c *Core) dropPush(ctx context.Context, u UserID, d DeviceID, token string) error {
	if err := u.Validate(); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	if _, err := c.store.Apply(ctx, &UnregisterPushCmd{User: u, Device: d, Token: token}); err != nil {
		return fmt.Errorf("core: unregister push: %w", err)
	}
	if c.push != nil {
		if token == "" {
			c.push.cacheSet(u, d, nil)
		} else {
			c.push.mu.Lock()
			delete(c.push.regs, u) // re-read: a newer token may have replaced it
			c.push.mu.Unlock()
		}
	}
	return nil
}
