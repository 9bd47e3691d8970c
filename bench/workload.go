package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// newRun returns a fresh run id and the user name prefix derived from it:
// every run uses new users, so that mailboxes start empty even on a
// long-running server.
func newRun() (uint64, string) {
	var b [8]byte
	rand.Read(b[:])
	id := binary.BigEndian.Uint64(b[:])
	return id, fmt.Sprintf("bench-%012x-", id>>16)
}

func userNames(prefix, role string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%s%d", prefix, role, i)
	}
	return out
}

// progress writes a status line a second to w (nil: nothing) until stop.
type progress struct {
	w        io.Writer
	scenario string
	start    time.Time
	status   atomic.Pointer[func() string]
	quit     chan struct{}
	done     chan struct{}
}

func startProgress(w io.Writer, scenario string) *progress {
	p := &progress{w: w, scenario: scenario, start: time.Now(), quit: make(chan struct{}), done: make(chan struct{})}
	if w == nil {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				line := ""
				if f := p.status.Load(); f != nil {
					line = (*f)()
				}
				fmt.Fprintf(w, "%s %6.1fs  %s\n", p.scenario, time.Since(p.start).Seconds(), line)
			}
		}
	}()
	return p
}

// set replaces the status shown from the next line on.
func (p *progress) set(f func() string) { p.status.Store(&f) }

func (p *progress) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.done
}

// rateStatus shows the history's counters and their rates over the last
// call's interval.
func rateStatus(h *History) func() string {
	var prev Counts
	prevT := time.Now()
	return func() string {
		c := h.Counts()
		now := time.Now()
		dt := now.Sub(prevT).Seconds()
		s := fmt.Sprintf("acked %d (%.0f/s)  delivered %d (%.0f/s)  failed %d",
			c.Acked, float64(c.Acked-prev.Acked)/dt, c.Delivered, float64(c.Delivered-prev.Delivered)/dt, c.Failed)
		prev, prevT = c, now
		return s
	}
}

// connectAll connects users[i] for every i, starting at most rate dials a
// second (0: no pacing) with at most concurrency in flight. Conns that
// failed are nil; errs holds the first few errors and failed counts them.
func connectAll(ctx context.Context, t Target, users []string, deliver func(i int) func(Delivery), rate float64, concurrency int, connected *atomic.Int64) (conns []Conn, failed int, errs []error) {
	conns = make([]Conn, len(users))
	if concurrency <= 0 {
		concurrency = len(users)
	}
	sem := make(chan struct{}, concurrency)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i, u := range users {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			mu.Lock()
			failed += len(users) - i
			errs = append(errs, context.Cause(ctx))
			mu.Unlock()
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := t.Connect(ctx, u, deliver(i))
			if err != nil {
				mu.Lock()
				failed++
				if len(errs) < 5 {
					errs = append(errs, err)
				}
				mu.Unlock()
				return
			}
			conns[i] = c
			if connected != nil {
				connected.Add(1)
			}
		}()
	}
	wg.Wait()
	return conns, failed, errs
}

// closeAll closes every non-nil conn, many at once.
func closeAll(conns []Conn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Close()
			<-sem
		}()
	}
	wg.Wait()
}

// sumStats adds up the StatsReporter counters of conns into into.
func sumStats(into map[string]uint64, conns []Conn) map[string]uint64 {
	for _, c := range conns {
		if sr, ok := c.(StatsReporter); ok {
			into = addCounts(into, sr.Stats())
		}
	}
	return into
}

// addCounts adds from's counters to into (made when nil) and returns it.
func addCounts(into, from map[string]uint64) map[string]uint64 {
	if into == nil {
		into = make(map[string]uint64, len(from))
	}
	for k, v := range from {
		into[k] += v
	}
	return into
}

func noDeliver(Delivery) {}

// drain waits until every acknowledged send of receivers [lo, hi) has been
// delivered, or for at most timeout; it returns how many are still missing.
// The exact count walks the history, so it runs when the live counters say
// everything may be there, and otherwise every 250ms.
func drain(ctx context.Context, h *History, lo, hi int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	var lastCheck time.Time
	for {
		c := h.Counts()
		over := time.Now().After(deadline) || ctx.Err() != nil
		if since := time.Since(lastCheck); over || c.Delivered >= c.Acked && since > 20*time.Millisecond || since > 250*time.Millisecond {
			lastCheck = time.Now()
			if m := h.MissingRange(lo, hi); m == 0 || over {
				return m
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// timeline extracts the measured phase from a history.
type timeline struct {
	firstSend, lastAck, lastDelivery time.Duration // since the history start
	acked, delivered                 int           // acknowledged sends; first deliveries of them
}

func (h *History) timeline() timeline {
	tl := timeline{firstSend: math.MaxInt64}
	for i := range h.pairs {
		p := &h.pairs[i]
		p.mu.Lock()
		for _, s := range p.sends {
			tl.firstSend = min(tl.firstSend, time.Duration(s.start))
			if s.state == sendAcked {
				tl.acked++
				tl.lastAck = max(tl.lastAck, time.Duration(s.done))
			}
		}
		p.mu.Unlock()
	}
	h.eachFirstDelivery(func(r int, e *deliveryRec, acked bool) {
		if acked {
			tl.delivered++
		}
		tl.lastDelivery = max(tl.lastDelivery, time.Duration(e.at))
	})
	if tl.firstSend == math.MaxInt64 {
		tl.firstSend = 0
	}
	return tl
}

// eachFirstDelivery calls f with the first delivery of every message sent
// in this run (duplicates and foreign bodies skipped) and whether its send
// was acknowledged.
func (h *History) eachFirstDelivery(f func(r int, e *deliveryRec, acked bool)) {
	for r := range h.receivers {
		rl := &h.recv[r]
		rl.mu.Lock()
		seen := make(map[pairN]bool, len(rl.events))
		for i := range rl.events {
			e := &rl.events[i]
			k := pairN{e.sender, e.n}
			if e.sender < 0 || seen[k] {
				continue
			}
			seen[k] = true
			acked := false
			p := h.pair(int(e.sender), r)
			p.mu.Lock()
			if e.n >= 1 && e.n <= uint64(len(p.sends)) {
				acked = p.sends[e.n-1].state == sendAcked
			}
			p.mu.Unlock()
			f(r, e, acked)
		}
		rl.mu.Unlock()
	}
}

// deliveryLatencies returns, sorted, delivery time − stamp time for the
// first delivery of every message whose stamp lies in [from, to) since the
// history start.
func (h *History) deliveryLatencies(from, to time.Duration) latencies {
	var l latencies
	h.eachFirstDelivery(func(_ int, e *deliveryRec, _ bool) {
		if time.Duration(e.sent) >= from && time.Duration(e.sent) < to {
			l = append(l, e.at-e.sent)
		}
	})
	return l.sorted()
}

// ackLatencies returns, sorted, ack time − issue time of acknowledged sends
// issued in [from, to).
func (h *History) ackLatencies(from, to time.Duration) latencies {
	var l latencies
	for i := range h.pairs {
		p := &h.pairs[i]
		p.mu.Lock()
		for _, s := range p.sends {
			if s.state == sendAcked && time.Duration(s.start) >= from && time.Duration(s.start) < to {
				l = append(l, s.done-s.start)
			}
		}
		p.mu.Unlock()
	}
	return l.sorted()
}

// rateSeries returns acks and first deliveries per second in buckets of
// step from `from` to `to` (since the history start).
func (h *History) rateSeries(from, to, step time.Duration) (acked, delivered Series) {
	n := int(math.Ceil(float64(to-from) / float64(step)))
	n = max(n, 1)
	acked = Series{Name: "acked", Unit: "msg/s", Step: step.Seconds(), Points: make([]float64, n)}
	delivered = Series{Name: "delivered", Unit: "msg/s", Step: step.Seconds(), Points: make([]float64, n)}
	bucket := func(t int64) int {
		i := int((time.Duration(t) - from) / step)
		if i < 0 || i >= n {
			return -1
		}
		return i
	}
	for i := range h.pairs {
		p := &h.pairs[i]
		p.mu.Lock()
		for _, s := range p.sends {
			if s.state == sendAcked {
				if b := bucket(s.done); b >= 0 {
					acked.Points[b]++
				}
			}
		}
		p.mu.Unlock()
	}
	h.eachFirstDelivery(func(_ int, e *deliveryRec, _ bool) {
		if b := bucket(e.at); b >= 0 {
			delivered.Points[b]++
		}
	})
	for i := range acked.Points {
		acked.Points[i] /= step.Seconds()
		delivered.Points[i] /= step.Seconds()
	}
	return acked, delivered
}

// seriesStep picks a step giving 50 to 200 points over d.
func seriesStep(d time.Duration) time.Duration {
	for _, s := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 5 * time.Second, 10 * time.Second} {
		if d/s <= 200 {
			return s
		}
	}
	return time.Minute
}

func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return math.NaN()
	}
	return float64(n) / d.Seconds()
}

func errorsNote(what string, failed int, errs []error) string {
	return fmt.Sprintf("%d %s failed; first errors: %v", failed, what, errors.Join(errs...))
}
