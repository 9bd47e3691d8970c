package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/netsim"
	"github.com/ternhq/tern/internal/testserver"
)

// BenchmarkNetworkSwitch measures, on a 50 ms RTT link, the time from a
// network switch (the phone's current network goes down and it moves to its
// other one) to the delivery of a message sent at that moment, for the three
// ways a client can recover: QUIC connection migration, a reconnect with
// 0-RTT, and a reconnect with a full handshake. Issue #3 acceptance #7.
//
//	go test ./internal/e2e -run '^$' -bench NetworkSwitch -benchtime 40x
//
// Reported: median (ms-p50), 90th percentile (ms-p90) and worst (ms-max) per
// switch.
func BenchmarkNetworkSwitch(b *testing.B) {
	modes := []struct {
		name string
		mod  func(*client.Config)
	}{
		{"migration", func(*client.Config) {}},
		{"0rtt-reconnect", func(c *client.Config) { c.DisableMigration = true }},
		{"full-reconnect", func(c *client.Config) {
			c.DisableMigration, c.Disable0RTT = true, true
			c.TLS.SessionTicketsDisabled = true
		}},
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			dir := b.TempDir()
			secrets, err := edge.LoadOrCreateSecrets(dir + "/secret")
			if err != nil {
				b.Fatal(err)
			}
			s := testserver.Start(b, testserver.Options{Dir: dir, QUIC: edge.QUICOptions{Secrets: secrets}})
			link := netsim.Link{Delay: 25 * time.Millisecond}
			px := newProxy(b, s.Addr, link, link)
			a := sdk(b, s, "alice", "laptop", 0, nil)
			got := make(chan client.Message, 16)
			nets := []string{"127.0.0.1", "127.0.0.2"} // Wi-Fi, cellular
			bob := sdk(b, s, "bob", "phone", 0, func(c *client.Config) {
				c.Addr, c.LocalAddr = px.Addr(), nets[0]+":0"
				c.TLS = s.ClientTLS()
				c.OnMessage = func(m client.Message) {
					if !m.Mine {
						got <- m
					}
				}
				c.ReconnectMin, c.ReconnectMax = 5*time.Millisecond, 50*time.Millisecond
				mode.mod(c)
			})
			ctx := ctxT(b, 10*time.Minute)
			// Warm up: a first message and (for 0-RTT) a session ticket.
			if _, err := a.Send(ctx, "bob", []byte("warm")); err != nil {
				b.Fatal(err)
			}
			<-got
			time.Sleep(200 * time.Millisecond)

			var took []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				from, to := nets[i%2], nets[(i+1)%2]
				px.SetClientIPDown(to, false)
				start := time.Now()
				px.SetClientIPDown(from, true) // the current network is gone
				sent := make(chan error, 1)
				go func() {
					_, err := a.Send(ctx, "bob", []byte(fmt.Sprint("m", i)))
					sent <- err
				}()
				if err := bob.SwitchNetwork(ctx, to+":0"); err != nil {
					b.Fatalf("switch %d: %v", i, err)
				}
				select {
				case <-got:
				case <-ctx.Done():
					b.Fatal("no delivery")
				}
				took = append(took, time.Since(start))
				if err := <-sent; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			slices.Sort(took)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(took[len(took)/2]), "ms-p50")
			b.ReportMetric(ms(took[len(took)*9/10]), "ms-p90")
			b.ReportMetric(ms(took[len(took)-1]), "ms-max")
			st := bob.Stats()
			b.ReportMetric(0, "ns/op")
			if mode.name == "migration" && (st.Migrations != uint64(b.N) || st.Reconnects != 0) {
				b.Fatalf("migration mode reconnected: %+v", st)
			}
			if mode.name == "0rtt-reconnect" && st.Used0RTT < uint64(b.N) {
				b.Fatalf("0-RTT mode: %+v", st)
			}
			if mode.name == "full-reconnect" && (st.Resumed != 0 || st.Handshakes < uint64(b.N)) {
				b.Fatalf("full-reconnect mode resumed: %+v", st)
			}
		})
	}
	_ = context.Background
}
