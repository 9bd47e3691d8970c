package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// LatencyConfig configures the latency scenario. Zero values mean the
// defaults stated beside the fields.
type LatencyConfig struct {
	// Rate is the offered load in messages per second; default 5000.
	Rate float64 `json:"rate"`
	// Senders and Receivers are the users on each side; default 16 each.
	Senders   int `json:"senders"`
	Receivers int `json:"receivers"`
	// Duration is how long the load is offered; default 10s.
	Duration Duration `json:"duration"`
	// Warmup is the first part of Duration whose messages are validated but
	// left out of the latency figures; default 1s (negative: none).
	Warmup Duration `json:"warmup"`
	// Size is the body size in bytes; default 100.
	Size int `json:"size"`
	// SendTimeout bounds one send; default 30s.
	SendTimeout Duration `json:"send_timeout"`
	// Drain bounds the wait for deliveries after the last send; default 30s.
	Drain Duration `json:"drain"`
	// Progress receives a status line a second; nil: none.
	Progress io.Writer `json:"-"`
}

func (c *LatencyConfig) defaults(rate float64, d time.Duration) {
	if c.Rate <= 0 {
		c.Rate = rate
	}
	def(&c.Senders, 16)
	def(&c.Receivers, 16)
	defDur(&c.Duration, d)
	if c.Warmup == 0 {
		c.Warmup = Duration(time.Second)
	}
	if c.Warmup < 0 || c.Warmup >= c.Duration {
		c.Warmup = 0
	}
	def(&c.Size, 100)
	c.Size = max(c.Size, MinBodySize)
	defDur(&c.SendTimeout, 30*time.Second)
	defDur(&c.Drain, 30*time.Second)
}

// Latency offers a fixed rate of sends, open loop: send k is scheduled at
// start + k/Rate whatever happened to the earlier ones, and its latency is
// delivery time − scheduled time, so a stalled server shows up in the
// figures instead of slowing the load down (no coordinated omission). Sends
// go round-robin over the sender→receiver pairs; a pair's next send waits
// for the previous one's ack (Ordered), and its wait counts in its latency.
//
// Figures: offered and achieved rates, send → delivered p50/p90/p99/p99.9
// and max, send → acked percentiles, late_sends (sends started more than
// 1 ms after their schedule).
func Latency(ctx context.Context, t Target, cfg LatencyConfig) (*Result, error) {
	cfg.defaults(5000, 10*time.Second)
	res := &Result{Scenario: "latency", Target: t.Name(), Config: cfg, Started: time.Now()}
	ol, err := newOpenLoop(ctx, "latency", t, t, cfg)
	if err != nil {
		return nil, err
	}
	defer ol.close()
	ol.offer(ctx, nil)
	ol.report(res)
	res.Elapsed = Duration(time.Since(res.Started))
	return res, nil
}

// openLoop is the fixed-rate workload of the latency and mobile scenarios.
type openLoop struct {
	cfg                LatencyConfig
	h                  *History
	senders, receivers []string
	sconns, rconns     []Conn
	prog               *progress
	late               atomic.Int64
	start              time.Duration // of the schedule, since h.Start
	missing            int
}

func newOpenLoop(ctx context.Context, scenario string, sendVia, recvVia Target, cfg LatencyConfig) (*openLoop, error) {
	run, prefix := newRun()
	ol := &openLoop{cfg: cfg, senders: userNames(prefix, "s", cfg.Senders), receivers: userNames(prefix, "r", cfg.Receivers)}
	ol.h = NewHistory(run, ol.senders, ol.receivers)
	ol.prog = startProgress(cfg.Progress, scenario)
	var connected atomic.Int64
	ol.prog.set(func() string {
		return fmt.Sprintf("connecting: %d/%d", connected.Load(), cfg.Senders+cfg.Receivers)
	})
	var failed int
	var errs []error
	ol.rconns, failed, errs = connectAll(ctx, recvVia, ol.receivers, ol.h.Session, 0, 64, &connected)
	if failed > 0 {
		ol.close()
		return nil, fmt.Errorf("%s: %s", scenario, errorsNote("receiver connects", failed, errs))
	}
	ol.sconns, failed, errs = connectAll(ctx, sendVia, ol.senders, func(int) func(Delivery) { return noDeliver }, 0, 64, &connected)
	if failed > 0 {
		ol.close()
		return nil, fmt.Errorf("%s: %s", scenario, errorsNote("sender connects", failed, errs))
	}
	return ol, nil
}

func (ol *openLoop) close() {
	ol.prog.stop()
	closeAll(ol.sconns)
	closeAll(ol.rconns)
}

// offer runs the schedule, with during running alongside it (migrations)
// until the sends are done; then it drains.
func (ol *openLoop) offer(ctx context.Context, during func(ctx context.Context)) {
	cfg, h := ol.cfg, ol.h
	ol.prog.set(rateStatus(h))
	pairs := cfg.Senders * cfg.Receivers
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	start := time.Now().Add(20 * time.Millisecond)
	ol.start = start.Sub(h.Start())
	end := start.Add(time.Duration(cfg.Duration))

	bg, stopBG := context.WithCancel(ctx)
	var bgDone sync.WaitGroup
	if during != nil {
		bgDone.Go(func() { during(bg) })
	}
	var wg sync.WaitGroup
	for p := range pairs {
		s, r := p%cfg.Senders, (p/cfg.Senders)%cfg.Receivers
		wg.Go(func() {
			buf := make([]byte, 0, cfg.Size)
			timer := time.NewTimer(0)
			<-timer.C
			for k := 0; ; k++ {
				at := start.Add(time.Duration(p+k*pairs) * interval)
				if !at.Before(end) || ctx.Err() != nil {
					return
				}
				if d := time.Until(at); d > 0 {
					timer.Reset(d)
					select {
					case <-timer.C:
					case <-ctx.Done():
						return
					}
				} else if d < -time.Millisecond {
					ol.late.Add(1)
				}
				n := h.Issue(s, r)
				buf = AppendBody(buf[:0], Stamp{Run: h.Run(), Sender: s, Receiver: r, N: n, At: at}, cfg.Size)
				sctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.SendTimeout))
				err := ol.sconns[s].Send(sctx, ol.receivers[r], buf)
				cancel()
				h.Done(s, r, n, err)
			}
		})
	}
	wg.Wait()
	ol.prog.set(func() string {
		c := h.Counts()
		return fmt.Sprintf("draining: %d acked, %d delivered", c.Acked, c.Delivered)
	})
	ol.missing = drain(ctx, h, 0, len(ol.receivers), time.Duration(cfg.Drain))
	stopBG()
	bgDone.Wait()
	ol.prog.stop()
}

func (ol *openLoop) report(res *Result) {
	cfg, h := ol.cfg, ol.h
	res.Validation = h.Validate()
	tl := h.timeline()
	from := ol.start + time.Duration(cfg.Warmup)
	to := ol.start + time.Duration(cfg.Duration)
	dl := h.deliveryLatencies(from, to)
	res.add("offered_per_s", "offered rate", cfg.Rate, "msg/s")
	res.add("sent_per_s", "achieved rate (acknowledged)", perSecond(tl.acked, max(tl.lastAck-ol.start, time.Duration(cfg.Duration))), "msg/s")
	res.add("delivered_per_s", "delivered", perSecond(tl.delivered, max(tl.lastDelivery-ol.start, time.Duration(cfg.Duration))), "msg/s")
	res.addLatency("latency", "send → delivered", dl)
	res.add("measured", "messages measured", float64(len(dl)), "msg")
	res.addLatency("ack", "send → acked", h.ackLatencies(from, to))
	res.add("late_sends", "sends started >1 ms late", float64(ol.late.Load()), "msg")
	res.add("send_failures", "sends failed", float64(res.Validation.Unacked), "msg")
	res.Latency = dl.cdf("send → delivered")
	a, d := h.rateSeries(ol.start, max(tl.lastDelivery, to)+1, seriesStep(time.Duration(cfg.Duration)))
	res.Series = []Series{a, d}
	res.Counters = sumStats(sumStats(nil, ol.sconns), ol.rconns)
	res.note(fmt.Sprintf("open loop: %.0f msg/s over %d senders × %d receivers; latency = delivered − scheduled send time; the first %s are left out of the percentiles",
		cfg.Rate, cfg.Senders, cfg.Receivers, cfg.Warmup))
	if ol.missing > 0 {
		res.note(fmt.Sprintf("%d acknowledged messages still undelivered after the %s drain", ol.missing, cfg.Drain))
	}
}
