package e2e

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/netsim"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/wire"
)

var long = flag.Bool("long", false, "run the network tests at full size and real durations (minutes)")

func newProxy(t testing.TB, target string, up, down netsim.Link) *netsim.Proxy {
	t.Helper()
	p, err := netsim.New(netsim.Config{Target: target, Up: up, Down: down, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// via makes an SDK client connect through the proxy.
func via(px *netsim.Proxy, in *inbox, more ...func(*client.Config)) func(*client.Config) {
	return func(c *client.Config) {
		c.Addr = px.Addr()
		c.LocalAddr = "127.0.0.1:0"
		if in != nil {
			c.OnMessage = in.add
		}
		for _, m := range more {
			m(c)
		}
	}
}

// sendMany sends n messages from c to `to` with `width` sends in flight and
// returns the results in send order.
func sendMany(t testing.TB, ctx context.Context, c *client.Client, to string, n, width int, tag string) []client.SendResult {
	t.Helper()
	res := make([]client.SendResult, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range width {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				r, err := c.SendWith(ctx, client.SendOptions{ClientMsgID: fmt.Sprintf("%s-%d", tag, i), To: to, Body: []byte(tag)})
				if err != nil {
					t.Errorf("%s %d: %v", tag, i, err)
					return
				}
				res[i] = r
			}
		})
	}
	wg.Wait()
	return res
}

// checkReceived checks that got holds every message of sent, each once.
func checkReceived(t *testing.T, who string, got []client.Message, sent ...[]client.SendResult) {
	t.Helper()
	ids := map[client.MessageID]int{}
	for _, m := range got {
		ids[m.ID]++
	}
	for _, rs := range sent {
		for _, r := range rs {
			if ids[r.ID] != 1 {
				t.Fatalf("%s holds message %s %d times, want once", who, r.ID, ids[r.ID])
			}
		}
	}
}

// TestMigrationStorm: one connection survives 100 migrations while two
// clients exchange 2,000 messages: nothing lost or duplicated, every
// mailbox in order, and no new TLS handshake. Issue #3 acceptance #1.
func TestMigrationStorm(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	link := netsim.Link{Delay: 10 * time.Millisecond}
	px := newProxy(t, s.Addr, link, link)
	inA, inB := newInbox(0), newInbox(0)
	a := sdk(t, s, "alice", "phone", 0, via(px, inA))
	b := sdk(t, s, "bob", "phone", 0, via(px, inB))
	ctx := ctxT(t, 120*time.Second)

	const n = 1000
	done := make(chan struct{})
	migrated := make(chan error, 1)
	go func() {
		for i := 0; i < 100; i++ {
			addr := []string{"127.0.0.2:0", "127.0.0.1:0"}[i%2] // Wi-Fi, cellular, Wi-Fi...
			if err := a.SwitchNetwork(ctx, addr); err != nil {
				migrated <- fmt.Errorf("migration %d: %w", i, err)
				return
			}
			select {
			case <-done:
				time.Sleep(time.Millisecond) // the exchange ended; finish the count
			case <-time.After(15 * time.Millisecond):
			}
		}
		migrated <- nil
	}()
	var toB, toA []client.SendResult
	var wg sync.WaitGroup
	wg.Go(func() { toB = sendMany(t, ctx, a, "bob", n, 8, "a") })
	wg.Go(func() { toA = sendMany(t, ctx, b, "alice", n, 8, "b") })
	wg.Wait()
	close(done)
	if err := <-migrated; err != nil {
		t.Fatal(err)
	}
	checkReceived(t, "bob", inB.wait(t, 2*n, 60*time.Second), toB)
	checkReceived(t, "alice", inA.wait(t, 2*n, 60*time.Second), toA)
	sa, sb := a.Stats(), b.Stats()
	t.Logf("alice: %+v", sa)
	if sa.Migrations != 100 || sa.MigrationFailures != 0 || sa.Handshakes != 1 || sa.Resumed != 0 || sa.Reconnects != 0 || sa.Connects != 1 {
		t.Fatalf("alice's connection did not survive the migrations as one: %+v", sa)
	}
	if sb.Reconnects != 0 {
		t.Fatalf("bob reconnected: %+v", sb)
	}
	if px.Flows() < 3 {
		t.Fatalf("the proxy saw %d client addresses; migrations did not change alice's address", px.Flows())
	}
}

// TestNATRebinding: the NAT in front of a client changes its address and
// port repeatedly while messages flow both ways; the edge follows the same
// connection and keeps notifying it. Issue #3 acceptance #2.
func TestNATRebinding(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	link := netsim.Link{Delay: 10 * time.Millisecond}
	px := newProxy(t, s.Addr, link, link)
	inA, inB := newInbox(0), newInbox(0)
	a := sdk(t, s, "alice", "phone", 0, func(c *client.Config) { c.OnMessage = inA.add }) // direct
	b := sdk(t, s, "bob", "phone", 0, via(px, inB))
	ctx := ctxT(t, 120*time.Second)

	const n = 600
	done := make(chan struct{})
	rebinds := make(chan error, 1)
	var count atomic.Int64
	go func() {
		defer close(rebinds)
		for i := 0; ; i++ {
			count.Add(1)
			var err error
			if i%4 == 3 {
				err = px.RebindTo([]string{"127.0.0.3", "127.0.0.1"}[i/4%2])
			} else {
				err = px.Rebind()
			}
			if err != nil {
				rebinds <- err
				return
			}
			select {
			case <-done:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	var toB, toA []client.SendResult
	var wg sync.WaitGroup
	wg.Go(func() { toB = sendMany(t, ctx, a, "bob", n, 8, "a") })
	wg.Go(func() { toA = sendMany(t, ctx, b, "alice", n/2, 4, "b") })
	wg.Wait()
	close(done)
	if err := <-rebinds; err != nil {
		t.Fatal(err)
	}
	if count.Load() < 5 {
		t.Fatalf("only %d rebinds during the exchange", count.Load())
	}
	checkReceived(t, "bob", inB.wait(t, n+n/2, 60*time.Second), toB)
	checkReceived(t, "alice", inA.wait(t, n+n/2, 60*time.Second), toA)
	st := b.Stats()
	if st.Connects != 1 || st.Reconnects != 0 || st.Handshakes != 1 || st.Notifies == 0 {
		t.Fatalf("bob's session did not survive the rebinding as one connection: %+v", st)
	}
	if ps := px.Stats(); ps.Down.Dropped.Rebound == 0 && ps.Up.Dropped.Rebound == 0 {
		t.Logf("no packet hit an old NAT port (%+v)", ps)
	}
}

// TestLossyNetwork: 20 clients behind 10% loss both ways, 50 ms RTT ± 10 ms
// jitter and reordering send to each other; every message arrives exactly
// once, in seq order in every mailbox. Issue #3 acceptance #3. The default
// run sends 1,000 messages in all; -long sends 1,000 per client.
func TestLossyNetwork(t *testing.T) {
	const clients = 20
	perClient := 50
	if *long {
		perClient = 1000
	}
	s := testserver.Start(t, testserver.Options{})
	link := netsim.Link{Delay: 25 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.10, Reorder: 0.05}
	px := newProxy(t, s.Addr, link, link)
	ctx := ctxT(t, 30*time.Minute)
	type peer struct {
		name string
		c    *client.Client
		in   *inbox
	}
	peers := make([]*peer, clients)
	for i := range peers {
		p := &peer{name: fmt.Sprintf("u%02d", i), in: newInbox(0)}
		p.c = sdk(t, s, p.name, "phone", 0, via(px, p.in, func(c *client.Config) { c.RequestTimeout = 20 * time.Second }))
		peers[i] = p
	}
	sent := make([][][]client.SendResult, clients) // sent[to] = results from each sender
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			// Round-robin over the others, 4 sends in flight.
			for r := 0; r < clients-1; r++ {
				to := (i + 1 + r) % clients
				k := perClient / (clients - 1)
				if r < perClient%(clients-1) {
					k++
				}
				if k == 0 {
					continue
				}
				res := sendMany(t, ctx, p.c, peers[to].name, k, 4, fmt.Sprintf("%s>%s", p.name, peers[to].name))
				mu.Lock()
				sent[to] = append(sent[to], res)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for i, p := range peers {
		in := 0
		for _, rs := range sent[i] {
			in += len(rs)
		}
		total += in
		checkReceived(t, p.name, p.in.wait(t, in+perClient, 5*time.Minute), sent[i]...)
	}
	ps := px.Stats()
	t.Logf("%d messages; proxy dropped %d of %d packets up and %d of %d down", total,
		ps.Up.Dropped.Loss, ps.Up.Packets, ps.Down.Dropped.Loss, ps.Down.Packets)
	if total != clients*perClient || ps.Up.Dropped.Loss == 0 || ps.Down.Dropped.Loss == 0 {
		t.Fatalf("%d messages sent, want %d; losses %d/%d", total, clients*perClient, ps.Up.Dropped.Loss, ps.Down.Dropped.Loss)
	}
}

// TestBlackhole: the network disappears (a tunnel, a lift) while messages
// keep arriving for the device; when it comes back the client resumes or
// reconnects by itself and catches up. Issue #3 acceptance #4. The default
// run scales the outage and the client's timers down together (keepalive
// 15s → 1s, dead-path timeout 8s → 1s); -long adds the real 30 s outage
// with the default timers.
func TestBlackhole(t *testing.T) {
	cases := []struct {
		name               string
		outage             time.Duration
		keepalive, deadFor time.Duration
		wantDead           bool
		long               bool
	}{
		{"shorter than the dead-path timeout", 2 * time.Second, time.Second, 4 * time.Second, false, false},
		{"scaled 30s", 4 * time.Second, time.Second, time.Second, true, false},
		{"real 30s", 30 * time.Second, 0, 0, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && !*long {
				t.Skip("needs -long")
			}
			s := testserver.Start(t, testserver.Options{})
			link := netsim.Link{Delay: 25 * time.Millisecond}
			px := newProxy(t, s.Addr, link, link)
			a := sdk(t, s, "alice", "phone", 0, nil)
			inB := newInbox(0)
			b := sdk(t, s, "bob", "phone", 0, via(px, inB, func(c *client.Config) {
				c.DeadPathTimeout = tc.deadFor
				c.ReconnectMax = 2 * time.Second
				if tc.keepalive > 0 {
					c.QUIC = &quicConfig{KeepAlivePeriod: tc.keepalive}
				}
			}))
			ctx := ctxT(t, tc.outage+3*time.Minute)
			before := sendMany(t, ctx, a, "bob", 10, 1, "before")
			inB.wait(t, 10, 20*time.Second)

			px.Blackhole(tc.outage)
			start := time.Now()
			var during []client.SendResult
			for time.Since(start) < tc.outage-200*time.Millisecond {
				during = append(during, sendMany(t, ctx, a, "bob", 1, 1, fmt.Sprintf("during%d", len(during)))...)
				time.Sleep(tc.outage / 20)
			}
			got := inB.wait(t, 10+len(during), tc.outage+2*time.Minute)
			t.Logf("caught up %v after the outage ended; bob %+v", time.Since(start)-tc.outage, b.Stats())
			checkReceived(t, "bob", got, before, during)
			st := b.Stats()
			if tc.wantDead && st.DeadPaths == 0 {
				t.Fatalf("the outage outlasted the dead-path timeout but no dead path was seen: %+v", st)
			}
			if !tc.wantDead && (st.Reconnects != 0 || st.DeadPaths != 0) {
				t.Fatalf("a short outage broke the connection: %+v", st)
			}
		})
	}
}

// TestZeroRTTRoundTrips: on a 50 ms RTT link, a resumed reconnect gets its
// first Sync answer one round trip sooner than a full handshake. Round trips
// are counted by the proxy (causal depth), not timed. Issue #3 acceptance #5.
func TestZeroRTTRoundTrips(t *testing.T) {
	dir := t.TempDir()
	secrets, err := edge.LoadOrCreateSecrets(dir + "/secret")
	if err != nil {
		t.Fatal(err)
	}
	s := testserver.Start(t, testserver.Options{Dir: dir, Core: core.Config{AckMode: core.AckDevice}, QUIC: edge.QUICOptions{Secrets: secrets}})
	link := netsim.Link{Delay: 25 * time.Millisecond}
	px := newProxy(t, s.Addr, link, link)
	a := sdk(t, s, "alice", "phone", 0, nil)
	sendMany(t, ctxT(t, 10*time.Second), a, "bob", 1, 1, "hello")
	waitHead(t, s, "bob", 1)

	cache := tls.NewLRUClientSessionCache(4)
	measure := func(device string) (int, client.Stats) {
		t.Helper()
		px.ResetRoundTrips()
		var rt atomic.Int64
		first := make(chan struct{})
		var once sync.Once
		c := sdk(t, s, "bob", device, 0, via(px, nil, func(c *client.Config) {
			tc := s.ClientTLS()
			tc.ClientSessionCache = cache
			c.TLS = tc
			c.OnMessage = func(client.Message) {
				once.Do(func() { rt.Store(int64(px.RoundTrips())); close(first) })
			}
		}))
		select {
		case <-first:
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
		}
		st := c.Stats()
		// Keep the session ticket: it arrives after the handshake.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, ok := cache.Get("localhost"); ok || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		c.Close()
		return int(rt.Load()), st
	}
	full, fst := measure("phone1")
	resumed, rst := measure("phone2")
	t.Logf("first Sync answer after %d round trips with a full handshake, %d with 0-RTT", full, resumed)
	if fst.Handshakes != 1 || fst.Used0RTT != 0 || rst.Resumed != 1 || rst.Used0RTT != 1 {
		t.Fatalf("handshakes: full %+v, resumed %+v", fst, rst)
	}
	if full != 2 || resumed != 1 {
		t.Fatalf("round trips to the first Sync answer: full handshake %d, 0-RTT %d; want 2 and 1", full, resumed)
	}
}

// TestZeroRTTAcrossRestartAndRejection: tickets survive an edge restart
// (same transport secret), and a server that refuses 0-RTT still serves the
// client, which repeats its Hello in 1-RTT.
func TestZeroRTTAcrossRestartAndRejection(t *testing.T) {
	dir := t.TempDir()
	secrets, err := edge.LoadOrCreateSecrets(dir + "/secret")
	if err != nil {
		t.Fatal(err)
	}
	opts := testserver.Options{Dir: dir, QUIC: edge.QUICOptions{Secrets: secrets}}
	s1, err := testserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Listen = s1.Addr
	in := newInbox(0)
	b := sdk(t, s1, "bob", "phone", 0, func(c *client.Config) {
		c.OnMessage = in.add
		c.ReconnectMin, c.ReconnectMax = 10*time.Millisecond, 100*time.Millisecond
	})
	deliver := func(s *testserver.Server, n int) {
		t.Helper()
		c, err := rawDial(s, "alice", fmt.Sprint("laptop", n))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if resp, err := c.Send(ctxT(t, 10*time.Second), fmt.Sprint("m", n), "bob", []byte("x")); err != nil || resp.GetError() != nil {
			t.Fatalf("send: %v %v", resp, err)
		}
		in.wait(t, n, 20*time.Second)
	}
	deliver(s1, 1)
	time.Sleep(200 * time.Millisecond) // let the session ticket arrive

	s1.Close()
	s2, err := testserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	deliver(s2, 2)
	if st := b.Stats(); st.Used0RTT != 1 {
		t.Fatalf("after a restart with the same secret: %+v, want one 0-RTT reconnect", st)
	}
	time.Sleep(200 * time.Millisecond)
	s2.Close()

	opts.QUIC.Disable0RTT = true
	s3, err := testserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	deliver(s3, 3)
	if st := b.Stats(); st.Rejected0RTT != 1 || st.Connects != 3 {
		t.Fatalf("against a server refusing 0-RTT: %+v, want one rejection and a working session", st)
	}
}

// TestTakeoverHalfOpen: the device's old connection is half-open (its
// network vanished without a word) when the same device connects again; the
// new session replaces it at once and notifies go to the new one. When the
// old client's network comes back it learns it was replaced — from the
// server's close, or, once the server has forgotten the connection, by being
// refused when it tries to resume its session — and stops instead of taking
// the device back. Issue #3 acceptance #6.
func TestTakeoverHalfOpen(t *testing.T) {
	dir := t.TempDir()
	secrets, err := edge.LoadOrCreateSecrets(dir + "/secret")
	if err != nil {
		t.Fatal(err)
	}
	s := testserver.Start(t, testserver.Options{Dir: dir, QUIC: edge.QUICOptions{Secrets: secrets}})
	px := newProxy(t, s.Addr, netsim.Link{Delay: 5 * time.Millisecond}, netsim.Link{Delay: 5 * time.Millisecond})
	var replaced atomic.Bool
	old := sdk(t, s, "bob", "phone", 0, via(px, newInbox(0), func(c *client.Config) {
		c.DeadPathTimeout = time.Second
		c.QUIC = &quicConfig{KeepAlivePeriod: time.Second} // so that it notices soon
		c.OnEvent = func(e client.Event) {
			if e.Kind == client.EventReplaced {
				replaced.Store(true)
			}
		}
	}))
	px.SetBlackhole(true)

	in := newInbox(0)
	sdk(t, s, "bob", "phone", 0, func(c *client.Config) { c.OnMessage = in.add })
	a := sdk(t, s, "alice", "phone", 0, nil)
	sent := sendMany(t, ctxT(t, 10*time.Second), a, "bob", 5, 1, "x")
	checkReceived(t, "bob's new session", in.wait(t, 5, 10*time.Second), sent)
	if n := s.Core.Sessions(); n != 2 {
		t.Fatalf("%d sessions; want bob's new one and alice's", n)
	}

	px.SetBlackhole(false)
	deadline := time.Now().Add(30 * time.Second)
	for !replaced.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var we *wire.Error
	if !replaced.Load() || !asWire(old.Err(), &we) || we.ErrorCode() != wire.CodeSessionReplaced {
		t.Fatalf("old client: replaced=%v err=%v, want it stopped with SESSION_REPLACED", replaced.Load(), old.Err())
	}
	more := sendMany(t, ctxT(t, 10*time.Second), a, "bob", 1, 1, "after")
	checkReceived(t, "bob's new session", in.wait(t, 6, 10*time.Second), sent, more)
}

// TestZeroRTTAfterOutage: reconnect attempts that fail while the network is
// gone must not cost the client its session ticket (crypto/tls drops a
// ticket whenever a resuming handshake fails); when the network returns the
// client reconnects with 0-RTT.
func TestZeroRTTAfterOutage(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	link := netsim.Link{Delay: 10 * time.Millisecond}
	px := newProxy(t, s.Addr, link, link)
	a := sdk(t, s, "alice", "laptop", 0, nil)
	cache := tls.NewLRUClientSessionCache(4)
	in := newInbox(0)
	b := sdk(t, s, "bob", "phone", 0, via(px, in, func(c *client.Config) {
		tc := s.ClientTLS()
		tc.ClientSessionCache = cache
		c.TLS = tc
		c.RequestTimeout = 500 * time.Millisecond // a dial gives up after 1 s
		c.DeadPathTimeout = 300 * time.Millisecond
		c.QUIC = &quicConfig{KeepAlivePeriod: 100 * time.Millisecond}
		c.ReconnectMin, c.ReconnectMax = 50*time.Millisecond, 200*time.Millisecond
	}))
	ctx := ctxT(t, 60*time.Second)
	sendMany(t, ctx, a, "bob", 1, 1, "before")
	in.wait(t, 1, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := cache.Get("localhost"); ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	px.Blackhole(3 * time.Second)
	time.Sleep(500 * time.Millisecond)
	during := sendMany(t, ctx, a, "bob", 1, 1, "during")
	checkReceived(t, "bob", in.wait(t, 2, 30*time.Second), during)
	st := b.Stats()
	t.Logf("%+v", st)
	if st.Dials < st.Connects+1 {
		t.Fatalf("no reconnect attempt failed during the outage: %+v", st)
	}
	if st.Used0RTT < 1 {
		t.Fatalf("the reconnect after the outage did not use 0-RTT: %+v", st)
	}
}

// TestDatagramCounters: the SDK's DatagramsOut and DatagramsIn (what the
// reconnect-storm bench reports per reconnect) match, exactly, the
// datagrams a clean proxy read from the client and delivered to it, once
// the connection is quiet.
func TestDatagramCounters(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	px := newProxy(t, s.Addr, netsim.Link{}, netsim.Link{})
	inB := newInbox(0)
	a := sdk(t, s, "alice", "phone", 0, via(px, nil))
	sdk(t, s, "bob", "phone", 0, func(c *client.Config) { c.OnMessage = inB.add })
	ctx := ctxT(t, 30*time.Second)
	sent := sendMany(t, ctx, a, "bob", 50, 4, "a")
	checkReceived(t, "bob", inB.wait(t, 50, 10*time.Second), sent)

	// Quiet: ACKs of the last packets are the last datagrams; the counts
	// must meet within a few seconds (keepalives are 15s apart).
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, ps := a.Stats(), px.Stats()
		if st.DatagramsOut == uint64(ps.Up.Packets) && st.DatagramsIn == uint64(ps.Down.Delivered) && ps.Down.Queued == 0 && ps.Up.Queued == 0 {
			if st.DatagramsOut < 10 || st.DatagramsIn < 10 {
				t.Fatalf("too few datagrams for a handshake and 50 sends: %+v", st)
			}
			t.Logf("alice: %d datagrams out, %d in", st.DatagramsOut, st.DatagramsIn)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client counted out %d / in %d; proxy read %d from it and delivered %d to it", st.DatagramsOut, st.DatagramsIn, ps.Up.Packets, ps.Down.Delivered)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
