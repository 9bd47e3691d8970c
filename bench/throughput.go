package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// ThroughputConfig configures the throughput scenario. Zero values mean
// the defaults stated beside the fields.
type ThroughputConfig struct {
	// Senders and Receivers are the users on each side; default 16 each.
	Senders   int `json:"senders"`
	Receivers int `json:"receivers"`
	// Window is how many sends each sender keeps in flight, default 8, at
	// most Receivers: each in-flight send goes to a different receiver, so
	// that a pair's sends are issued one after the other (Ordered).
	Window int `json:"window"`
	// Duration is how long senders send; default 10s. Messages, when set,
	// stops them after that many sends instead.
	Duration Duration `json:"duration"`
	Messages int      `json:"messages,omitempty"`
	// Size is the body size in bytes; default 100.
	Size int `json:"size"`
	// SendTimeout bounds one send (the SDK retries within it); default 30s.
	SendTimeout Duration `json:"send_timeout"`
	// Drain bounds the wait for deliveries after the last send; default 30s.
	Drain Duration `json:"drain"`
	// ServerInProcess says that the server runs in this process, so that
	// the CPU figures include it (a note in the result).
	ServerInProcess bool `json:"server_in_process"`
	// Progress receives a status line a second; nil: none.
	Progress io.Writer `json:"-"`
}

func (c *ThroughputConfig) defaults() {
	def(&c.Senders, 16)
	def(&c.Receivers, 16)
	def(&c.Window, 8)
	c.Window = min(c.Window, c.Receivers)
	if c.Duration <= 0 && c.Messages <= 0 {
		c.Duration = Duration(10 * time.Second)
	}
	def(&c.Size, 100)
	c.Size = max(c.Size, MinBodySize)
	defDur(&c.SendTimeout, 30*time.Second)
	defDur(&c.Drain, 30*time.Second)
}

func def(v *int, d int) {
	if *v <= 0 {
		*v = d
	}
}

func defDur(v *Duration, d time.Duration) {
	if *v <= 0 {
		*v = Duration(d)
	}
}

// Throughput runs N senders against M receivers, every send acknowledged
// durably before its window slot is reused, and measures messages per
// second end to end and CPU per message.
//
// Figures: sent_per_s (acknowledged sends per second, first send to last
// ack), delivered_per_s (acknowledged messages delivered to their receiving
// client per second of wall time, first send to last delivery),
// cpu_per_msg_us (this process's CPU time over the run divided by the
// messages delivered), cpu_cores (that CPU time over the wall time), and the
// send → acked and send → delivered latencies.
func Throughput(ctx context.Context, t Target, cfg ThroughputConfig) (*Result, error) {
	cfg.defaults()
	res := &Result{Scenario: "throughput", Target: t.Name(), Config: cfg, Started: time.Now()}
	run, prefix := newRun()
	senders, receivers := userNames(prefix, "s", cfg.Senders), userNames(prefix, "r", cfg.Receivers)
	h := NewHistory(run, senders, receivers)
	prog := startProgress(cfg.Progress, "throughput")
	defer prog.stop()

	var connected atomic.Int64
	prog.set(func() string { return fmt.Sprintf("connecting: %d/%d", connected.Load(), len(senders)+len(receivers)) })
	rconns, failed, errs := connectAll(ctx, t, receivers, h.Session, 0, 64, &connected)
	defer closeAll(rconns)
	if failed > 0 {
		return nil, fmt.Errorf("throughput: %s", errorsNote("receiver connects", failed, errs))
	}
	sconns, failed, errs := connectAll(ctx, t, senders, func(int) func(Delivery) { return noDeliver }, 0, 64, &connected)
	defer closeAll(sconns)
	if failed > 0 {
		return nil, fmt.Errorf("throughput: %s", errorsNote("sender connects", failed, errs))
	}

	prog.set(rateStatus(h))
	cpu0, disk0, wall0 := processCPU(), diskWritten(), time.Now()
	sendCtx, stop := context.WithCancel(ctx)
	if cfg.Duration > 0 {
		sendCtx, stop = context.WithTimeout(ctx, time.Duration(cfg.Duration))
	}
	defer stop()
	var budget atomic.Int64
	budget.Store(int64(cfg.Messages))
	var wg sync.WaitGroup
	for s := range senders {
		for w := range cfg.Window {
			// Worker w of sender s owns the receivers r ≡ w (mod Window).
			var own []int
			for r := w; r < len(receivers); r += cfg.Window {
				own = append(own, r)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 0, cfg.Size)
				for i := 0; sendCtx.Err() == nil; i++ {
					if cfg.Messages > 0 && budget.Add(-1) < 0 {
						return
					}
					r := own[i%len(own)]
					n := h.Issue(s, r)
					buf = AppendBody(buf[:0], Stamp{Run: run, Sender: s, Receiver: r, N: n, At: time.Now()}, cfg.Size)
					// A send is never cut short by the end of the run: it
					// completes (acked or failed) within SendTimeout.
					sctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.SendTimeout))
					err := sconns[s].Send(sctx, receivers[r], buf)
					cancel()
					h.Done(s, r, n, err)
				}
			}()
		}
	}
	wg.Wait()
	prog.set(func() string {
		c := h.Counts()
		return fmt.Sprintf("draining: %d acked, %d delivered", c.Acked, c.Delivered)
	})
	missing := drain(ctx, h, 0, len(receivers), time.Duration(cfg.Drain))
	cpu, disk := processCPU()-cpu0, diskWritten()-disk0
	wall := time.Since(wall0)
	prog.stop()

	res.Validation = h.Validate()
	tl := h.timeline()
	sendPhase := tl.lastAck - tl.firstSend
	e2ePhase := tl.lastDelivery - tl.firstSend
	res.add("sent_per_s", "sent (acknowledged durably)", perSecond(tl.acked, sendPhase), "msg/s")
	res.add("delivered_per_s", "delivered end to end", perSecond(tl.delivered, e2ePhase), "msg/s")
	res.add("cpu_per_msg_us", "CPU per message", float64(cpu.Microseconds())/float64(max(tl.delivered, 1)), "µs")
	res.add("cpu_cores", "CPU used", cpu.Seconds()/wall.Seconds(), "cores")
	res.add("messages", "messages acknowledged", float64(tl.acked), "msg")
	res.add("send_failures", "sends failed", float64(res.Validation.Unacked), "msg")
	from, to := tl.firstSend, tl.lastAck+1
	res.addLatency("ack", "send → acked", h.ackLatencies(from, to))
	dl := h.deliveryLatencies(from, to)
	res.addLatency("e2e", "send → delivered", dl)
	res.Latency = dl.cdf("send → delivered")
	step := seriesStep(e2ePhase)
	a, d := h.rateSeries(tl.firstSend, tl.lastDelivery+1, step)
	res.Series = []Series{a, d}
	res.Counters = sumStats(sumStats(nil, sconns), rconns)
	if cfg.ServerInProcess {
		// The clients write nothing to disk: this is the server's storage.
		res.add("disk_per_msg_kib", "disk written per message", float64(disk)/1024/float64(max(tl.delivered, 1)), "KiB")
		res.note("client and server share this process: CPU per message counts both")
	} else {
		res.note("CPU per message counts the clients (this process) only")
	}
	res.note(fmt.Sprintf("%d senders × %d receivers, %d sends in flight per sender, %d-byte bodies", cfg.Senders, cfg.Receivers, cfg.Window, cfg.Size))
	if missing > 0 {
		res.note(fmt.Sprintf("%d acknowledged messages still undelivered after the %s drain", missing, cfg.Drain))
	}
	res.Elapsed = Duration(time.Since(res.Started))
	return res, nil
}
