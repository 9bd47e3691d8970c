// Package targettest is the contract every peer Target passes, run by each
// peer's tests with small message counts: senders to receivers with every
// message delivered once and in order per pair; a receiver that goes away
// gets what was sent meanwhile when it comes back; a receiver closing in the
// middle of a stream of messages loses and repeats nothing.
//
// It checks deliveries itself (bodies "s<i>>r<j>#<n>"), so that it depends
// only on the Target interface; the full validator runs in package bench's
// scenarios.
package targettest

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/bench"
)

// Options tune the contract for a target's documented limits.
type Options struct {
	// ReordersOnResume: messages queued while a receiver was away may come
	// back in another order (mochi). The test still requires each exactly
	// once, and logs the reordering.
	ReordersOnResume bool
	// Messages per sender→receiver pair in the delivery test; default 50.
	Messages int
}

// Run runs the contract against targets made by newTarget, one per subtest.
func Run(t *testing.T, newTarget func(t *testing.T) bench.Target, o Options) {
	if o.Messages <= 0 {
		o.Messages = 50
	}
	t.Run("Deliver", func(t *testing.T) { testDeliver(t, newTarget(t), o) })
	t.Run("Resume", func(t *testing.T) { testResume(t, newTarget(t), o) })
	t.Run("CloseWhileReceiving", func(t *testing.T) { testCloseWhileReceiving(t, newTarget(t), o) })
}

func body(s, r string, n int) []byte { return fmt.Appendf(nil, "%s>%s#%d", s, r, n) }

func parse(b []byte) (from, to string, n int, err error) {
	pair, num, ok := strings.Cut(string(b), "#")
	if !ok {
		return "", "", 0, fmt.Errorf("body %q", b)
	}
	from, to, ok = strings.Cut(pair, ">")
	if !ok {
		return "", "", 0, fmt.Errorf("body %q", b)
	}
	n, err = strconv.Atoi(num)
	return from, to, n, err
}

// inbox records one receiver's deliveries across its connections.
type inbox struct {
	user string

	mu      sync.Mutex
	got     []string // bodies in delivery order
	changed chan struct{}
}

func newInbox(user string) *inbox { return &inbox{user: user, changed: make(chan struct{}, 1)} }

func (in *inbox) deliver(d bench.Delivery) {
	in.mu.Lock()
	in.got = append(in.got, string(d.Body))
	in.mu.Unlock()
	select {
	case in.changed <- struct{}{}:
	default:
	}
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.got)
}

func (in *inbox) snapshot() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.got...)
}

// waitFor waits until the inbox holds at least n deliveries.
func (in *inbox) waitFor(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for in.len() < n {
		select {
		case <-in.changed:
		case <-deadline.C:
			t.Fatalf("%s: %d deliveries after %v, want %d", in.user, in.len(), timeout, n)
		}
	}
}

// check verifies that got holds, for every sender in want, exactly messages
// 1..want[sender], in order unless anyOrder.
func check(t *testing.T, user string, got []string, want map[string]int, anyOrder bool) (reordered int) {
	t.Helper()
	last := make(map[string]int)
	seen := make(map[string]bool)
	for _, b := range got {
		from, to, n, err := parse([]byte(b))
		if err != nil || to != user {
			t.Errorf("%s: foreign delivery %q (%v)", user, b, err)
			continue
		}
		if seen[b] {
			t.Errorf("%s: %q delivered twice", user, b)
			continue
		}
		seen[b] = true
		if n < last[from] {
			reordered++
			if !anyOrder {
				t.Errorf("%s: %q after message %d", user, b, last[from])
			}
		}
		last[from] = max(last[from], n)
	}
	for from, k := range want {
		for n := 1; n <= k; n++ {
			if !seen[string(body(from, user, n))] {
				t.Errorf("%s: message %d from %s never delivered", user, n, from)
			}
		}
	}
	if len(seen) != len(got) || t.Failed() {
		return reordered
	}
	total := 0
	for _, k := range want {
		total += k
	}
	if len(got) != total {
		t.Errorf("%s: %d deliveries, want %d", user, len(got), total)
	}
	return reordered
}

func connect(t *testing.T, tg bench.Target, user string, deliver func(bench.Delivery)) bench.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tg.Connect(ctx, user, deliver)
	if err != nil {
		t.Fatalf("connect %s: %v", user, err)
	}
	return c
}

// sendAll sends messages from..to from one sender to one receiver, one
// after the other.
func sendAll(ctx context.Context, c bench.Conn, from, to string, first, last int) error {
	for n := first; n <= last; n++ {
		if err := c.Send(ctx, to, body(from, to, n)); err != nil {
			return fmt.Errorf("send %s>%s#%d: %w", from, to, n, err)
		}
	}
	return nil
}

func testDeliver(t *testing.T, tg bench.Target, o Options) {
	const nSenders, nReceivers = 3, 3
	inboxes := make([]*inbox, nReceivers)
	for r := range inboxes {
		inboxes[r] = newInbox(fmt.Sprintf("r%d", r))
		c := connect(t, tg, inboxes[r].user, inboxes[r].deliver)
		defer c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, nSenders*nReceivers)
	for s := range nSenders {
		from := fmt.Sprintf("s%d", s)
		c := connect(t, tg, from, nil)
		defer c.Close()
		for _, in := range inboxes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- sendAll(ctx, c, from, in.user, 1, o.Messages)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := make(map[string]int)
	for s := range nSenders {
		want[fmt.Sprintf("s%d", s)] = o.Messages
	}
	for _, in := range inboxes {
		in.waitFor(t, nSenders*o.Messages, 20*time.Second)
		check(t, in.user, in.snapshot(), want, false)
	}
}

func testResume(t *testing.T, tg bench.Target, o Options) {
	const before, away, after = 20, 50, 20
	in := newInbox("r")
	rc := connect(t, tg, "r", in.deliver)
	sc := connect(t, tg, "s", nil)
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := sendAll(ctx, sc, "s", "r", 1, before); err != nil {
		t.Fatal(err)
	}
	in.waitFor(t, before, 10*time.Second)
	if err := rc.Close(); err != nil {
		t.Fatalf("close receiver: %v", err)
	}
	if err := sendAll(ctx, sc, "s", "r", before+1, before+away); err != nil {
		t.Fatal(err)
	}
	if n := in.len(); n != before {
		t.Fatalf("%d deliveries while disconnected, want %d", n, before)
	}
	rc = connect(t, tg, "r", in.deliver)
	defer rc.Close()
	if err := sendAll(ctx, sc, "s", "r", before+away+1, before+away+after); err != nil {
		t.Fatal(err)
	}
	in.waitFor(t, before+away+after, 20*time.Second)
	if r := check(t, "r", in.snapshot(), map[string]int{"s": before + away + after}, o.ReordersOnResume); r > 0 {
		t.Logf("%d message(s) delivered out of order after the reconnection (a documented limit of this target)", r)
	}
}

// testCloseWhileReceiving closes a receiver while messages stream in, then
// reconnects: each message arrives once over the two connections.
func testCloseWhileReceiving(t *testing.T, tg bench.Target, o Options) {
	const total = 200
	in := newInbox("r")
	rc := connect(t, tg, "r", in.deliver)
	sc := connect(t, tg, "s", nil)
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent := make(chan error, 1)
	go func() { sent <- sendAll(ctx, sc, "s", "r", 1, total) }()
	in.waitFor(t, 10, 10*time.Second)
	if err := rc.Close(); err != nil {
		t.Fatalf("close receiver: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	rc = connect(t, tg, "r", in.deliver)
	defer rc.Close()
	in.waitFor(t, total, 20*time.Second)
	if r := check(t, "r", in.snapshot(), map[string]int{"s": total}, o.ReordersOnResume); r > 0 {
		t.Logf("%d message(s) delivered out of order after the reconnection (a documented limit of this target)", r)
	}
}

// NoLeaks fails t if goroutines started during the test are still running
// a few seconds after its cleanups (register it first, so that it runs
// last). Goroutines whose stack contains one of known (a function name) are
// leaks of third-party code that the caller documents.
func NoLeaks(t *testing.T, known ...string) {
	before := goroutineIDs()
	t.Cleanup(func() {
		var left []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			left = left[:0]
			for id, stack := range goroutines() {
				if before[id] || matchesAny(stack, known) {
					continue
				}
				left = append(left, stack)
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // polling the runtime: nothing to wait on
		}
		for _, s := range left {
			t.Errorf("goroutine left running:\n%s", s)
		}
	})
}

func matchesAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func goroutineIDs() map[string]bool {
	ids := make(map[string]bool)
	for id := range goroutines() {
		ids[id] = true
	}
	return ids
}

// goroutines returns every goroutine's stack by its id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		// "goroutine 123 [state]:\n..."
		f := strings.Fields(g)
		if len(f) >= 2 && f[0] == "goroutine" {
			out[f[1]] = g
		}
	}
	return out
}
