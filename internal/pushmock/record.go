package pushmock

import (
	"fmt"
	"sync"
	"time"
)

// DefaultWait bounds WaitRequests.
const DefaultWait = 10 * time.Second

// history is a mock's record of requests, safe for concurrent use.
type history[T any] struct {
	mu       sync.Mutex
	noRecord bool
	count    int
	items    []T
	changed  chan struct{} // closed and replaced on every append
}

func newHistory[T any](noRecord bool) *history[T] {
	return &history[T]{noRecord: noRecord, changed: make(chan struct{})}
}

func (h *history[T]) add(v T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.count++
	if !h.noRecord {
		h.items = append(h.items, v)
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *history[T]) all() []T {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]T(nil), h.items...)
}

func (h *history[T]) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count
}

// wait waits until n requests have arrived.
func (h *history[T]) wait(n int, timeout time.Duration) ([]T, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		if h.count >= n {
			items := append([]T(nil), h.items...)
			h.mu.Unlock()
			return items, nil
		}
		ch, have := h.changed, h.count
		h.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return nil, fmt.Errorf("pushmock: %d requests after %v, want %d", have, timeout, n)
		}
	}
}

// script holds the scripted answers per token and the error rate.
type script[R any] struct {
	mu      sync.Mutex
	byToken map[string][]R
	rate    float64
	rateR   R
	n       uint64
}

func newScript[R any]() *script[R] { return &script[R]{byToken: map[string][]R{}} }

func (s *script[R]) add(token string, rs []R) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byToken[token] = append(s.byToken[token], rs...)
}

func (s *script[R]) setRate(rate float64, r R) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rate, s.rateR, s.n = rate, r, 0
}

// next returns the answer for a request to token: the next scripted one,
// else the error-rate answer when it is that request's turn, else false.
// The error rate is deterministic: request i fails when
// floor((i+1)·rate) > floor(i·rate).
func (s *script[R]) next(token string) (R, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.byToken[token]; len(q) > 0 {
		r := q[0]
		if len(q) == 1 {
			delete(s.byToken, token)
		} else {
			s.byToken[token] = q[1:]
		}
		return r, true
	}
	if s.rate > 0 {
		i := float64(s.n)
		s.n++
		if int64((i+1)*s.rate) > int64(i*s.rate) {
			return s.rateR, true
		}
	}
	var zero R
	return zero, false
}
