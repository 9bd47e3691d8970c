package core

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Sink is how core reaches one live session: the edge implements it for the
// sessions it holds (and, once edge and core are separate processes, a
// proxy implements it for a remote edge). Its methods must not block.
type Sink interface {
	// Notify says the user's mailbox has grown to head. Only the newest
	// matters; sinks coalesce. e, when not nil, is the entry at head (the
	// append that made it), for sinks that pass small entries on; it is
	// shared and must not be modified. Notifies of one mailbox can arrive
	// out of order (concurrent appends finish in any order).
	Notify(head Seq, e *Entry)
	// Replaced says a newer session of the same device took over; the sink
	// should tell its client and close.
	Replaced()
}

// SessionInfo describes a session being attached.
type SessionInfo struct {
	User     UserID
	Device   DeviceID
	Platform Platform
	AppState AppState
	// SeqCli is the seq the device reports having stored; it is acknowledged.
	SeqCli Seq
	// Push, when set, registers or replaces the device's push registration.
	Push *PushRegistration
	// Resume is the id of the session the client had before, if any.
	// Resuming a session that a newer session of the same device replaced
	// fails with ErrSessionReplaced, so that a stale client stops instead of
	// taking the device back.
	Resume string
}

// Welcome is the mailbox state a new session starts from.
type Welcome struct {
	// SessionID names the new session; clients send it back as
	// SessionInfo.Resume when they reconnect.
	SessionID string
	Head      Seq
	Floor     Seq
	// Acked is the account's acked seq (AckAccount) or the device's cursor
	// (AckDevice).
	Acked Seq
	Mode  AckMode
}

// Session is an attached session's handle.
type Session interface {
	// SetAppState records that the app moved to the foreground or background.
	SetAppState(AppState)
	// Detach removes the route; it is a no-op once the session was replaced.
	Detach()
}

type session struct {
	r        *routes
	id       string
	user     UserID
	device   DeviceID
	platform Platform
	sink     Sink
	state    atomic.Int32 // AppState
	detached atomic.Bool
}

func (s *session) SetAppState(st AppState) { s.state.Store(int32(st)) }
func (s *session) Detach()                 { s.r.detach(s) }

// routes maps users to their live sessions, and remembers recently replaced
// sessions so that their clients cannot resume them.
type routes struct {
	c *Core

	mu       sync.RWMutex
	users    map[UserID]map[DeviceID]*session // guarded by mu
	count    int                              // guarded by mu
	replaced map[string]replacedSession       // guarded by mu; by session id
	order    []string                         // guarded by mu; replaced ids, oldest first
}

type replacedSession struct {
	user   UserID
	device DeviceID
	at     time.Time
}

// Replaced sessions are remembered for replacedTTL, at most replacedMax of
// them (the oldest are forgotten first).
const (
	replacedTTL = 24 * time.Hour
	replacedMax = 100_000
)

func newRoutes(c *Core) *routes {
	return &routes{c: c, users: make(map[UserID]map[DeviceID]*session), replaced: make(map[string]replacedSession)}
}

func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// wasReplaced reports whether the session id of the device was replaced by a
// newer session.
func (r *routes) wasReplaced(id string, u UserID, d DeviceID) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rs, ok := r.replaced[id]
	return ok && rs.user == u && rs.device == d
}

// remember records that old was replaced. Called with mu held.
func (r *routes) remember(old *session, now time.Time) {
	r.replaced[old.id] = replacedSession{user: old.user, device: old.device, at: now}
	r.order = append(r.order, old.id)
	for len(r.order) > 0 {
		first := r.replaced[r.order[0]]
		if len(r.order) <= replacedMax && now.Sub(first.at) < replacedTTL {
			break
		}
		delete(r.replaced, r.order[0])
		r.order[0] = ""
		r.order = r.order[1:]
	}
}

// Attach registers a live session of a device and returns its handle and the
// mailbox state it starts from. The route exists before the state is read,
// so no append after the returned Head goes un-notified. An older session of
// the same device is replaced: its sink's Replaced is called.
func (c *Core) Attach(ctx context.Context, info SessionInfo, sink Sink) (Session, Welcome, error) {
	if err := info.User.Validate(); err != nil {
		return nil, Welcome{}, err
	}
	if err := info.Device.Validate(); err != nil {
		return nil, Welcome{}, err
	}
	if info.Resume != "" && c.routes.wasReplaced(info.Resume, info.User, info.Device) {
		return nil, Welcome{}, ErrSessionReplaced
	}
	s := c.routes.attach(info, sink)
	w, err := c.welcome(ctx, info)
	if err != nil {
		s.Detach()
		return nil, Welcome{}, err
	}
	w.SessionID = s.id
	if c.push != nil {
		c.push.synced(info.User, info.Device) // connected: a queued push is moot
	}
	if p := info.Push; p != nil && !c.hasPush(ctx, info.User, info.Device, *p) {
		if err := c.RegisterPush(ctx, info.User, info.Device, *p); err != nil {
			c.log.Info("push registration in hello refused", "err", err)
		}
	}
	return s, w, nil
}

// hasPush reports whether reg is already d's stored registration: a Hello
// repeats it on every connect, and storing it again costs a durable write.
func (c *Core) hasPush(ctx context.Context, u UserID, d DeviceID, reg PushRegistration) bool {
	var regs map[DeviceID]PushRegistration
	if c.push != nil {
		regs = c.push.registrations(ctx, u) // cached
	} else if r, err := c.store.PushRegistrations(ctx, u); err == nil {
		regs = r
	}
	cur, ok := regs[d]
	return ok && cur == reg
}

func (c *Core) welcome(ctx context.Context, info SessionInfo) (Welcome, error) {
	h, err := c.store.Head(ctx, info.User)
	if err != nil {
		return Welcome{}, fmt.Errorf("core: attach: %w", err)
	}
	acked, err := c.ack(ctx, info.User, info.Device, info.SeqCli, h)
	if err != nil {
		return Welcome{}, err
	}
	return Welcome{Head: h.Head, Floor: h.EffectiveFloor(), Acked: acked, Mode: c.cfg.AckMode}, nil
}

func (r *routes) attach(info SessionInfo, sink Sink) *session {
	s := &session{r: r, id: newSessionID(), user: info.User, device: info.Device, platform: info.Platform, sink: sink}
	s.state.Store(int32(info.AppState))
	r.mu.Lock()
	devs := r.users[info.User]
	if devs == nil {
		devs = make(map[DeviceID]*session, 1)
		r.users[info.User] = devs
	}
	old := devs[info.Device]
	devs[info.Device] = s
	if old != nil {
		old.detached.Store(true)
		r.remember(old, r.c.cfg.Now())
	} else {
		r.count++
	}
	n := r.count
	r.mu.Unlock()
	r.c.m.Set(MetricSessions, float64(n))
	if old != nil {
		r.c.m.Add(MetricTakeovers, "", 1)
		old.sink.Replaced()
	}
	return s
}

func (r *routes) detach(s *session) {
	if s.detached.Swap(true) {
		return
	}
	r.mu.Lock()
	devs := r.users[s.user]
	if devs[s.device] == s {
		delete(devs, s.device)
		if len(devs) == 0 {
			delete(r.users, s.user)
		}
		r.count--
	}
	n := r.count
	r.mu.Unlock()
	r.c.m.Set(MetricSessions, float64(n))
}

// notify tells every live session of u that its mailbox is at head, with
// the entry at head when known.
func (r *routes) notify(u UserID, head Seq, e *Entry) {
	r.mu.RLock()
	devs := r.users[u]
	n := 0
	for _, s := range devs {
		s.sink.Notify(head, e)
		n++
	}
	r.mu.RUnlock()
	if n > 0 {
		r.c.m.Add(MetricNotifies, "", float64(n))
	}
}

// Sessions returns the number of attached sessions.
func (c *Core) Sessions() int {
	c.routes.mu.RLock()
	defer c.routes.mu.RUnlock()
	return c.routes.count
}

// foreground reports whether the device has a live session whose app is in
// the foreground.
func (r *routes) foreground(u UserID, d DeviceID) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.users[u][d]
	return s != nil && AppState(s.state.Load()) == Foreground
}

// attached reports whether the device has a live session.
func (r *routes) attached(u UserID, d DeviceID) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.users[u][d] != nil
}
