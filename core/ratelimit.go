package core

import (
	"sync"
	"time"
)

// rateLimiter is a token bucket per user. Buckets that have refilled are
// dropped when the map grows, so idle users cost nothing.
type rateLimiter struct {
	rate  float64 // tokens per second; <= 0 disables
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[UserID]*bucket // guarded by mu
}

type bucket struct {
	tokens float64
	last   time.Time
}

const limiterSweepAt = 100_000

func newRateLimiter(rate float64, burst int, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(max(burst, 1)), now: now, buckets: make(map[UserID]*bucket)}
}

// take consumes one token of u and returns 0, or returns how long until a
// token is available without consuming.
func (l *rateLimiter) take(u UserID) time.Duration {
	if l.rate <= 0 {
		return 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[u]
	if b == nil {
		if len(l.buckets) >= limiterSweepAt {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[u] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

func (l *rateLimiter) sweep(now time.Time) {
	for u, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, u)
		}
	}
}
