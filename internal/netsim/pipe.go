package netsim

import (
	"container/heap"
	"math/rand/v2"
	"sync"
	"time"
)

// poolBufSize is the capacity of pooled payload buffers: any QUIC packet
// fits. Larger datagrams get a buffer of their own.
const poolBufSize = 2048

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, poolBufSize)
	return &b
}}

// packet is one datagram in flight through a pipe.
type packet struct {
	buf     *[]byte // payload is (*buf)[:n]
	n       int
	flow    *flow
	seq     uint64    // arrival order in its pipe, from 1; a duplicate shares it
	release time.Time // when the pipe hands it to deliver
	depth   int64     // causal round-trip depth, see doc.go
	epoch   uint64    // round-trip epoch it was stamped in
}

func newPacket(b []byte) *packet {
	var buf *[]byte
	if len(b) <= poolBufSize {
		buf = bufPool.Get().(*[]byte)
	} else {
		s := make([]byte, len(b))
		buf = &s
	}
	copy(*buf, b)
	return &packet{buf: buf, n: len(b)}
}

func (pkt *packet) payload() []byte { return (*pkt.buf)[:pkt.n] }

func (pkt *packet) clone() *packet {
	c := newPacket(pkt.payload())
	c.flow, c.seq, c.release, c.depth, c.epoch = pkt.flow, pkt.seq, pkt.release, pkt.depth, pkt.epoch
	return c
}

// free returns the payload buffer to the pool; pkt must not be used after.
func (pkt *packet) free() {
	if cap(*pkt.buf) == poolBufSize {
		bufPool.Put(pkt.buf)
	}
	pkt.buf = nil
}

// packetHeap is a min-heap by release time, then arrival order.
type packetHeap []*packet

func (h packetHeap) Len() int { return len(h) }
func (h packetHeap) Less(i, j int) bool {
	if h[i].release.Equal(h[j].release) {
		return h[i].seq < h[j].seq
	}
	return h[i].release.Before(h[j].release)
}
func (h packetHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *packetHeap) Push(x any)   { *h = append(*h, x.(*packet)) }
func (h *packetHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// pipe impairs one direction. arrive decides each packet's fate and release
// time on the caller's goroutine; run, the pipe's one delivery goroutine,
// hands packets to deliver in release order, driven by a single timer.
type pipe struct {
	// Set at construction, read-only after.
	deliver    func(*packet) dropReason // called by run only, outside mu
	blackholed func(now time.Time) bool
	wake       chan struct{} // capacity 1: the heap's head changed

	mu        sync.Mutex // guards the fields below
	link      Link       // populated
	rng       *rand.Rand
	bad       bool      // Gilbert–Elliott state
	busyUntil time.Time // when the bandwidth FIFO has serialised every accepted packet
	lastSeq   uint64
	maxSent   uint64 // highest seq delivered so far, for DirStats.Reordered
	queue     packetHeap
	stats     DirStats
}

func newPipe(l Link, rng *rand.Rand, deliver func(*packet) dropReason, blackholed func(time.Time) bool) *pipe {
	return &pipe{
		deliver:    deliver,
		blackholed: blackholed,
		wake:       make(chan struct{}, 1),
		link:       l.populate(),
		rng:        rng,
	}
}

func (p *pipe) setLink(l Link) {
	p.mu.Lock()
	p.link = l.populate()
	p.mu.Unlock()
}

func (p *pipe) getLink() Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.link
}

func (p *pipe) snapshot() DirStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// chance reports true with probability pr, consuming randomness only when
// the outcome is uncertain.
func (p *pipe) chance(pr float64) bool {
	switch {
	case pr <= 0:
		return false
	case pr >= 1:
		return true
	}
	return p.rng.Float64() < pr
}

// arrive takes ownership of pkt: it is scheduled or dropped (and freed).
func (p *pipe) arrive(pkt *packet) {
	now := time.Now()
	p.mu.Lock()
	p.lastSeq++
	pkt.seq = p.lastSeq
	p.stats.Packets++
	p.stats.Bytes += int64(pkt.n)
	if r := p.decide(pkt, now); r != dropNone {
		p.stats.Dropped.add(r)
		p.mu.Unlock()
		pkt.free()
		return
	}
	p.push(pkt)
	wake := p.queue[0] == pkt
	if p.chance(p.link.Duplicate) {
		p.stats.Duplicated++
		p.push(pkt.clone())
	}
	p.mu.Unlock()
	if wake {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// decide sets pkt.release or says why pkt is dropped. p.mu is held.
func (p *pipe) decide(pkt *packet, now time.Time) dropReason {
	l := &p.link
	if p.blackholed(now) {
		return dropBlackhole
	}
	lossP, reason := l.Loss, dropLoss
	if l.BurstStart > 0 {
		if p.bad {
			p.bad = !p.chance(l.BurstEnd)
		} else {
			p.bad = p.chance(l.BurstStart)
		}
		if p.bad {
			lossP, reason = l.BurstLoss, dropBurst
		}
	}
	if p.chance(lossP) {
		return reason
	}

	sent := now // when the last bit leaves the bandwidth FIFO
	if l.Bandwidth > 0 {
		if p.busyUntil.Before(now) {
			p.busyUntil = now
		}
		backlog := int64(p.busyUntil.Sub(now)) * l.Bandwidth / int64(time.Second)
		if backlog+int64(pkt.n) > int64(l.QueueBytes) {
			return dropQueue
		}
		p.busyUntil = p.busyUntil.Add(serialisation(pkt.n, l.Bandwidth))
		sent = p.busyUntil
	}

	d := l.Delay
	if l.Jitter > 0 {
		d += time.Duration(p.rng.Int64N(2*int64(l.Jitter)+1)) - l.Jitter
		d = max(d, 0)
	}
	if p.chance(l.Reorder) {
		d += l.ReorderDelay
		p.stats.HeldBack++
	}
	pkt.release = sent.Add(d)
	return dropNone
}

// serialisation is how long n bytes take at bw bytes/s, rounded up.
func serialisation(n int, bw int64) time.Duration {
	return time.Duration((int64(n)*int64(time.Second) + bw - 1) / bw)
}

func (p *pipe) push(pkt *packet) {
	heap.Push(&p.queue, pkt)
	p.stats.Queued++
}

// account records the fate of a packet popped from the heap and frees it.
func (p *pipe) account(pkt *packet, r dropReason) {
	p.mu.Lock()
	p.stats.Queued--
	if r == dropNone {
		p.stats.Delivered++
		p.stats.DeliveredBytes += int64(pkt.n)
		if pkt.seq < p.maxSent {
			p.stats.Reordered++
		}
		p.maxSent = max(p.maxSent, pkt.seq)
	} else {
		p.stats.Dropped.add(r)
	}
	p.mu.Unlock()
	pkt.free()
}

// dropArrived counts a packet of n bytes that arrived and was dropped
// before reaching the pipe's decisions.
func (p *pipe) dropArrived(n int, r dropReason) {
	p.mu.Lock()
	p.lastSeq++
	p.stats.Packets++
	p.stats.Bytes += int64(n)
	p.stats.Dropped.add(r)
	p.mu.Unlock()
}

// run delivers packets at their release times until done is closed.
func (p *pipe) run(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var due []*packet
	for {
		now := time.Now()
		var next time.Time
		p.mu.Lock()
		for len(p.queue) > 0 && !p.queue[0].release.After(now) {
			due = append(due, heap.Pop(&p.queue).(*packet))
		}
		if len(p.queue) > 0 {
			next = p.queue[0].release
		}
		p.mu.Unlock()

		if len(due) > 0 {
			for i, pkt := range due {
				r := dropBlackhole
				if !p.blackholed(now) {
					r = p.deliver(pkt)
				}
				p.account(pkt, r)
				due[i] = nil
			}
			due = due[:0]
			select {
			case <-done:
				return
			default:
			}
			continue // time has moved on: look again before sleeping
		}

		if !next.IsZero() {
			timer.Reset(next.Sub(now))
		}
		select {
		case <-done:
			return
		case <-p.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// drain frees every queued packet; called after run has returned.
func (p *pipe) drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pkt := range p.queue {
		pkt.free()
	}
	p.queue = nil
}
