package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// StormConfig configures the reconnect-storm scenario. Zero values mean
// the defaults stated beside the fields.
type StormConfig struct {
	// Clients is the number of receiving clients; default 10000.
	Clients int `json:"clients"`
	// Senders send the messages the clients wait for; default 8.
	Senders int `json:"senders"`
	// SendWindow is how many sends are in flight at once; default 256.
	SendWindow int `json:"send_window"`
	// ConnectRate paces the first connection of the clients (full
	// handshakes), in connections per second; default 2000.
	ConnectRate float64 `json:"connect_rate"`
	// Timeout bounds each reconnect phase: clients not connected and caught
	// up by then count as failures; default 60s.
	Timeout Duration `json:"timeout"`
	// Size is the body size in bytes; default 100.
	Size int `json:"size"`
	// Progress receives a status line a second; nil: none.
	Progress io.Writer `json:"-"`
	// Server, when set, samples the server process (its
	// process_cpu_seconds_total): each phase then reports the server's CPU
	// per reconnect beside this process's. Meaningful when the server runs
	// in its own process.
	Server ServerMetrics `json:"-"`
}

func (c *StormConfig) defaults() {
	def(&c.Clients, 10000)
	def(&c.Senders, 8)
	def(&c.SendWindow, 256)
	if c.ConnectRate <= 0 {
		c.ConnectRate = 2000
	}
	defDur(&c.Timeout, 60*time.Second)
	def(&c.Size, 100)
	c.Size = max(c.Size, MinBodySize)
}

// Storm connects Clients clients, delivers one message to each, then
// disconnects them all at once, sends each one message while they are all
// away, and reconnects them all at once: first resuming their TLS sessions
// with 0-RTT, then (a second round, when the target is a ZeroRTTSetter)
// with full handshakes. A client is caught up when it has its message.
//
// Figures per phase: connected_s and caught_up_s (time from the storm's
// start until every client is connected / has its message), p50 and p99 of
// the clients' catch-up times, failures (not connected, or not caught up,
// within Timeout) and the clients whose connection used 0-RTT.
func Storm(ctx context.Context, t Target, cfg StormConfig) (*Result, error) {
	cfg.defaults()
	res := &Result{Scenario: "reconnect-storm", Target: t.Name(), Config: cfg, Started: time.Now()}
	run, prefix := newRun()
	senders, clients := userNames(prefix, "s", cfg.Senders), userNames(prefix, "r", cfg.Clients)
	h := NewHistory(run, senders, clients)
	prog := startProgress(cfg.Progress, "reconnect-storm")
	defer prog.stop()

	var connected atomic.Int64
	prog.set(func() string { return fmt.Sprintf("connecting senders: %d/%d", connected.Load(), len(senders)) })
	sconns, failed, errs := connectAll(ctx, t, senders, func(int) func(Delivery) { return noDeliver }, 0, 0, &connected)
	defer closeAll(sconns)
	if failed > 0 {
		return nil, fmt.Errorf("reconnect-storm: %s", errorsNote("sender connects", failed, errs))
	}

	// Each phase's message to client r is the pair's counter `round`;
	// caught[r] is when r got it, in ns since the history start.
	caught := make([]atomic.Int64, len(clients))
	var round atomic.Uint64
	var nCaught atomic.Int64
	deliverTo := func(r int) func(Delivery) {
		rec := h.Session(r)
		return func(d Delivery) {
			rec(d)
			if st, err := DecodeBody(d.Body); err == nil && st.Run == run && st.N >= round.Load() {
				if caught[r].CompareAndSwap(0, int64(time.Since(h.Start()))) {
					nCaught.Add(1)
				}
			}
		}
	}
	sendRound := func(n uint64) error {
		round.Store(n)
		for r := range caught {
			caught[r].Store(0)
		}
		nCaught.Store(0)
		var wg sync.WaitGroup
		sem := make(chan struct{}, cfg.SendWindow)
		var sendErr atomic.Pointer[error]
		for r := range clients {
			s := r % len(senders)
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				n := h.Issue(s, r)
				body := AppendBody(nil, Stamp{Run: run, Sender: s, Receiver: r, N: n, At: time.Now()}, cfg.Size)
				sctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Timeout))
				err := sconns[s].Send(sctx, clients[r], body)
				cancel()
				h.Done(s, r, n, err)
				if err != nil {
					sendErr.CompareAndSwap(nil, &err)
				}
			})
		}
		wg.Wait()
		if e := sendErr.Load(); e != nil {
			return *e
		}
		return nil
	}

	// Warm up: everyone connected once (full handshake, a session ticket)
	// and caught up with message 1.
	connected.Store(0)
	prog.set(func() string {
		return fmt.Sprintf("connecting clients: %d/%d, caught up %d", connected.Load(), len(clients), nCaught.Load())
	})
	round.Store(1)
	cconns, failed, errs := connectAll(ctx, t, clients, deliverTo, cfg.ConnectRate, 512, &connected)
	if failed > 0 {
		closeAll(cconns)
		return nil, fmt.Errorf("reconnect-storm: %s", errorsNote("first connects", failed, errs))
	}
	if err := sendRound(1); err != nil {
		closeAll(cconns)
		return nil, fmt.Errorf("reconnect-storm: warm-up send: %w", err)
	}
	if m := drain(ctx, h, 0, len(clients), time.Duration(cfg.Timeout)); m > 0 {
		closeAll(cconns)
		return nil, fmt.Errorf("reconnect-storm: warm-up: %d clients did not get their first message", m)
	}

	type phase struct {
		name    string
		zeroRTT bool
	}
	phases := []phase{{"0rtt", true}}
	zs, canZ := t.(ZeroRTTSetter)
	if canZ {
		phases = append(phases, phase{"full", false})
	} else {
		phases[0].name = "reconnect"
		res.note("the target has no 0-RTT switch: one reconnect phase")
	}
	for i, ph := range phases {
		n := uint64(i + 2)
		prog.set(func() string { return fmt.Sprintf("%s: disconnecting %d clients", ph.name, len(clients)) })
		closeAll(cconns)
		prog.set(func() string {
			c := h.Counts()
			return fmt.Sprintf("%s: sending to disconnected clients: %d acked", ph.name, c.Acked-int64(len(clients))*int64(n-1))
		})
		if err := sendRound(n); err != nil {
			return nil, fmt.Errorf("reconnect-storm: %s: send while disconnected: %w", ph.name, err)
		}
		if canZ {
			zs.SetZeroRTT(ph.zeroRTT)
		}
		connected.Store(0)
		prog.set(func() string {
			return fmt.Sprintf("%s storm: connected %d/%d, caught up %d", ph.name, connected.Load(), len(clients), nCaught.Load())
		})
		cconns = make([]Conn, len(clients))
		connectedAt := make([]int64, len(clients))
		var cfailed atomic.Int64
		var firstErr atomic.Pointer[error]
		pctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Timeout))
		cpu := startCPU(ctx, cfg.Server)
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for r := range clients {
			wg.Go(func() {
				<-gate
				c, err := t.Connect(pctx, clients[r], deliverTo(r))
				if err != nil {
					cfailed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				connectedAt[r] = int64(time.Since(h.Start()))
				connected.Add(1)
				cconns[r] = c
			})
		}
		start := int64(time.Since(h.Start()))
		close(gate)
		wg.Wait()
		for nCaught.Load() < int64(len(clients))-cfailed.Load() && pctx.Err() == nil {
			select {
			case <-pctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
		cancel()
		own, server := cpu.stop(ctx)

		var conn, catch latencies
		zero, resumed := 0, 0
		for r := range clients {
			if connectedAt[r] != 0 {
				conn = append(conn, connectedAt[r]-start)
			}
			// Caught up: connected (Connect returned) and got the message,
			// which can come first (a 0-RTT Sync rides with the Hello).
			if c := caught[r].Load(); c != 0 && connectedAt[r] != 0 {
				catch = append(catch, max(c, connectedAt[r])-start)
			}
			if hr, ok := cconns[r].(HandshakeReporter); ok {
				hs := hr.Handshake()
				if hs.ZeroRTT {
					zero++
				}
				if hs.Resumed {
					resumed++
				}
			}
		}
		conn, catch = conn.sorted(), catch.sorted()
		fails := len(clients) - len(catch)
		res.add(ph.name+"_connected_s", ph.name+": all connected", allOrNaN(conn, len(clients))/1e3, "s")
		res.add(ph.name+"_caught_up_s", ph.name+": all connected and caught up", allOrNaN(catch, len(clients))/1e3, "s")
		res.add(ph.name+"_caught_up_p50_s", ph.name+": caught up p50", catch.quantile(.5)/1e3, "s")
		res.add(ph.name+"_caught_up_p99_s", ph.name+": caught up p99", catch.quantile(.99)/1e3, "s")
		res.add(ph.name+"_failures", ph.name+": clients not caught up in time", float64(fails), "")
		res.add(ph.name+"_connect_failures", ph.name+": connects that failed", float64(cfailed.Load()), "")
		res.add(ph.name+"_zero_rtt", ph.name+": connections with 0-RTT", float64(zero), "")
		res.add(ph.name+"_resumed", ph.name+": TLS sessions resumed", float64(resumed), "")
		res.add(ph.name+"_bench_cpu_ms_per_client", ph.name+": CPU of this process (the clients) per client", own*1000/float64(len(clients)), "ms")
		if cfg.Server != nil {
			res.add(ph.name+"_server_cpu_ms_per_client", ph.name+": server CPU per client", server*1000/float64(len(clients)), "ms")
		}
		if e := firstErr.Load(); e != nil {
			res.note(fmt.Sprintf("%s: %d connects failed; first: %v", ph.name, cfailed.Load(), *e))
		}
		if i == 0 {
			res.Latency = catch.cdf(ph.name + ": storm start → caught up")
		}
		// The datagrams a reconnect costs: a calm one about eight each way;
		// in a storm, waiting handshakes add probes and retransmissions.
		if st := sumStats(nil, cconns); st != nil {
			res.add(ph.name+"_datagrams_out_per_client", ph.name+": datagrams a client sent", float64(st["datagrams_out"])/float64(len(clients)), "")
			res.add(ph.name+"_datagrams_in_per_client", ph.name+": datagrams a client received", float64(st["datagrams_in"])/float64(len(clients)), "")
			res.Counters = addCounts(res.Counters, st)
		}
	}
	if canZ {
		zs.SetZeroRTT(true)
	}
	// Clients that did not make it within Timeout are failures of the
	// storm, not losses: they connect again now, paced, so that the
	// validator can tell a late message from a lost one.
	var late []int
	for r, c := range cconns {
		if c == nil {
			late = append(late, r)
		}
	}
	if len(late) > 0 {
		prog.set(func() string { return fmt.Sprintf("reconnecting the %d clients that failed, paced", len(late)) })
		names := make([]string, len(late))
		for i, r := range late {
			names[i] = clients[r]
		}
		conns, failed, errs := connectAll(ctx, t, names, func(i int) func(Delivery) { return deliverTo(late[i]) }, 500, 128, nil)
		for i, c := range conns {
			cconns[late[i]] = c
		}
		missing := drain(ctx, h, 0, len(clients), time.Duration(cfg.Timeout))
		res.note(fmt.Sprintf("after the storms, the %d clients that had failed connected again at 500/s to collect their messages: %d failed again, %d acknowledged messages still missing",
			len(late), failed, missing))
		if failed > 0 {
			res.note(errorsNote("paced reconnects", failed, errs))
		}
	}
	prog.stop()
	closeAll(cconns)
	res.Validation = h.Validate()
	res.note(fmt.Sprintf("%d clients, one message each before the storm and one sent to each while all were disconnected; times from the moment all reconnect at once", cfg.Clients))
	res.Elapsed = Duration(time.Since(res.Started))
	return res, nil
}

// cpuSpan measures CPU seconds over a span: this process's (getrusage) and,
// when sampled, the server process's.
type cpuSpan struct {
	server    ServerMetrics
	own, srv0 float64
}

func startCPU(ctx context.Context, server ServerMetrics) cpuSpan {
	s := cpuSpan{server: server, own: ownCPU()}
	if server != nil {
		if m, err := server(ctx); err == nil {
			s.srv0 = m["process_cpu_seconds_total"]
		}
	}
	return s
}

// stop returns the CPU seconds spent since start by this process and by the
// server (NaN when it could not be sampled; 0 without a sampler).
func (s cpuSpan) stop(ctx context.Context) (own, server float64) {
	own = ownCPU() - s.own
	if s.server == nil {
		return own, 0
	}
	m, err := s.server(ctx)
	if err != nil {
		return own, nanValue
	}
	return own, m["process_cpu_seconds_total"] - s.srv0
}

func ownCPU() float64 {
	u, sy := rusage()
	return (u + sy).Seconds()
}

// allOrNaN is the largest sample in ms when there are want of them, NaN
// (not everyone made it) otherwise.
func allOrNaN(sorted latencies, want int) float64 {
	if len(sorted) < want || len(sorted) == 0 {
		return nanValue
	}
	return float64(slices.Max(sorted)) / 1e6
}
