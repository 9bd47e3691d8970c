package e2e

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/rawclient"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/wire"
)

// notify reads c's session stream up to the next Notify.
func notify(t *testing.T, c *rawclient.Conn) *wire.Notify {
	t.Helper()
	for {
		down, err := c.ReadSession()
		if err != nil {
			t.Fatal(err)
		}
		if n := down.GetNotify(); n != nil {
			return n
		}
	}
}

// TestInlineNotify: a capability-3 session gets small new entries inside
// the Notify; an older session, and a message over the inline bound, get a
// bare Notify and pull.
func TestInlineNotify(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := ctxT(t, 30*time.Second)
	newer := raw(t, s, "alice", "phone", 0)
	older := rawHello(t, s, "alice", "tablet", &wire.Hello{CapabilityVersion: 2})
	bob := raw(t, s, "bob", "phone", 0)

	if resp, err := bob.Send(ctx, "m1", "alice", []byte("hi")); err != nil || resp.GetSend() == nil {
		t.Fatalf("send: %v %v", resp, err)
	}
	n := notify(t, newer)
	if n.GetSeq() != 1 || len(n.GetEntries()) != 1 {
		t.Fatalf("capability 3: %v, want seq 1 with its entry", n)
	}
	if e := n.GetEntries()[0]; e.GetSeq() != 1 || string(e.GetBody()) != "hi" || e.GetFrom() != "bob" || e.GetFromDevice() != "phone" || len(e.GetId()) != 16 {
		t.Fatalf("inline entry %v", e)
	}
	if n := notify(t, older); n.GetSeq() != 1 || len(n.GetEntries()) != 0 {
		t.Fatalf("capability 2: %v, want a bare notify", n)
	}

	big := bytes.Repeat([]byte("x"), 4096) // over the default 2,048-byte bound
	if resp, err := bob.Send(ctx, "m2", "alice", big); err != nil || resp.GetSend() == nil {
		t.Fatalf("send: %v %v", resp, err)
	}
	if n := notify(t, newer); n.GetSeq() != 2 || len(n.GetEntries()) != 0 {
		t.Fatalf("large message: %v, want a bare notify", n)
	}
	// After a bare Notify the next one cannot continue the client's seq
	// from what it was sent inline: it carries only entries above 2.
	if resp, err := bob.Send(ctx, "m3", "alice", []byte("again")); err != nil || resp.GetSend() == nil {
		t.Fatalf("send: %v %v", resp, err)
	}
	if n := notify(t, newer); n.GetSeq() != 3 || len(n.GetEntries()) != 1 || n.GetEntries()[0].GetSeq() != 3 {
		t.Fatalf("after a bare notify: %v, want seq 3 with entry 3", n)
	}
}

// TestInlineDelivery: an SDK device that is caught up gets a stream of
// small messages from the Notifies alone, in order, without a Sync.
func TestInlineDelivery(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := ctxT(t, 30*time.Second)
	a := sdk(t, s, "alice", "laptop", 0, nil)
	b := sdk(t, s, "bob", "phone", 0, nil)
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := b.Stats()
	const n = 20
	for i := 1; i <= n; i++ {
		body := fmt.Sprintf("m%02d", i)
		if _, err := a.Send(ctx, "bob", []byte(body)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-b.Messages():
			if string(m.Body) != body || m.Seq != uint64(i) {
				t.Fatalf("got seq %d %q, want %d %q", m.Seq, m.Body, i, body)
			}
		case <-ctx.Done():
			t.Fatalf("message %d not delivered", i)
		}
	}
	after := b.Stats()
	if got := after.Inline - before.Inline; got != n {
		t.Errorf("%d messages taken inline, want %d", got, n)
	}
	if got := after.Syncs - before.Syncs; got != 0 {
		t.Errorf("%d Syncs while caught up, want 0", got)
	}
	// What was taken inline is acknowledged (lazily).
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := s.Store.Cursor(ctx, "bob", "phone")
		if err != nil {
			t.Fatal(err)
		}
		if cur >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's cursor %d, want %d", cur, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAnsweredOwnSends: capability 4. A send's answer stands for the Notify
// of the sender's own new entry on that connection: no Notify is written
// for it there, while the user's other devices and a sender below
// capability 4 get theirs. A Notify that a later entry brings still
// carries the answered entry inline when the client was not told of it
// otherwise.
func TestAnsweredOwnSends(t *testing.T) {
	m := newCounters()
	s := testserver.Start(t, testserver.Options{Metrics: m})
	ctx := ctxT(t, 30*time.Second)
	phone := raw(t, s, "alice", "phone", 0) // capability 4 (wire.CapabilityVersion)
	tablet := raw(t, s, "alice", "tablet", 0)
	older := rawHello(t, s, "alice", "laptop", &wire.Hello{CapabilityVersion: 3})
	bob := raw(t, s, "bob", "phone", 0)

	// alice/phone sends twice: answered, no Notify on its connection.
	for i, id := range []string{"p1", "p2"} {
		resp, err := phone.Send(ctx, id, "bob", []byte(id))
		if err != nil || resp.GetSend().GetSeq() != uint64(i+1) {
			t.Fatalf("send %s: %v %v", id, resp, err)
		}
	}
	// Her other devices are told, the one below capability 4 too.
	for _, c := range []*rawclient.Conn{tablet, older} {
		deadline := time.Now().Add(10 * time.Second)
		for n := notify(t, c); n.GetSeq() < 2; n = notify(t, c) {
			if time.Now().After(deadline) {
				t.Fatal("no Notify of seq 2")
			}
		}
	}
	// A message from bob: the phone's Notify carries only bob's entry (its
	// answers told it 1 and 2).
	if resp, err := bob.Send(ctx, "b1", "alice", []byte("hi")); err != nil || resp.GetSend() == nil {
		t.Fatalf("send: %v %v", resp, err)
	}
	if n := notify(t, phone); n.GetSeq() != 3 || len(n.GetEntries()) != 1 || n.GetEntries()[0].GetFrom() != "bob" {
		t.Fatalf("phone's first Notify: %v, want seq 3 with bob's entry alone", n)
	}
	if got := m.get(edge.MetricNotifiesAnswered, ""); got != 3 { // the phone's two and bob's own
		t.Errorf("edge_notifies_answered_total %v, want 3", got)
	}
}

// TestOwnSendsWithoutNotifies: an SDK client gets its own sends, in order,
// from their answers alone, however many run at once (answers come out of
// order), without a Sync or a Notify.
func TestOwnSendsWithoutNotifies(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := ctxT(t, 30*time.Second)
	var mu sync.Mutex
	var got []client.Message
	a := sdk(t, s, "alice", "laptop", 0, func(c *client.Config) {
		c.OnMessage = func(m client.Message) {
			mu.Lock()
			got = append(got, m)
			mu.Unlock()
		}
	})
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := a.Stats()
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := a.Send(ctx, "bob", []byte(fmt.Sprint(w, "/", i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == workers*each {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d own messages handed over, want %d", n, workers*each)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, m := range got {
		if m.Seq != uint64(i+1) || !m.Mine || m.From != "alice" || m.To != "bob" || m.ClientMsgID == "" || m.ID == (client.MessageID{}) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	after := a.Stats()
	if after.Syncs != before.Syncs || after.Notifies != before.Notifies {
		t.Errorf("%d Syncs and %d Notifies for own sends, want none", after.Syncs-before.Syncs, after.Notifies-before.Notifies)
	}
	// The mailbox holds the same entries.
	stored, err := s.Store.Entries(ctx, "alice", 0, 1000, 0)
	if err != nil || len(stored) != len(got) {
		t.Fatalf("%d entries stored (%v), %d handed over", len(stored), err, len(got))
	}
	for i, e := range stored {
		m := got[i]
		if uint64(e.Seq) != m.Seq || string(e.Body) != string(m.Body) || string(e.ClientMsgID) != m.ClientMsgID ||
			e.SentAt.UnixMilli() != m.SentAt.UnixMilli() || e.ID != core.MessageID(m.ID) || string(e.To) != m.To || string(e.FromDevice) != m.FromDevice {
			t.Fatalf("entry %d: stored %+v, taken from the answer %+v", i, e, m)
		}
	}
}
