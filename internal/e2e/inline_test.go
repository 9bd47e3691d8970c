package e2e

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/ternhq/tern/internal/rawclient"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/wire"
)

// TestInlineNotify: a capability-3 session gets small new entries inside
// the Notify; an older session, and a message over the inline bound, get a
// bare Notify and pull.
func TestInlineNotify(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := ctxT(t, 30*time.Second)
	newer := raw(t, s, "alice", "phone", 0)
	older, err := rawclient.Connect(ctx, s.Addr, s.ClientTLS(), &wire.Hello{Token: s.Token("alice", "tablet"), CapabilityVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer older.Close()
	bob := raw(t, s, "bob", "phone", 0)
	notify := func(c *rawclient.Conn) *wire.Notify {
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

	if resp, err := bob.Send(ctx, "m1", "alice", []byte("hi")); err != nil || resp.GetSend() == nil {
		t.Fatalf("send: %v %v", resp, err)
	}
	n := notify(newer)
	if n.GetSeq() != 1 || len(n.GetEntries()) != 1 {
		t.Fatalf("capability 3: %v, want seq 1 with its entry", n)
	}
	if e := n.GetEntries()[0]; e.GetSeq() != 1 || string(e.GetBody()) != "hi" || e.GetFrom() != "bob" || e.GetFromDevice() != "phone" || len(e.GetId()) != 16 {
		t.Fatalf("inline entry %v", e)
	}
	if n := notify(older); n.GetSeq() != 1 || len(n.GetEntries()) != 0 {
		t.Fatalf("capability 2: %v, want a bare notify", n)
	}

	big := bytes.Repeat([]byte("x"), 4096) // over the default 2,048-byte bound
	if resp, err := bob.Send(ctx, "m2", "alice", big); err != nil || resp.GetSend() == nil {
		t.Fatalf("send: %v %v", resp, err)
	}
	if n := notify(newer); n.GetSeq() != 2 || len(n.GetEntries()) != 0 {
		t.Fatalf("large message: %v, want a bare notify", n)
	}
	// After a bare Notify the next one cannot continue the client's seq
	// from what it was sent inline: it carries only entries above 2.
	if resp, err := bob.Send(ctx, "m3", "alice", []byte("again")); err != nil || resp.GetSend() == nil {
		t.Fatalf("send: %v %v", resp, err)
	}
	if n := notify(newer); n.GetSeq() != 3 || len(n.GetEntries()) != 1 || n.GetEntries()[0].GetSeq() != 3 {
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
