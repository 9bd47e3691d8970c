package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternhq/tern/internal/netsim"
)

// MobileConfig configures the mobile scenario: the latency workload with
// the receivers on a bad mobile network. Zero values mean the defaults
// stated beside the fields.
type MobileConfig struct {
	// LatencyConfig is the workload; defaults as for Latency except Rate
	// 1000 msg/s and Duration 20s.
	LatencyConfig
	// RTT is the round trip the proxy adds; default 50ms.
	RTT Duration `json:"rtt"`
	// Jitter is added to each one-way delay, uniform in ±Jitter; default
	// 5ms (negative: none).
	Jitter Duration `json:"jitter"`
	// Loss is the drop probability in each direction; default 0.01
	// (negative: none).
	Loss float64 `json:"loss"`
	// MigrateEvery is how often each receiver moves to the other network
	// (staggered over the receivers); default 5s, negative: never.
	MigrateEvery Duration `json:"migrate_every"`
	// Networks are the local addresses receivers alternate between;
	// default 127.0.0.1 and 127.0.0.2 (Wi-Fi and cellular).
	Networks []string `json:"networks"`
	// Seed seeds the proxy's random decisions; 0: time-based.
	Seed int64 `json:"seed,omitempty"`
}

func (c *MobileConfig) defaults() {
	c.LatencyConfig.defaults(1000, 20*time.Second)
	defDur(&c.RTT, 50*time.Millisecond)
	switch {
	case c.Jitter == 0:
		c.Jitter = Duration(5 * time.Millisecond)
	case c.Jitter < 0:
		c.Jitter = 0
	}
	switch {
	case c.Loss == 0:
		c.Loss = 0.01
	case c.Loss < 0:
		c.Loss = 0
	}
	if c.MigrateEvery == 0 {
		c.MigrateEvery = Duration(5 * time.Second)
	}
	if len(c.Networks) == 0 {
		c.Networks = []string{"127.0.0.1", "127.0.0.2"}
	}
}

// Mobile runs the latency workload with every receiver behind a netsim
// proxy (delay, jitter, loss both ways) that moves between two local
// networks every MigrateEvery (NetworkSwitcher; for Tern, QUIC connection
// migration). Senders connect directly. The target must be Proxyable.
//
// Figures: those of Latency, plus migrations done and failed (fell back to
// a reconnect) and the packets the proxy dropped.
func Mobile(ctx context.Context, t Target, cfg MobileConfig) (*Result, error) {
	cfg.defaults()
	res := &Result{Scenario: "mobile", Target: t.Name(), Config: cfg, Started: time.Now()}
	pt, ok := t.(Proxyable)
	if !ok {
		return nil, errors.New("mobile: the target cannot be reached through a proxy (not Proxyable)")
	}
	link := netsim.Link{Delay: time.Duration(cfg.RTT) / 2, Jitter: time.Duration(cfg.Jitter), Loss: cfg.Loss}
	px, err := netsim.New(netsim.Config{Target: pt.Addr(), Up: link, Down: link, Seed: cfg.Seed})
	if err != nil {
		return nil, fmt.Errorf("mobile: proxy: %w", err)
	}
	defer px.Close()

	ol, err := newOpenLoop(ctx, "mobile", t, pt.Via(px.Addr()), cfg.LatencyConfig)
	if err != nil {
		return nil, err
	}
	defer ol.close()
	var migrations, failures atomic.Int64
	var firstErr atomic.Pointer[error]
	canSwitch := true
	migrate := func(ctx context.Context) {
		if cfg.MigrateEvery < 0 {
			return
		}
		every := time.Duration(cfg.MigrateEvery)
		var wg sync.WaitGroup
		for r, c := range ol.rconns {
			sw, ok := c.(NetworkSwitcher)
			if !ok {
				canSwitch = false
				return
			}
			wg.Go(func() {
				next := time.Now().Add(every * time.Duration(r+1) / time.Duration(len(ol.rconns)))
				for k := 1; ; k++ {
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Until(next)):
					}
					next = next.Add(every)
					mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					err := sw.SwitchNetwork(mctx, cfg.Networks[k%len(cfg.Networks)]+":0")
					cancel()
					if ctx.Err() != nil {
						return
					}
					migrations.Add(1)
					if err != nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, &err)
					}
				}
			})
		}
		wg.Wait()
	}
	ol.offer(ctx, migrate)
	ol.report(res)
	st := px.Stats()
	res.add("migrations", "network switches", float64(migrations.Load()), "")
	res.add("migration_fallbacks", "switches that fell back to a reconnect", float64(failures.Load()), "")
	res.add("dropped_up", "packets dropped client→server", float64(st.Up.Dropped.Total()), "pkt")
	res.add("dropped_down", "packets dropped server→client", float64(st.Down.Dropped.Total()), "pkt")
	res.note(fmt.Sprintf("receivers behind netsim: RTT %s, jitter ±%s each way, loss %.1f%% each way, a network switch per receiver every %s between %v; senders connect directly",
		cfg.RTT, cfg.Jitter, cfg.Loss*100, cfg.MigrateEvery, cfg.Networks))
	if !canSwitch {
		res.note("the target's conns cannot switch networks: no migrations")
	}
	if e := firstErr.Load(); e != nil {
		res.note(fmt.Sprintf("first migration fallback: %v", *e))
	}
	res.Elapsed = Duration(time.Since(res.Started))
	return res, nil
}
