package e2e

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/storage"
)

// BenchmarkSendDeliver measures what one message costs end to end, clients
// and server in this process: a send acknowledged by the server, stored in
// the sender's and the recipient's mailboxes, and handed to the recipient's
// app. Four senders keep two sends each in flight to four receivers; b.N is
// the number of messages, and an iteration ends when every one of them was
// delivered. The store is Badger without fsync (Store.UnsafeNoSync), so that
// the figure is the CPU's, not the disk's.
//
//	go test ./internal/e2e -run '^$' -bench SendDeliver -benchtime 20000x -count 5
//
// Reported: cpu-µs/msg (this process's user + system CPU per message, the
// figure that bounds throughput on a saturated machine), datagrams/msg (sent
// and received by the clients), the same split by side with the Notifies
// each side got, and Go's allocs/op and B/op (every goroutine's allocations
// per message, the server's included).
func BenchmarkSendDeliver(b *testing.B) {
	const pairs, window, warmup = 4, 2, 1000
	s := testserver.Start(b, testserver.Options{Store: storage.Options{UnsafeNoSync: true}})
	var mu sync.Mutex
	got, want := 0, 0
	all := make(chan struct{}, 1)
	senders := make([]*client.Client, pairs)
	clients := make([]*client.Client, 0, 2*pairs)
	for i := range pairs {
		// Senders take their own copies as an app would (a full Messages
		// channel would stall their pull loops).
		senders[i] = sdk(b, s, fmt.Sprint("s", i), "d", 0, func(c *client.Config) { c.OnMessage = func(client.Message) {} })
		clients = append(clients, senders[i], sdk(b, s, fmt.Sprint("r", i), "d", 0, func(c *client.Config) {
			c.OnMessage = func(m client.Message) {
				if m.Mine {
					return
				}
				mu.Lock()
				got++
				if got == want {
					select {
					case all <- struct{}{}:
					default:
					}
				}
				mu.Unlock()
			}
		}))
	}
	ctx := ctxT(b, 10*time.Minute)
	body := make([]byte, 100)
	send := func(n int) {
		mu.Lock()
		want += n
		mu.Unlock()
		var wg sync.WaitGroup
		for w := range pairs * window {
			wg.Go(func() {
				for i := w; i < n; i += pairs * window {
					if _, err := senders[w%pairs].Send(ctx, fmt.Sprint("r", w%pairs), body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		select {
		case <-all:
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			b.Fatalf("delivered %d of %d", got, want)
		}
	}
	send(warmup) // warm up: connections, Badger's memtable, pools
	dg := func() (n uint64) {
		for _, c := range clients {
			st := c.Stats()
			n += st.DatagramsIn + st.DatagramsOut
		}
		return n
	}
	dg0, cpu0 := dg(), processCPU()
	b.ReportAllocs()
	b.ResetTimer()
	send(b.N)
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(float64(dg()-dg0)/float64(b.N), "datagrams/msg")
	// Per side, over the whole run (warm-up included): where the datagrams
	// and Notifies are.
	var side [2]struct{ in, out, notifies uint64 }
	for i, c := range clients {
		st := c.Stats()
		side[i%2].in += st.DatagramsIn
		side[i%2].out += st.DatagramsOut
		side[i%2].notifies += st.Notifies
	}
	n := float64(b.N + warmup)
	for i, name := range []string{"sender", "receiver"} {
		b.ReportMetric(float64(side[i].in)/n, name+"-dgrams-in/msg")
		b.ReportMetric(float64(side[i].out)/n, name+"-dgrams-out/msg")
		b.ReportMetric(float64(side[i].notifies)/n, name+"-notifies/msg")
	}
}

// processCPU is this process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
