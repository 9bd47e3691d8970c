package pushmock

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ternhq/tern/push"
)

// Clock is a manual push.Clock: time moves only when Advance is called,
// and timers fire inside Advance, in deadline order, on the caller's
// goroutine.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*clockTimer
	changed chan struct{} // closed and replaced when timers change
}

var _ push.Clock = (*Clock)(nil)

// NewClock returns a Clock that reads start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

type clockTimer struct {
	c  *Clock
	at time.Time
	f  func()
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f for d from now.
func (c *Clock) AfterFunc(d time.Duration, f func()) push.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &clockTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	c.notify()
	return t
}

// Stop removes the timer; it reports whether it was pending.
func (t *clockTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.timers, t)
	if i < 0 {
		return false
	}
	c.timers = slices.Delete(c.timers, i, i+1)
	c.notify()
	return true
}

func (c *Clock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Advance moves the clock forward by d, firing every timer that falls due,
// earliest first, each with the clock set to its deadline.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		var due *clockTimer
		for _, t := range c.timers {
			if !t.at.After(end) && (due == nil || t.at.Before(due.at)) {
				due = t
			}
		}
		if due == nil {
			break
		}
		c.timers = slices.DeleteFunc(c.timers, func(t *clockTimer) bool { return t == due })
		if due.at.After(c.now) {
			c.now = due.at
		}
		c.notify()
		c.mu.Unlock()
		due.f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

// Pending returns the delays from now until each pending timer fires,
// shortest first.
func (c *Clock) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pendingLocked()
}

func (c *Clock) pendingLocked() []time.Duration {
	ds := make([]time.Duration, len(c.timers))
	for i, t := range c.timers {
		ds[i] = t.at.Sub(c.now)
	}
	slices.Sort(ds)
	return ds
}

// WaitPending waits until n timers are pending and returns their delays
// (as Pending), or fails after timeout: it is how a test learns that the
// Service has scheduled a retry before it advances the clock.
func (c *Clock) WaitPending(n int, timeout time.Duration) ([]time.Duration, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if len(c.timers) >= n {
			ds := c.pendingLocked()
			c.mu.Unlock()
			return ds, nil
		}
		ch := c.changed
		have := len(c.timers)
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return nil, fmt.Errorf("pushmock: %d timers pending after %v, want %d", have, timeout, n)
		}
	}
}
