package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
)

// TestDrainUnderLoad: SIGTERM while clients send to each other. The server
// drains (GoAway, in-flight sends finish) and exits cleanly; after a restart
// on the same data directory every client reconnects by itself and catches
// up: every acknowledged message is delivered, once, in order. Issue #3
// acceptance #6.
func TestDrainUnderLoad(t *testing.T) {
	const clients, perClient = 8, 60
	dir := t.TempDir()
	listen := freeUDPAddr(t)
	p := startTern(t, dir, listen, "--drain-timeout", "5s")

	type peer struct {
		name string
		c    *client.Client
		in   *inbox
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var (
		peers   []*peer
		goaways atomic.Int64
	)
	for i := 0; i < clients; i++ {
		pr := &peer{name: fmt.Sprintf("p%02d", i), in: newInbox(0)}
		cfg := p.clientConfig(pr.name, "phone")
		cfg.OnMessage = pr.in.add
		cfg.OnEvent = func(e client.Event) {
			if e.Kind == client.EventGoAway {
				goaways.Add(1)
			}
		}
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		pr.c = c
		peers = append(peers, pr)
	}

	// Each client sends perClient messages round-robin to the others.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked = map[string][]client.SendResult{} // by recipient, in ack order per sender
		sent  atomic.Int64
	)
	for i, pr := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perClient; j++ {
				to := peers[(i+1+j%(clients-1))%clients].name
				r, err := pr.c.SendWith(ctx, client.SendOptions{ClientMsgID: fmt.Sprintf("%s-%d", pr.name, j), To: to, Body: []byte("x")})
				if err != nil {
					t.Errorf("%s send %d: %v", pr.name, j, err)
					return
				}
				mu.Lock()
				acked[to] = append(acked[to], r)
				mu.Unlock()
				sent.Add(1)
				time.Sleep(2 * time.Millisecond) // a steady stream, not a burst
			}
		}()
	}
	for sent.Load() < clients*perClient/3 {
		time.Sleep(time.Millisecond)
	}
	p.term() // SIGTERM: drains and must exit 0
	drainedAt := sent.Load()
	p = startTern(t, dir, listen)
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("SIGTERM after %d of %d acks; %d GoAways seen by clients", drainedAt, clients*perClient, goaways.Load())
	if goaways.Load() == 0 {
		t.Error("no client saw a GoAway: the drain did not announce itself")
	}
	// Every client catches up by itself: each inbox ends up holding every
	// message sent to it plus its own sent copies, gap-free, once each.
	for _, pr := range peers {
		want := len(acked[pr.name]) + perClient
		got := pr.in.wait(t, want, 30*time.Second)
		ids := map[client.MessageID]bool{}
		for _, m := range got {
			ids[m.ID] = true
		}
		for _, r := range acked[pr.name] {
			if !ids[r.ID] {
				t.Fatalf("%s never received acknowledged message %s", pr.name, r.ID)
			}
		}
	}
	p.term()
	st := openStore(t, dir)
	for _, pr := range peers {
		es := mailbox(t, st, pr.name)
		if len(es) != len(acked[pr.name])+perClient {
			t.Fatalf("%s's mailbox holds %d entries, want %d", pr.name, len(es), len(acked[pr.name])+perClient)
		}
	}
}
