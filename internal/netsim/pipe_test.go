package netsim

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestMain fails the package when a goroutine of the proxy outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := proxyGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "netsim goroutines outlived the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// proxyGoroutines waits up to wait for the package's goroutines to end and
// returns the stacks of those still running.
func proxyGoroutines(wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "internal/netsim.(*Proxy)") || strings.Contains(g, "internal/netsim.(*pipe)") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pipeHarness drives one pipe in a synctest bubble, recording deliveries.
type pipeHarness struct {
	t     *testing.T
	p     *pipe
	start time.Time
	hole  atomic.Bool
	done  chan struct{}

	mu  sync.Mutex
	got []delivery
}

type delivery struct {
	seq     uint64
	at      time.Duration // since start
	payload string
}

// newPipeHarness must be called inside synctest.Test.
func newPipeHarness(t *testing.T, l Link, seed uint64) *pipeHarness {
	h := &pipeHarness{t: t, start: time.Now(), done: make(chan struct{})}
	h.p = newPipe(l, rand.New(rand.NewPCG(seed, 1)), h.deliver, func(time.Time) bool { return h.hole.Load() })
	ran := make(chan struct{})
	go func() { defer close(ran); h.p.run(h.done) }()
	t.Cleanup(func() {
		close(h.done)
		<-ran
		h.p.drain()
	})
	return h
}

// String keeps failure messages short.
func (d delivery) String() string {
	if len(d.payload) > 20 {
		return fmt.Sprintf("{%d %v %d bytes}", d.seq, d.at, len(d.payload))
	}
	return fmt.Sprintf("{%d %v %q}", d.seq, d.at, d.payload)
}

func (h *pipeHarness) deliver(pkt *packet) dropReason {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, delivery{pkt.seq, time.Since(h.start), string(pkt.payload())})
	return dropNone
}

func (h *pipeHarness) send(payload string) { h.p.arrive(newPacket([]byte(payload))) }

// advance moves the bubble's clock by d and lets the pipe deliver what is due.
func (h *pipeHarness) advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func (h *pipeHarness) deliveries() []delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery(nil), h.got...)
}

// checkBalance checks the conservation law documented on DirStats.
func checkBalance(t *testing.T, s DirStats) {
	t.Helper()
	if s.Packets+s.Duplicated != s.Delivered+s.Dropped.Total()+s.Queued {
		t.Errorf("stats do not balance: %+v", s)
	}
}

func TestPipeDelayIsExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, Link{Delay: 50 * time.Millisecond}, 1)
		h.send("a")
		h.advance(10 * time.Millisecond)
		h.send("b")
		h.advance(39 * time.Millisecond)
		if got := h.deliveries(); len(got) != 0 {
			t.Fatalf("delivered before the delay: %+v", got)
		}
		h.advance(100 * time.Millisecond)
		got := h.deliveries()
		want := []delivery{{1, 50 * time.Millisecond, "a"}, {2, 60 * time.Millisecond, "b"}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("deliveries %+v, want %+v", got, want)
		}
		checkBalance(t, h.p.snapshot())
	})
}

func TestPipeJitterBoundsAndReorders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay, jitter = 20 * time.Millisecond, 15 * time.Millisecond
		h := newPipeHarness(t, Link{Delay: delay, Jitter: jitter}, 1)
		for i := range 200 {
			h.send(fmt.Sprint(i))
		}
		h.advance(delay + jitter)
		got := h.deliveries()
		if len(got) != 200 {
			t.Fatalf("%d delivered, want 200", len(got))
		}
		for i, d := range got {
			if d.at < delay-jitter || d.at > delay+jitter {
				t.Errorf("packet %d delivered at %v, outside %v±%v", d.seq, d.at, delay, jitter)
			}
			if i > 0 && d.at < got[i-1].at {
				t.Errorf("delivery %d at %v before the previous one at %v", i, d.at, got[i-1].at)
			}
		}
		s := h.p.snapshot()
		if s.Reordered == 0 {
			t.Errorf("jitter of ±%v over a burst reordered nothing", jitter)
		}
		checkBalance(t, s)
	})
}

func TestPipeBandwidthSerialisesThenDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 1000 bytes at 100 kB/s take 10 ms each; the FIFO holds 3000 bytes.
		h := newPipeHarness(t, Link{Bandwidth: 100_000, QueueBytes: 3000, Delay: 5 * time.Millisecond}, 1)
		payload := strings.Repeat("x", 1000)
		for range 10 {
			h.send(payload)
		}
		h.advance(time.Second)
		got := h.deliveries()
		if len(got) != 3 {
			t.Fatalf("%d delivered, want 3 (the rest tail-dropped)", len(got))
		}
		for i, d := range got {
			if want := time.Duration(i+1)*10*time.Millisecond + 5*time.Millisecond; d.at != want {
				t.Errorf("packet %d delivered at %v, want %v", d.seq, d.at, want)
			}
		}
		s := h.p.snapshot()
		if s.Dropped.Queue != 7 {
			t.Errorf("Dropped.Queue = %d, want 7", s.Dropped.Queue)
		}
		// Once the FIFO has drained, a packet goes straight through.
		h.send(payload)
		h.advance(time.Second)
		// Sent at 1 s: 10 ms to serialise, 5 ms of delay.
		if got := h.deliveries(); len(got) != 4 || got[3].at != 1015*time.Millisecond {
			t.Errorf("after draining: %v", got)
		}
		checkBalance(t, h.p.snapshot())
	})
}

func TestPipeBlackholeDropsPacketsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, Link{Delay: 50 * time.Millisecond}, 1)
		h.send("in flight")
		h.advance(20 * time.Millisecond)
		h.hole.Store(true)
		h.send("arrives in the blackhole")
		h.advance(time.Second)
		h.hole.Store(false)
		h.send("after")
		h.advance(time.Second)
		got := h.deliveries()
		if len(got) != 1 || got[0].payload != "after" {
			t.Fatalf("deliveries %+v, want only %q", got, "after")
		}
		s := h.p.snapshot()
		if s.Dropped.Blackhole != 2 {
			t.Errorf("Dropped.Blackhole = %d, want 2", s.Dropped.Blackhole)
		}
		checkBalance(t, s)
	})
}

func TestPipeSetLinkAffectsLaterPackets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, Link{Delay: 50 * time.Millisecond}, 1)
		h.send("slow")
		h.p.setLink(Link{Delay: 10 * time.Millisecond})
		h.send("fast")
		h.advance(time.Second)
		got := h.deliveries()
		want := []delivery{{2, 10 * time.Millisecond, "fast"}, {1, 50 * time.Millisecond, "slow"}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("deliveries %+v, want %+v", got, want)
		}
		if s := h.p.snapshot(); s.Reordered != 1 {
			t.Errorf("Reordered = %d, want 1", s.Reordered)
		}
	})
}

func TestPipeDuplicateCopiesPayload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, Link{Duplicate: 1}, 1)
		big := strings.Repeat("y", poolBufSize+1) // not from the pool
		h.send("small")
		h.send(big)
		h.advance(time.Millisecond)
		got := h.deliveries()
		if len(got) != 4 || got[0].payload != "small" || got[1].payload != "small" || got[2].payload != big || got[3].payload != big {
			t.Fatalf("deliveries %v, want each payload twice", got)
		}
		s := h.p.snapshot()
		if s.Duplicated != 2 || s.Delivered != 4 {
			t.Errorf("Duplicated = %d, Delivered = %d, want 2 and 4", s.Duplicated, s.Delivered)
		}
		checkBalance(t, s)
	})
}

// A fixed seed and arrival order repeat the same drops.
func TestPipeSeedRepeats(t *testing.T) {
	run := func(seed uint64) string {
		var got string
		synctest.Test(t, func(t *testing.T) {
			h := newPipeHarness(t, Link{Loss: 0.2, BurstStart: 0.05, BurstEnd: 0.3, BurstLoss: 0.9, Jitter: time.Millisecond}, seed)
			for i := range 500 {
				h.send(fmt.Sprint(i))
			}
			h.advance(time.Second)
			for _, d := range h.deliveries() {
				got += fmt.Sprintf("%d@%v ", d.seq, d.at)
			}
		})
		return got
	}
	a, b, c := run(42), run(42), run(43)
	if a != b {
		t.Error("the same seed gave different outcomes")
	}
	if a == c {
		t.Error("different seeds gave the same outcome")
	}
}

func TestLinkValidate(t *testing.T) {
	bad := map[string]Link{
		"loss above 1":       {Loss: 1.5},
		"negative loss":      {Loss: -0.1},
		"NaN burst":          {BurstLoss: nanFloat()},
		"negative delay":     {Delay: -time.Millisecond},
		"negative jitter":    {Jitter: -time.Millisecond},
		"negative bandwidth": {Bandwidth: -1},
		"negative queue":     {QueueBytes: -1},
		"duplicate above 1":  {Duplicate: 2},
	}
	for name, l := range bad {
		t.Run(name, func(t *testing.T) {
			if err := l.validate(); err == nil {
				t.Errorf("%+v validated", l)
			}
		})
	}
	if err := (Link{Loss: 1, Reorder: 0.5, Delay: time.Second}).validate(); err != nil {
		t.Errorf("valid link refused: %v", err)
	}
	l := Link{Delay: 30 * time.Millisecond}.populate()
	if l.ReorderDelay != 60*time.Millisecond || l.QueueBytes != DefaultQueueBytes {
		t.Errorf("defaults: %+v", l)
	}
	if l := (Link{}).populate(); l.ReorderDelay != 10*time.Millisecond {
		t.Errorf("ReorderDelay without Delay = %v, want 10ms", l.ReorderDelay)
	}
}

func nanFloat() float64 {
	var zero float64
	return zero / zero
}
