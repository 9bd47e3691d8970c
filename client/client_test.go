package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/wire"
)

// testWriter sends logs to t.Log until the test ends.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a client config for token against f, fast to retry.
func (f *fakeServer) testConfig(t testing.TB, token string) Config {
	return Config{
		Addr:           f.addr,
		LocalAddr:      "127.0.0.1:0",
		TLS:            &tls.Config{RootCAs: f.roots},
		Token:          token,
		StateDir:       t.TempDir(),
		Logger:         testLogger(t),
		ReconnectMin:   5 * time.Millisecond,
		ReconnectMax:   100 * time.Millisecond,
		RequestTimeout: 3 * time.Second,
	}
}

func dial(t testing.TB, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recv reads n messages from c.Messages().
func recv(t testing.TB, c *Client, n int) []Message {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	var out []Message
	for len(out) < n {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatalf("Messages closed after %d of %d", len(out), n)
			}
			out = append(out, m)
		case <-timer.C:
			t.Fatalf("got %d of %d messages", len(out), n)
		}
	}
	return out
}

// expectNone syncs c and checks that no message is waiting.
func expectNone(t testing.TB, c *Client) {
	t.Helper()
	if err := c.Sync(testCtx(t)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	select {
	case m := <-c.Messages():
		t.Fatalf("unexpected message seq %d", m.Seq)
	default:
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkSeqs checks that msgs carry the seqs from, from+1, ...
func checkSeqs(t testing.TB, msgs []Message, from uint64) {
	t.Helper()
	for i, m := range msgs {
		if want := from + uint64(i); m.Seq != want {
			t.Fatalf("message %d has seq %d, want %d", i, m.Seq, want)
		}
	}
}

// events records a client's events.
type events struct {
	mu  sync.Mutex
	evs []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *events) of(kind EventKind) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.evs {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

func TestSendReceive(t *testing.T) {
	f := newFakeServer(t)
	alice := dial(t, f.testConfig(t, "alice/phone"))
	bob := dial(t, f.testConfig(t, "bob/phone"))
	if alice.User() != "alice" || alice.Device() != "phone" {
		t.Fatalf("identity %q/%q", alice.User(), alice.Device())
	}

	res, err := alice.Send(testCtx(t), "bob", []byte("hi bob"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Seq != 1 || res.Duplicate || res.ClientMsgID == "" || res.ID == (MessageID{}) {
		t.Fatalf("send result %+v", res)
	}

	got := recv(t, bob, 1)[0]
	if got.Seq != 1 || got.From != "alice" || got.FromDevice != "phone" || got.To != "bob" ||
		string(got.Body) != "hi bob" || got.ID != res.ID || got.Mine || got.ClientMsgID != "" ||
		got.SentAt.UnixMilli() != res.SentAt.UnixMilli() {
		t.Fatalf("bob got %+v", got)
	}
	own := recv(t, alice, 1)[0]
	if !own.Mine || own.ClientMsgID != res.ClientMsgID || own.Seq != res.Seq || own.ID != res.ID {
		t.Fatalf("alice's own copy %+v", own)
	}

	waitFor(t, "bob's seq saved and acknowledged", func() bool {
		return bob.Seq() == 1 && f.cursor("bob", "phone") == 1
	})
	if st := bob.Stats(); st.Notifies == 0 || st.Messages != 1 || st.Connects != 1 || st.Handshakes != 1 {
		t.Fatalf("bob's stats %+v", st)
	}
	if st := alice.Stats(); st.Sends != 1 || st.SendRetries != 0 {
		t.Fatalf("alice's stats %+v", st)
	}
	f.do(func(f *fakeServer) {
		h := f.hellos[0]
		if h.GetCapabilityVersion() != wire.CapabilityVersion || h.GetClientVersion() != "tern-go/"+Version {
			t.Errorf("hello %v", h)
		}
	})
}

func TestPagination(t *testing.T) {
	f := newFakeServer(t)
	f.do(func(f *fakeServer) { f.limit = 50 })
	f.appendN("bob", 400)
	cfg := f.testConfig(t, "bob/phone")
	cfg.SyncLimit = 37
	bob := dial(t, cfg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 6 {
			f.appendN("bob", 100)
		}
	}()
	msgs := recv(t, bob, 1000)
	<-done
	checkSeqs(t, msgs, 1)
	for _, m := range msgs {
		if binary.BigEndian.Uint64(m.Body) != m.Seq {
			t.Fatalf("seq %d carries the body of %d", m.Seq, binary.BigEndian.Uint64(m.Body))
		}
	}
	expectNone(t, bob)
	if bob.Seq() != 1000 {
		t.Fatalf("Seq = %d", bob.Seq())
	}
	if st := bob.Stats(); st.Syncs < 1000/37 || st.Messages != 1000 {
		t.Fatalf("stats %+v", st)
	}
	f.do(func(f *fakeServer) {
		for _, s := range f.syncs {
			if s.GetLimit() != 37 {
				t.Fatalf("sync asked for limit %d", s.GetLimit())
			}
		}
	})
}

// The worked example of DESIGN.md, on the client side: at 100 with the
// server at 150 the client gets 101..150 and stores 150; then 151..200. In
// account mode a second device that reports 120 after the server confirmed
// 150 gets 151..200, never 121..150.
func TestWorkedExample(t *testing.T) {
	t.Run("one device", func(t *testing.T) {
		f := newFakeServer(t)
		f.appendN("bob", 150)
		store := NewMemorySeqStore(100)
		cfg := f.testConfig(t, "bob/phone")
		cfg.SeqStore = store
		bob := dial(t, cfg)
		checkSeqs(t, recv(t, bob, 50), 101)
		waitFor(t, "seq 150 stored", func() bool { seq, _ := store.Load(); return seq == 150 })
		f.appendN("bob", 50)
		checkSeqs(t, recv(t, bob, 50), 151)
		waitFor(t, "seq 200 acknowledged", func() bool { return f.cursor("bob", "phone") == 200 })
		f.do(func(f *fakeServer) {
			if got := f.hellos[0].GetSeqCli(); got != 100 {
				t.Errorf("hello reported seq %d, want 100", got)
			}
		})
	})
	t.Run("account mode, second device", func(t *testing.T) {
		f := newFakeServer(t)
		f.do(func(f *fakeServer) { f.account = true })
		f.appendN("bob", 150)
		cfg := f.testConfig(t, "bob/phone")
		cfg.SeqStore = NewMemorySeqStore(100)
		phone := dial(t, cfg)
		checkSeqs(t, recv(t, phone, 50), 101)
		waitFor(t, "150 acknowledged", func() bool {
			var acked uint64
			f.do(func(f *fakeServer) { acked = f.box("bob").acked })
			return acked == 150
		})
		phone.Close()

		f.appendN("bob", 50)
		var evs events
		cfg = f.testConfig(t, "bob/tablet")
		cfg.SeqStore = NewMemorySeqStore(120)
		cfg.OnEvent = evs.add
		tablet := dial(t, cfg)
		checkSeqs(t, recv(t, tablet, 50), 151)
		expectNone(t, tablet)
		if tablet.Seq() != 200 || len(evs.of(EventResync)) != 0 {
			t.Fatalf("seq %d, resyncs %+v", tablet.Seq(), evs.of(EventResync))
		}
	})
}

func TestSeqPersistedAcrossRestarts(t *testing.T) {
	f := newFakeServer(t)
	dir := t.TempDir()
	cfg := f.testConfig(t, "bob/phone")
	cfg.StateDir = dir
	f.appendN("bob", 10)

	c1 := dial(t, cfg)
	checkSeqs(t, recv(t, c1, 10), 1)
	waitFor(t, "seq 10 saved", func() bool { return c1.Seq() == 10 })
	c1.Close()
	if _, ok := <-c1.Messages(); ok {
		t.Fatal("Messages not closed by Close")
	}
	b, err := os.ReadFile(filepath.Join(dir, "bob@phone.seq"))
	if err != nil || string(b) != "10\n" {
		t.Fatalf("seq file %q, %v", b, err)
	}

	f.appendN("bob", 5)
	c2 := dial(t, cfg)
	checkSeqs(t, recv(t, c2, 5), 11)
	expectNone(t, c2)
	if c2.Seq() != 15 {
		t.Fatalf("Seq = %d", c2.Seq())
	}
}

func TestResync(t *testing.T) {
	t.Run("below floor", func(t *testing.T) {
		f := newFakeServer(t)
		f.appendN("bob", 100)
		f.trim("bob", 50)
		var evs events
		store := NewMemorySeqStore(10)
		cfg := f.testConfig(t, "bob/phone")
		cfg.SeqStore = store
		cfg.OnEvent = evs.add
		bob := dial(t, cfg)
		checkSeqs(t, recv(t, bob, 51), 50)
		expectNone(t, bob)
		rs := evs.of(EventResync)
		if len(rs) != 1 || rs[0].OldSeq != 10 || rs[0].NewSeq != 49 {
			t.Fatalf("resync events %+v", rs)
		}
		if seq, _ := store.Load(); seq != 100 || bob.Stats().Resyncs != 1 {
			t.Fatalf("stored seq %d, stats %+v", seq, bob.Stats())
		}
	})
	t.Run("ahead of head", func(t *testing.T) {
		f := newFakeServer(t)
		f.appendN("bob", 5)
		var evs events
		cfg := f.testConfig(t, "bob/phone")
		cfg.SeqStore = NewMemorySeqStore(500)
		cfg.OnEvent = evs.add
		bob := dial(t, cfg)
		waitFor(t, "resync", func() bool { return len(evs.of(EventResync)) == 1 })
		if ev := evs.of(EventResync)[0]; ev.OldSeq != 500 || ev.NewSeq != 5 {
			t.Fatalf("resync %+v", ev)
		}
		f.appendN("bob", 1)
		checkSeqs(t, recv(t, bob, 1), 6)
	})
}

func TestSendRetryKeepsClientMsgID(t *testing.T) {
	t.Run("lost response", func(t *testing.T) {
		f := newFakeServer(t)
		f.do(func(f *fakeServer) { f.dropSends = 1 })
		alice := dial(t, f.testConfig(t, "alice/phone"))
		res, err := alice.SendWith(testCtx(t), SendOptions{ClientMsgID: "m-1", To: "bob", Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Duplicate || res.ClientMsgID != "m-1" || res.Seq != 1 {
			t.Fatalf("result %+v", res)
		}
		f.do(func(f *fakeServer) {
			if !slices.Equal(f.sendIDs, []string{"m-1", "m-1"}) {
				t.Errorf("server saw client_msg_ids %q", f.sendIDs)
			}
		})
		if f.head("bob") != 1 || f.head("alice") != 1 {
			t.Fatalf("stored %d/%d times", f.head("bob"), f.head("alice"))
		}
		if st := alice.Stats(); st.SendRetries != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("generated id", func(t *testing.T) {
		f := newFakeServer(t)
		f.do(func(f *fakeServer) { f.dropSends = 2 })
		alice := dial(t, f.testConfig(t, "alice/phone"))
		res, err := alice.Send(testCtx(t), "bob", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		f.do(func(f *fakeServer) {
			if len(f.sendIDs) != 3 || f.sendIDs[0] != res.ClientMsgID || f.sendIDs[1] != res.ClientMsgID || f.sendIDs[2] != res.ClientMsgID {
				t.Errorf("server saw client_msg_ids %q, result %q", f.sendIDs, res.ClientMsgID)
			}
		})
	})
	t.Run("retry codes", func(t *testing.T) {
		f := newFakeServer(t)
		f.do(func(f *fakeServer) {
			f.failSends = []*wire.Error{
				{Code: uint32(wire.CodeRateLimited), RetryAfterMs: 40},
				wire.NewError(wire.CodeUnavailable, "busy"),
			}
		})
		alice := dial(t, f.testConfig(t, "alice/phone"))
		start := time.Now()
		res, err := alice.Send(testCtx(t), "bob", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 40*time.Millisecond {
			t.Fatalf("retried after %v, before retry_after_ms", d)
		}
		if res.Duplicate || alice.Stats().SendRetries != 2 {
			t.Fatalf("result %+v, stats %+v", res, alice.Stats())
		}
	})
	t.Run("terminal code", func(t *testing.T) {
		f := newFakeServer(t)
		alice := dial(t, f.testConfig(t, "alice/phone"))
		bob := dial(t, f.testConfig(t, "bob/phone"))
		if err := bob.Block(testCtx(t), "alice"); err != nil {
			t.Fatal(err)
		}
		res, err := alice.Send(testCtx(t), "bob", []byte("x"))
		if errCode(err) != wire.CodeBlocked || res.ClientMsgID == "" {
			t.Fatalf("send to a blocker: %+v, %v", res, err)
		}
		if alice.Stats().SendRetries != 0 {
			t.Fatal("terminal error retried")
		}
		if err := bob.Unblock(testCtx(t), "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Send(testCtx(t), "bob", []byte("x")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("context", func(t *testing.T) {
		f := newFakeServer(t)
		f.do(func(f *fakeServer) {
			for range 1000 {
				f.failSends = append(f.failSends, wire.NewError(wire.CodeOverloaded, "busy"))
			}
		})
		alice := dial(t, f.testConfig(t, "alice/phone"))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := alice.Send(ctx, "bob", []byte("x"))
		if !errors.Is(err, context.DeadlineExceeded) || errCode(err) != wire.CodeOverloaded {
			t.Fatalf("err %v", err)
		}
	})
}

func TestReconnect(t *testing.T) {
	f := newFakeServer(t)
	var evs events
	cfg := f.testConfig(t, "bob/phone")
	cfg.OnEvent = evs.add
	bob := dial(t, cfg)
	alice := dial(t, f.testConfig(t, "alice/phone"))

	f.kick("bob", wire.CodeUnavailable)
	f.appendN("bob", 3)
	checkSeqs(t, recv(t, bob, 3), 1)
	waitFor(t, "reconnect", func() bool { return bob.Stats().Reconnects == 1 })
	if len(evs.of(EventDisconnected)) != 1 || len(evs.of(EventConnected)) != 2 {
		t.Fatalf("events %+v", evs.evs)
	}
	if got := errCode(evs.of(EventDisconnected)[0].Err); got != wire.CodeUnavailable {
		t.Fatalf("disconnect cause %v", evs.of(EventDisconnected)[0].Err)
	}

	// A send issued while disconnected waits for the next session.
	f.kick("alice", 0)
	res, err := alice.Send(testCtx(t), "bob", []byte("after kick"))
	if err != nil {
		t.Fatal(err)
	}
	if m := recv(t, bob, 1)[0]; m.ID != res.ID {
		t.Fatalf("bob got %+v", m)
	}
	f.do(func(f *fakeServer) {
		last := f.hellos[len(f.hellos)-1]
		if last.GetToken() == "bob/phone" && last.GetSeqCli() == 0 {
			t.Errorf("reconnect hello reported seq 0")
		}
	})
}

func TestGoAway(t *testing.T) {
	f := newFakeServer(t)
	var evs events
	cfg := f.testConfig(t, "bob/phone")
	cfg.OnEvent = evs.add
	bob := dial(t, cfg)
	f.goAway("bob", wire.CodeShuttingDown, 50*time.Millisecond)
	waitFor(t, "reconnect after goaway", func() bool { return len(evs.of(EventConnected)) == 2 })
	gas := evs.of(EventGoAway)
	if len(gas) != 1 || gas[0].Code != wire.CodeShuttingDown || gas[0].Delay < 50*time.Millisecond {
		t.Fatalf("goaway events %+v", gas)
	}
	cs := evs.of(EventConnected)
	if len(cs) != 2 || cs[0].Session == cs[1].Session {
		t.Fatalf("connected events %+v", cs)
	}
	if st := bob.Stats(); st.GoAways != 1 || st.Reconnects != 1 {
		t.Fatalf("stats %+v", st)
	}
	f.appendN("bob", 1)
	checkSeqs(t, recv(t, bob, 1), 1)
}

func TestSessionReplaced(t *testing.T) {
	f := newFakeServer(t)
	var evs events
	cfg := f.testConfig(t, "bob/phone")
	cfg.OnEvent = evs.add
	old := dial(t, cfg)
	dial(t, f.testConfig(t, "bob/phone")) // the same device again
	waitFor(t, "replaced", func() bool { return len(evs.of(EventReplaced)) == 1 })
	if errCode(old.Err()) != wire.CodeSessionReplaced {
		t.Fatalf("Err() = %v", old.Err())
	}
	if _, err := old.Send(testCtx(t), "alice", []byte("x")); errCode(err) != wire.CodeSessionReplaced {
		t.Fatalf("send after replacement: %v", err)
	}
	if err := old.Sync(testCtx(t)); errCode(err) != wire.CodeSessionReplaced {
		t.Fatalf("sync after replacement: %v", err)
	}
	if st := old.Stats(); st.Dials != 1 {
		t.Fatalf("replaced client reconnected: %+v", st)
	}
}

// ticketCache signals every session ticket the client stores.
type ticketCache struct {
	tls.ClientSessionCache
	puts chan struct{}
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	if cs != nil {
		select {
		case c.puts <- struct{}{}:
		default:
		}
	}
}

func TestZeroRTT(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rejected bool
	}{{"accepted", false}, {"rejected", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeServer(t)
			cache := &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), puts: make(chan struct{}, 1)}
			cfg := f.testConfig(t, "bob/phone")
			cfg.TLS.ClientSessionCache = cache
			bob := dial(t, cfg)
			select {
			case <-cache.puts:
			case <-time.After(5 * time.Second):
				t.Fatal("no session ticket")
			}
			if st := bob.Stats(); st.Handshakes != 1 || st.Resumed != 0 || st.Used0RTT != 0 {
				t.Fatalf("first connection: %+v", st)
			}
			f.appendN("bob", 3)
			checkSeqs(t, recv(t, bob, 3), 1)
			waitFor(t, "seq 3", func() bool { return bob.Seq() == 3 })

			if tc.rejected {
				f.restart(false)
			}
			f.appendN("bob", 2)
			f.kick("bob", 0)
			waitFor(t, "reconnect", func() bool { return bob.Stats().Connects == 2 })
			checkSeqs(t, recv(t, bob, 2), 4)
			st := bob.Stats()
			if st.Handshakes != 1 || st.Resumed != 1 {
				t.Fatalf("second connection: %+v", st)
			}
			f.do(func(f *fakeServer) {
				if tc.rejected {
					if st.Used0RTT != 0 || st.Rejected0RTT != 1 || f.conns0RTT != 0 {
						t.Errorf("stats %+v, server 0-RTT sessions %d", st, f.conns0RTT)
					}
					return
				}
				if st.Used0RTT != 1 || st.Rejected0RTT != 0 || f.conns0RTT != 1 {
					t.Errorf("stats %+v, server 0-RTT sessions %d", st, f.conns0RTT)
				}
				// The first Sync went with the Hello, in 0-RTT data.
				if f.syncs0RTT == 0 {
					t.Error("no Sync arrived in 0-RTT data")
				}
				if last := f.hellos[len(f.hellos)-1]; last.GetSeqCli() != 3 {
					t.Errorf("0-RTT hello reported %d", last.GetSeqCli())
				}
			})
		})
	}
}

// An app that keeps its TLS session cache across clients (or processes)
// says Hello in 0-RTT data on a client's first connection.
func TestZeroRTTSharedCache(t *testing.T) {
	f := newFakeServer(t)
	cache := &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), puts: make(chan struct{}, 1)}
	cfg := f.testConfig(t, "bob/phone")
	cfg.TLS.ClientSessionCache = cache
	first := dial(t, cfg)
	select {
	case <-cache.puts:
	case <-time.After(5 * time.Second):
		t.Fatal("no session ticket")
	}
	f.appendN("bob", 2)
	checkSeqs(t, recv(t, first, 2), 1)
	waitFor(t, "seq 2", func() bool { return first.Seq() == 2 })
	first.Close()

	f.appendN("bob", 1)
	second := dial(t, cfg)
	checkSeqs(t, recv(t, second, 1), 3)
	if st := second.Stats(); st.Handshakes != 0 || st.Resumed != 1 || st.Used0RTT != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTokens(t *testing.T) {
	t.Run("unauthenticated", func(t *testing.T) {
		f := newFakeServer(t)
		start := time.Now()
		_, err := Dial(testCtx(t), f.testConfig(t, "not a token"))
		if errCode(err) != wire.CodeUnauthenticated {
			t.Fatalf("err %v", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("terminal error retried")
		}
		f.do(func(f *fakeServer) {
			if len(f.hellos) != 1 {
				t.Errorf("%d hellos", len(f.hellos))
			}
		})
	})
	t.Run("expired without TokenFunc", func(t *testing.T) {
		f := newFakeServer(t)
		f.do(func(f *fakeServer) { f.tokenErrs["old"] = wire.NewError(wire.CodeTokenExpired, "expired") })
		_, err := Dial(testCtx(t), f.testConfig(t, "old"))
		if errCode(err) != wire.CodeTokenExpired {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("expired, TokenFunc refreshes", func(t *testing.T) {
		f := newFakeServer(t)
		f.do(func(f *fakeServer) { f.tokenErrs["old"] = wire.NewError(wire.CodeTokenExpired, "expired") })
		var mu sync.Mutex
		tokens := []string{"old", "bob/phone"}
		calls := 0
		cfg := f.testConfig(t, "")
		cfg.TokenFunc = func(context.Context) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			return tokens[min(calls-1, len(tokens)-1)], nil
		}
		bob := dial(t, cfg)
		if bob.User() != "bob" || calls != 2 {
			t.Fatalf("user %q after %d TokenFunc calls", bob.User(), calls)
		}
	})
	t.Run("expired twice", func(t *testing.T) {
		f := newFakeServer(t)
		f.do(func(f *fakeServer) { f.tokenErrs["old"] = wire.NewError(wire.CodeTokenExpired, "expired") })
		cfg := f.testConfig(t, "")
		cfg.TokenFunc = func(context.Context) (string, error) { return "old", nil }
		_, err := Dial(testCtx(t), cfg)
		if errCode(err) != wire.CodeTokenExpired {
			t.Fatalf("err %v", err)
		}
	})
}

func TestDialTimeout(t *testing.T) {
	// A socket that never answers.
	black, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer black.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, Config{Addr: black.LocalAddr().String(), Token: "t", SeqStore: &MemorySeqStore{}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
}

func TestGroups(t *testing.T) {
	f := newFakeServer(t)
	alice := dial(t, f.testConfig(t, "alice/phone"))
	bob := dial(t, f.testConfig(t, "bob/phone"))
	carol := dial(t, f.testConfig(t, "carol/phone"))
	ctx := testCtx(t)
	members, err := alice.CreateGroup(ctx, "g", "bob", "carol")
	if err != nil || !slices.Equal(members, []string{"alice", "bob", "carol"}) {
		t.Fatalf("create: %v, %v", members, err)
	}
	if _, err := alice.CreateGroup(ctx, "g"); errCode(err) != wire.CodeAlreadyExists {
		t.Fatalf("create twice: %v", err)
	}
	res, err := alice.SendGroup(ctx, "g", []byte("hello all"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{bob, carol} {
		if m := recv(t, c, 1)[0]; m.Group != "g" || m.ID != res.ID || m.From != "alice" {
			t.Fatalf("%s got %+v", c.User(), m)
		}
	}
	if members, err := bob.RemoveMembers(ctx, "g", "carol"); err != nil || !slices.Equal(members, []string{"alice", "bob"}) {
		t.Fatalf("remove: %v, %v", members, err)
	}
	if members, err := carol.AddMembers(ctx, "g", "dave"); err != nil || !slices.Equal(members, []string{"alice", "bob", "dave"}) {
		t.Fatalf("add: %v, %v", members, err)
	}
	if members, err := bob.Members(ctx, "g"); err != nil || len(members) != 3 {
		t.Fatalf("members: %v, %v", members, err)
	}
	if _, err := bob.Members(ctx, "nope"); errCode(err) != wire.CodeNotFound {
		t.Fatalf("members of a missing group: %v", err)
	}
	if _, err := alice.SendWith(ctx, SendOptions{To: "bob", Group: "g"}); err == nil {
		t.Fatal("send to a user and a group at once accepted")
	}
}

func TestSetAppState(t *testing.T) {
	f := newFakeServer(t)
	cfg := f.testConfig(t, "bob/phone")
	cfg.AppState = wire.AppState_APP_STATE_FOREGROUND
	bob := dial(t, cfg)
	if err := bob.SetAppState(testCtx(t), wire.AppState_APP_STATE_BACKGROUND); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "app state update", func() bool {
		var n int
		f.do(func(f *fakeServer) { n = len(f.appStates) })
		return n == 2
	})
	f.kick("bob", 0)
	waitFor(t, "reconnect", func() bool { return bob.Stats().Connects == 2 })
	f.do(func(f *fakeServer) {
		want := []wire.AppState{wire.AppState_APP_STATE_FOREGROUND, wire.AppState_APP_STATE_BACKGROUND, wire.AppState_APP_STATE_BACKGROUND}
		if !slices.Equal(f.appStates, want) {
			t.Errorf("app states %v", f.appStates)
		}
	})
}

func TestSwitchNetwork(t *testing.T) {
	f := newFakeServer(t)
	var evs events
	cfg := f.testConfig(t, "bob/phone")
	cfg.OnEvent = evs.add
	bob := dial(t, cfg)
	alice := dial(t, f.testConfig(t, "alice/phone"))
	if _, err := bob.Ack(testCtx(t), 0); err != nil {
		t.Fatal(err)
	}
	var before string
	f.do(func(f *fakeServer) { before = f.remotes["bob"] })

	if err := bob.SwitchNetwork(testCtx(t), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	res, err := alice.Send(testCtx(t), "bob", []byte("after the switch"))
	if err != nil {
		t.Fatal(err)
	}
	if m := recv(t, bob, 1)[0]; m.ID != res.ID {
		t.Fatalf("got %+v", m)
	}
	if _, err := bob.Ack(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	f.do(func(f *fakeServer) {
		if f.remotes["bob"] == before {
			t.Errorf("server still sees %s", before)
		}
	})
	if st := bob.Stats(); st.Migrations != 1 || st.Connects != 1 {
		t.Fatalf("stats %+v", st)
	}
	if ms := evs.of(EventMigrated); len(ms) != 1 || ms[0].Addr != f.remoteAddr("bob") {
		t.Fatalf("migrated events %+v, server sees %s", ms, f.remoteAddr("bob"))
	}

	// Later connections use the new socket.
	f.kick("bob", 0)
	waitFor(t, "reconnect", func() bool { return bob.Stats().Connects == 2 })
	if _, err := bob.Ack(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	if got := f.remoteAddr("bob"); got != evs.of(EventMigrated)[0].Addr {
		t.Fatalf("reconnected from %s", got)
	}
}

func TestSwitchNetworkFallback(t *testing.T) {
	f := newFakeServer(t)
	var evs events
	cfg := f.testConfig(t, "bob/phone")
	cfg.OnEvent = evs.add
	bob := dial(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the probe cannot succeed
	if err := bob.SwitchNetwork(ctx, "127.0.0.1:0"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	fails := evs.of(EventMigrationFailed)
	if len(fails) != 1 {
		t.Fatalf("events %+v", evs.evs)
	}
	waitFor(t, "reconnect", func() bool { return len(evs.of(EventConnected)) == 2 })
	if _, err := bob.Ack(testCtx(t), 0); err != nil {
		t.Fatal(err)
	}
	if got := f.remoteAddr("bob"); got != fails[0].Addr {
		t.Fatalf("reconnected from %s, want %s", got, fails[0].Addr)
	}
	if st := bob.Stats(); st.MigrationFailures != 1 || st.Migrations != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A token the server stops accepting stops the client at its next connect.
func TestStoppedOnTerminalReconnect(t *testing.T) {
	f := newFakeServer(t)
	var evs events
	cfg := f.testConfig(t, "bob/phone")
	cfg.OnEvent = evs.add
	bob := dial(t, cfg)
	f.do(func(f *fakeServer) { f.tokenErrs["bob/phone"] = wire.NewError(wire.CodeUnauthenticated, "revoked") })
	f.kick("bob", 0)
	waitFor(t, "stop", func() bool { return len(evs.of(EventStopped)) == 1 })
	if errCode(bob.Err()) != wire.CodeUnauthenticated || errCode(evs.of(EventStopped)[0].Err) != wire.CodeUnauthenticated {
		t.Fatalf("Err() = %v", bob.Err())
	}
	if _, err := bob.Send(testCtx(t), "alice", nil); errCode(err) != wire.CodeUnauthenticated {
		t.Fatalf("send: %v", err)
	}
}

func (f *fakeServer) remoteAddr(user string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.remotes[user]
}

func TestClose(t *testing.T) {
	f := newFakeServer(t)
	before := runtime.NumGoroutine()
	for range 3 {
		alice := dial(t, f.testConfig(t, "alice/phone"))
		bob := dial(t, f.testConfig(t, "bob/phone"))
		if _, err := alice.Send(testCtx(t), "bob", []byte("x")); err != nil {
			t.Fatal(err)
		}
		recv(t, bob, 1)
		if err := bob.SwitchNetwork(testCtx(t), "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		f.kick("alice", 0)
		alice.Close()
		bob.Close()
		bob.Close() // idempotent
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}

	alice := dial(t, f.testConfig(t, "alice/phone"))
	alice.Close()
	if _, err := alice.Send(testCtx(t), "bob", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if err := alice.Sync(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("sync after close: %v", err)
	}
}

func TestOnMessage(t *testing.T) {
	f := newFakeServer(t)
	f.appendN("bob", 20)
	var mu sync.Mutex
	var got []Message
	store := NewMemorySeqStore(0)
	cfg := f.testConfig(t, "bob/phone")
	cfg.SeqStore = store
	cfg.OnMessage = func(m Message) {
		mu.Lock()
		defer mu.Unlock()
		// The seq is saved only after the message is handed over.
		if seq, _ := store.Load(); seq >= m.Seq {
			t.Errorf("seq %d saved before message %d was handed over", seq, m.Seq)
		}
		got = append(got, m)
	}
	bob := dial(t, cfg)
	if bob.Messages() != nil {
		t.Fatal("Messages() with OnMessage set")
	}
	if err := bob.Sync(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	checkSeqs(t, got, 1)
	if len(got) != 20 || bob.Seq() != 20 {
		t.Fatalf("%d messages, seq %d", len(got), bob.Seq())
	}
}

func TestFileSeqStore(t *testing.T) {
	dir := t.TempDir()
	s := NewFileSeqStore(filepath.Join(dir, "sub", "x.seq"))
	if seq, err := s.Load(); err != nil || seq != 0 {
		t.Fatalf("missing file: %d, %v", seq, err)
	}
	for _, seq := range []uint64{1, 42, 1<<64 - 1} {
		if err := s.Save(seq); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Load(); err != nil || got != seq {
			t.Fatalf("saved %d, loaded %d, %v", seq, got, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "sub"))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := os.WriteFile(s.Path(), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil {
		t.Fatal("garbage loaded")
	}
}

func TestStateFileName(t *testing.T) {
	names := map[string]bool{}
	for _, ud := range [][2]string{{"a", "b"}, {"a@b", ""}, {"a", "@b"}, {"../x", "y"}, {"a/b", "c"}, {"a_b", "c"}, {"a%2Fb", "c"}} {
		n := stateFileName(ud[0], ud[1])
		if names[n] || filepath.Base(n) != n || n[0] == '.' {
			t.Fatalf("bad or colliding name %q for %q", n, ud)
		}
		names[n] = true
	}
	long := stateFileName(string(bytes.Repeat([]byte("é"), 128)), "d")
	if len(long) > 255 {
		t.Fatalf("name of %d bytes", len(long))
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no addr":  {Token: "t"},
		"no token": {Addr: "127.0.0.1:1"},
	} {
		if _, err := Dial(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestHandshakePatience: a dial waits for the server's first answer as long
// as a request waits for its answer (not quic-go's 5s), and an explicit
// setting wins.
func TestHandshakePatience(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want time.Duration
	}{
		{Config{Addr: "127.0.0.1:1", Token: "t"}, 10 * time.Second},
		{Config{Addr: "127.0.0.1:1", Token: "t", RequestTimeout: 3 * time.Second}, 3 * time.Second},
		{Config{Addr: "127.0.0.1:1", Token: "t", QUIC: &quic.Config{HandshakeIdleTimeout: time.Second}}, time.Second},
	} {
		cfg, err := c.cfg.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.quicConfig().HandshakeIdleTimeout; got != c.want {
			t.Errorf("HandshakeIdleTimeout %v, want %v", got, c.want)
		}
	}
}

var _ io.Writer = (*testWriter)(nil)

func unsignedJWT(user, device string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"EdDSA"}`)) + "." + enc([]byte(`{"sub":"`+user+`","dev":"`+device+`","exp":9999999999}`)) + "." + enc(make([]byte, 64))
}

// TestColdStartReportsStoredSeq: with the default file store and a JWT
// token, a new process reports its stored seq in its very first Hello.
func TestColdStartReportsStoredSeq(t *testing.T) {
	f := newFakeServer(t)
	cfg := f.testConfig(t, "")
	cfg.Token = unsignedJWT("bob", "phone")
	cfg.StateDir = t.TempDir()
	f.appendN("bob", 10)
	c1 := dial(t, cfg)
	checkSeqs(t, recv(t, c1, 10), 1)
	waitFor(t, "seq 10 saved", func() bool { return c1.Seq() == 10 })
	c1.Close()

	c2 := dial(t, cfg)
	defer c2.Close()
	f.mu.Lock()
	first, last := f.hellos[0].GetSeqCli(), f.hellos[len(f.hellos)-1].GetSeqCli()
	f.mu.Unlock()
	if first != 0 || last != 10 || c2.Seq() != 10 {
		t.Fatalf("hellos reported %d then %d, Seq() = %d; want 0, then 10 from the file", first, last, c2.Seq())
	}
	if u, d, ok := tokenIdentity("not.a.jwt"); ok {
		t.Fatalf("tokenIdentity accepted garbage: %q %q", u, d)
	}
}
