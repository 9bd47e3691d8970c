package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ConnectionsConfig configures the connections scenario. Zero values mean
// the defaults stated beside the fields.
type ConnectionsConfig struct {
	// Conns is the number of idle connections to open; default 20000.
	Conns int `json:"conns"`
	// Ramp paces the connects, in connections per second over all
	// processes; default 1000.
	Ramp float64 `json:"ramp"`
	// Concurrency bounds the connects in flight per process; default 256.
	Concurrency int `json:"concurrency"`
	// Settle is the pause after the ramp before the "after ramp" sample;
	// default 3s.
	Settle Duration `json:"settle"`
	// Idle is the window over which the server's CPU on idle connections
	// (keepalives) is measured; default 30s.
	Idle Duration `json:"idle"`
	// ProbeTimeout bounds the final delivery check; default 60s.
	ProbeTimeout Duration `json:"probe_timeout"`
	// Metrics samples the server process (required): it must run in
	// another process than the clients, or its figures would count them.
	Metrics ServerMetrics `json:"-"`
	// GC, when set, makes the server collect garbage (see PprofGC); a last
	// sample is then taken after it: what the idle connections hold once
	// the runtime has collected the ramp's garbage, as an idle server's
	// periodic forced GC (every 2 minutes) does anyway. Nil: no such
	// sample.
	GC func(ctx context.Context) error `json:"-"`
	// Workers hold shares of the connections in other processes (a
	// process can only open RLIMIT_NOFILE sockets; see MaxConnsPerProcess).
	// This process and each worker get an equal share.
	Workers []*Worker `json:"-"`
	// Processes is set by Connections: 1 + len(Workers).
	Processes int `json:"processes"`
	// Progress receives a status line a second; nil: none.
	Progress io.Writer `json:"-"`
}

func (c *ConnectionsConfig) defaults() {
	def(&c.Conns, 20000)
	if c.Ramp <= 0 {
		c.Ramp = 1000
	}
	def(&c.Concurrency, 256)
	defDur(&c.Settle, 3*time.Second)
	defDur(&c.Idle, 30*time.Second)
	defDur(&c.ProbeTimeout, 60*time.Second)
	c.Processes = 1 + len(c.Workers)
}

// MaxConnsPerProcess is how many client connections this process can hold:
// each client has its own UDP socket, two while it moves to a fresh one
// (a path that went silent), bounded by RLIMIT_NOFILE (which Go raises to
// the hard limit at start), less a margin for everything else.
func MaxConnsPerProcess() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1000
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return max((int(rl.Cur)-512)/2, 16)
}

// share is the receiver range [lo, hi) of process i out of n.
func share(total, n, i int) (lo, hi int) {
	return total * i / n, total * (i + 1) / n
}

// Connections ramps to Conns idle connections and measures the server's
// memory per connection (resident set and Go heap in use, deltas from
// before the ramp, divided by the connections) and the server CPU the idle
// connections cost (keepalives), per connection per minute, over the Idle
// window. It then sends one message to every connection and validates the
// deliveries: idle connections must still be alive.
func Connections(ctx context.Context, t Target, cfg ConnectionsConfig) (*Result, error) {
	cfg.defaults()
	if cfg.Metrics == nil {
		return nil, errors.New("connections: ConnectionsConfig.Metrics is required (the server's /metrics)")
	}
	res := &Result{Scenario: "connections", Target: t.Name(), Config: cfg, Started: time.Now()}
	run, prefix := newRun()
	senders, receivers := userNames(prefix, "s", 1), userNames(prefix, "r", cfg.Conns)
	h := NewHistory(run, senders, receivers)
	prog := startProgress(cfg.Progress, "connections")
	defer prog.stop()
	procs := cfg.Processes
	lo, hi := share(cfg.Conns, procs, 0)

	before, err := cfg.Metrics(ctx)
	if err != nil {
		return nil, fmt.Errorf("connections: %w", err)
	}

	// Ramp, here and in every worker at once.
	var connected atomic.Int64
	var mu sync.Mutex
	failed, errs := 0, []error(nil)
	prog.set(func() string {
		n := connected.Load()
		for _, w := range cfg.Workers {
			n += w.connected.Load()
		}
		return fmt.Sprintf("ramp: %d/%d connected", n, cfg.Conns)
	})
	rampStart := time.Now()
	var wg sync.WaitGroup
	var conns []Conn
	wg.Go(func() {
		var f int
		var e []error
		conns, f, e = connectAll(ctx, t, receivers[lo:hi], func(i int) func(Delivery) { return h.Session(lo + i) },
			cfg.Ramp/float64(procs), cfg.Concurrency, &connected)
		mu.Lock()
		failed += f
		errs = append(errs, e...)
		mu.Unlock()
	})
	for i, w := range cfg.Workers {
		wlo, whi := share(cfg.Conns, procs, i+1)
		wg.Go(func() {
			f, e := w.connect(workerMsg{Op: "connect", Run: run, Prefix: prefix, Senders: 1, Total: cfg.Conns,
				From: wlo, To: whi, Rate: cfg.Ramp / float64(procs), Concurrency: cfg.Concurrency})
			mu.Lock()
			failed += f
			errs = append(errs, e...)
			mu.Unlock()
		})
	}
	wg.Wait()
	defer closeAll(conns)
	rampTime := time.Since(rampStart)
	total := int(connected.Load())
	for _, w := range cfg.Workers {
		total += int(w.connected.Load())
	}
	if total == 0 {
		return nil, fmt.Errorf("connections: %s", errorsNote("connects", failed, errs))
	}

	wait := func(d time.Duration, what string) error {
		end := time.Now().Add(d)
		prog.set(func() string {
			return fmt.Sprintf("%s: %d connections, %.0fs left", what, total, time.Until(end).Seconds())
		})
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	if err := wait(time.Duration(cfg.Settle), "settling"); err != nil {
		return nil, err
	}
	afterRamp, err := cfg.Metrics(ctx)
	if err != nil {
		return nil, fmt.Errorf("connections: %w", err)
	}
	idleStart := time.Now()
	if err := wait(time.Duration(cfg.Idle), "idle"); err != nil {
		return nil, err
	}
	end, err := cfg.Metrics(ctx)
	if err != nil {
		return nil, fmt.Errorf("connections: %w", err)
	}
	idle := time.Since(idleStart)

	n := float64(total)
	perConn := func(m map[string]float64, name string) float64 {
		a, ok1 := m[name]
		b, ok0 := before[name]
		if !ok0 || !ok1 {
			return nanValue
		}
		return (a - b) / n
	}
	res.add("connections", "idle connections", n, "")
	res.add("connect_failures", "connects failed", float64(failed), "")
	res.add("ramp_s", "ramp time", rampTime.Seconds(), "s")
	res.add("rss_per_conn_kib", "server RSS per connection", perConn(end, "process_resident_memory_bytes")/1024, "KiB")
	res.add("heap_per_conn_kib", "server Go heap in use per connection", perConn(end, "go_memstats_heap_inuse_bytes")/1024, "KiB")
	res.add("rss_per_conn_after_ramp_kib", "server RSS per connection, right after the ramp", perConn(afterRamp, "process_resident_memory_bytes")/1024, "KiB")
	res.add("heap_per_conn_after_ramp_kib", "server Go heap in use per connection, right after the ramp", perConn(afterRamp, "go_memstats_heap_inuse_bytes")/1024, "KiB")
	res.add("goroutines_per_conn", "server goroutines per connection", perConn(end, "go_goroutines"), "")
	cpu := end["process_cpu_seconds_total"] - afterRamp["process_cpu_seconds_total"]
	res.add("idle_cpu_ms_per_conn_min", "server CPU per idle connection per minute", cpu*1000/n/idle.Minutes(), "ms")
	res.add("idle_cpu_cores", "server CPU while idle", cpu/idle.Seconds(), "cores")
	res.add("server_rss_mib", "server RSS at the end", end["process_resident_memory_bytes"]/(1<<20), "MiB")
	if cfg.GC != nil {
		if err := cfg.GC(ctx); err != nil {
			return nil, fmt.Errorf("connections: server GC: %w", err)
		}
		// Let the scavenger return some of the freed pages first.
		if err := wait(5*time.Second, "after a GC"); err != nil {
			return nil, err
		}
		gc, err := cfg.Metrics(ctx)
		if err != nil {
			return nil, fmt.Errorf("connections: %w", err)
		}
		res.add("rss_per_conn_gc_kib", "server RSS per connection, 5 s after a GC", perConn(gc, "process_resident_memory_bytes")/1024, "KiB")
		res.add("heap_per_conn_gc_kib", "server Go heap in use per connection, after a GC", perConn(gc, "go_memstats_heap_inuse_bytes")/1024, "KiB")
		res.add("live_per_conn_gc_kib", "server live heap objects per connection, after a GC", perConn(gc, "go_memstats_heap_alloc_bytes")/1024, "KiB")
		res.add("stack_per_conn_kib", "server goroutine stacks per connection", perConn(gc, "go_memstats_stack_inuse_bytes")/1024, "KiB")
	}

	// Probe: one message to every connection.
	prog.set(rateStatus(h))
	sconns, f, e := connectAll(ctx, t, senders, func(int) func(Delivery) { return noDeliver }, 0, 0, nil)
	defer closeAll(sconns)
	if f > 0 {
		return nil, fmt.Errorf("connections: %s", errorsNote("probe sender connect", f, e))
	}
	var pw sync.WaitGroup
	sem := make(chan struct{}, 256)
	for r := range receivers {
		sem <- struct{}{}
		pw.Go(func() {
			defer func() { <-sem }()
			n := h.Issue(0, r)
			body := AppendBody(nil, Stamp{Run: run, Sender: 0, Receiver: r, N: n, At: time.Now()}, 100)
			sctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.ProbeTimeout))
			err := sconns[0].Send(sctx, receivers[r], body)
			cancel()
			h.Done(0, r, n, err)
		})
	}
	pw.Wait()
	missing := drain(ctx, h, lo, hi, time.Duration(cfg.ProbeTimeout))
	v := h.ValidateRange(lo, hi)
	for i, w := range cfg.Workers {
		wlo, whi := share(cfg.Conns, procs, i+1)
		var acked []int
		for r := wlo; r < whi; r++ {
			if h.acked1(r) {
				acked = append(acked, r)
			}
		}
		wv, err := w.probe(acked, cfg.ProbeTimeout)
		if err != nil {
			return nil, fmt.Errorf("connections: worker %d: %w", i+1, err)
		}
		v.Merge(wv)
	}
	res.Validation = v
	res.Counters = sumStats(nil, conns)
	res.note(fmt.Sprintf("server in its own process; memory = (sample − sample before the ramp) / connections; the end sample is taken after the %s idle window", cfg.Idle))
	res.note(fmt.Sprintf("clients in %d process(es); each client holds one UDP socket", procs))
	if failed > 0 {
		res.note(errorsNote("connects", failed, errs))
	}
	if missing > 0 {
		res.note(fmt.Sprintf("%d probe messages undelivered in this process after %s", missing, cfg.ProbeTimeout))
	}
	res.Elapsed = Duration(time.Since(res.Started))
	return res, nil
}

// acked1 reports whether receiver r's first message (from sender 0) was
// acknowledged.
func (h *History) acked1(r int) bool {
	p := h.pair(0, r)
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sends) > 0 && p.sends[0].state == sendAcked
}
