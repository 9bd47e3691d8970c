package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/internal/rawclient"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/wire"
)

func waitHead(t *testing.T, s *testserver.Server, u string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		h, err := s.Store.Head(context.Background(), core.UserID(u))
		if err != nil {
			t.Fatal(err)
		}
		if uint64(h.Head) == want {
			return
		}
		if uint64(h.Head) > want || time.Now().After(deadline) {
			t.Fatalf("%s's mailbox head is %d, want %d", u, h.Head, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func sendN(t *testing.T, c *rawclient.Conn, to string, n int, tag string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	for i := 0; i < n; i++ {
		resp, err := c.Send(ctx, fmt.Sprintf("%s-%d", tag, i), to, []byte(fmt.Sprintf("%s %d", tag, i)))
		if err != nil {
			t.Fatal(err)
		}
		if e := resp.GetError(); e != nil {
			t.Fatalf("send %d: %v", i, e)
		}
	}
}

func syncPage(t *testing.T, c *rawclient.Conn, after uint64) *wire.SyncResponse {
	t.Helper()
	resp, err := c.Sync(ctxT(t, 10*time.Second), after, 0)
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.GetError(); e != nil {
		t.Fatalf("sync after %d: %v", after, e)
	}
	return resp.GetSync()
}

func span(es []*wire.Entry) (first, last uint64) {
	if len(es) == 0 {
		return 0, 0
	}
	for i := 1; i < len(es); i++ {
		if es[i].Seq != es[i-1].Seq+1 {
			panic(fmt.Sprintf("gap: %d then %d", es[i-1].Seq, es[i].Seq))
		}
	}
	return es[0].Seq, es[len(es)-1].Seq
}

// TestWorkedExample is DESIGN.md's worked example, over QUIC, with a raw
// protocol client so that exactly the seqs of the example are reported.
// Acceptance #1.
func TestWorkedExample(t *testing.T) {
	for _, mode := range []core.AckMode{core.AckAccount, core.AckDevice} {
		t.Run(mode.String(), func(t *testing.T) {
			s := testserver.Start(t, testserver.Options{Core: core.Config{AckMode: mode}})
			alice := raw(t, s, "alice", "laptop", 0)
			sendN(t, alice, "bob", 150, "a")
			waitHead(t, s, "bob", 150)

			// Phone 1 has stored 100; the server is at 150.
			p1 := raw(t, s, "bob", "phone1", 100)
			if w := p1.Welcome; w.SeqSvr != 150 || w.AckedSeq != 100 {
				t.Fatalf("phone1 welcome: seq_svr %d acked %d, want 150 and 100", w.SeqSvr, w.AckedSeq)
			}
			page := syncPage(t, p1, 100)
			if first, last := span(page.Entries); first != 101 || last != 150 || page.HasMore {
				t.Fatalf("phone1 gets %d..%d (has_more %v), want 101..150", first, last, page.HasMore)
			}
			// It stores 150 and reports it; the server confirms 150.
			resp, err := p1.Ack(ctxT(t, 5*time.Second), 150)
			if err != nil || resp.GetAck().GetAcked() != 150 {
				t.Fatalf("ack 150: %v, %v", resp, err)
			}

			// 50 more: phone 1 is notified of 200 and gets 151..200.
			sendN(t, alice, "bob", 50, "b")
			waitHead(t, s, "bob", 200)
			waitNotify(t, p1, 200)
			page = syncPage(t, p1, 150)
			if first, last := span(page.Entries); first != 151 || last != 200 {
				t.Fatalf("phone1 gets %d..%d, want 151..200", first, last)
			}

			// A second phone logs in reporting 120, after the server
			// confirmed 150.
			p2 := raw(t, s, "bob", "phone2", 120)
			page = syncPage(t, p2, 120)
			first, last := span(page.Entries)
			switch mode {
			case core.AckAccount:
				if p2.Welcome.AckedSeq != 150 || first != 151 || last != 200 || page.From != 150 {
					t.Fatalf("phone2: acked %d, gets %d..%d from %d; want acked 150, 151..200 from 150", p2.Welcome.AckedSeq, first, last, page.From)
				}
			case core.AckDevice:
				if p2.Welcome.AckedSeq != 120 || first != 121 || last != 200 || page.From != 120 {
					t.Fatalf("phone2: acked %d, gets %d..%d from %d; want acked 120, 121..200 from 120", p2.Welcome.AckedSeq, first, last, page.From)
				}
			}
		})
	}
}

// waitNotify reads session frames until a Notify for at least seq.
func waitNotify(t *testing.T, c *rawclient.Conn, seq uint64) {
	t.Helper()
	c.Session.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.Session.SetReadDeadline(time.Time{})
	for {
		m, err := c.ReadSession()
		if err != nil {
			t.Fatalf("waiting for notify %d: %v", seq, err)
		}
		if n := m.GetNotify(); n != nil && n.Seq >= seq {
			if n.Seq != seq {
				t.Fatalf("notify %d, want %d", n.Seq, seq)
			}
			return
		}
	}
}

// TestOfflineCatchUp: B is offline while A sends 500 messages; B connects and
// receives all 500, in order, exactly once, in several pages; a message sent
// while B is online arrives through a notify. Acceptance #2.
func TestOfflineCatchUp(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Core: core.Config{SyncLimit: 100}})
	a := sdk(t, s, "alice", "laptop", 0, nil)
	ctx := ctxT(t, 60*time.Second)
	var sent []client.SendResult
	for i := 0; i < 500; i++ {
		r, err := a.Send(ctx, "bob", []byte(fmt.Sprintf("m%03d", i)))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, r)
	}
	waitHead(t, s, "bob", 500)

	in := newInbox(0)
	b := sdk(t, s, "bob", "phone", 0, func(c *client.Config) { c.OnMessage = in.add })
	got := in.wait(t, 500, 30*time.Second)
	for i, m := range got {
		if m.ID != sent[i].ID || string(m.Body) != fmt.Sprintf("m%03d", i) || m.From != "alice" {
			t.Fatalf("message %d: %s %q from %s, want %s m%03d from alice", i, m.ID, m.Body, m.From, sent[i].ID, i)
		}
	}
	if st := b.Stats(); st.Syncs < 5 {
		t.Fatalf("%d sync requests for 500 messages in pages of 100, want at least 5", st.Syncs)
	}
	if _, err := a.Send(ctx, "bob", []byte("online")); err != nil {
		t.Fatal(err)
	}
	got = in.wait(t, 501, 10*time.Second)
	if string(got[500].Body) != "online" || b.Stats().Notifies == 0 {
		t.Fatalf("online message %q, notifies %d", got[500].Body, b.Stats().Notifies)
	}
}

// TestDedup: the client sends, the ack is lost (the client drops the
// response stream), the client resends the same client_msg_id: one entry,
// the same seq and id. Acceptance #3.
func TestDedup(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	alice := raw(t, s, "alice", "laptop", 0)
	ctx := ctxT(t, 20*time.Second)

	// Write the send and walk away without reading the answer.
	st, err := alice.QC.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &wire.Request{Req: &wire.Request_Send{Send: &wire.SendRequest{ClientMsgId: "dup-1", To: &wire.SendRequest_User{User: "bob"}, Body: []byte("once")}}}
	if err := wire.WriteFrame(st, req); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st.CancelRead(0)
	waitHead(t, s, "alice", 1)
	waitHead(t, s, "bob", 1)

	resp, err := alice.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again := resp.GetSend()
	if again == nil || !again.Duplicate || again.Seq != 1 {
		t.Fatalf("resend: %v, want a duplicate with seq 1", resp)
	}
	mine := syncPage(t, alice, 0).Entries
	if len(mine) != 1 || !bytes.Equal(mine[0].Id, again.Id) || mine[0].ClientMsgId != "dup-1" {
		t.Fatalf("alice's mailbox: %v", mine)
	}
	// The recipient has it once too.
	waitHead(t, s, "bob", 1)

	// The SDK's explicit-id path gives the same guarantee.
	c := sdk(t, s, "alice", "tablet", 0, nil)
	r1, err := c.SendWith(ctx, client.SendOptions{ClientMsgID: "dup-2", To: "bob", Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.SendWith(ctx, client.SendOptions{ClientMsgID: "dup-2", To: "bob", Body: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if r1.ID != r2.ID || r1.Seq != r2.Seq || r1.Duplicate || !r2.Duplicate {
		t.Fatalf("first %+v, second %+v", r1, r2)
	}
	waitHead(t, s, "bob", 2)
}

// TestRetentionResync: a sync below the retained floor gets RESYNC_NEEDED
// with the floor, never a silent gap; the SDK reports the gap and resumes.
// Acceptance #6.
func TestRetentionResync(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Core: core.Config{RetainCount: 10, AckMode: core.AckDevice}})
	alice := raw(t, s, "alice", "laptop", 0)
	sendN(t, alice, "bob", 25, "r")
	waitHead(t, s, "bob", 25)

	bob := raw(t, s, "bob", "phone", 0)
	if bob.Welcome.Floor != 16 || bob.Welcome.SeqSvr != 25 {
		t.Fatalf("welcome floor %d head %d, want 16 and 25", bob.Welcome.Floor, bob.Welcome.SeqSvr)
	}
	resp, err := bob.Sync(ctxT(t, 5*time.Second), 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := resp.GetError()
	if e == nil || e.ErrorCode() != wire.CodeResyncNeeded || e.Floor != 16 || e.Head != 25 {
		t.Fatalf("sync after 5: %v, want RESYNC_NEEDED with floor 16, head 25", resp)
	}
	page := syncPage(t, bob, 15)
	if first, last := span(page.Entries); first != 16 || last != 25 {
		t.Fatalf("sync after 15: %d..%d, want 16..25", first, last)
	}

	var mu sync.Mutex
	var gaps []client.Event
	in := newInbox(15)
	sdk(t, s, "bob", "tablet", 5, func(c *client.Config) {
		c.OnMessage = in.add
		c.OnEvent = func(e client.Event) {
			if e.Kind == client.EventResync {
				mu.Lock()
				gaps = append(gaps, e)
				mu.Unlock()
			}
		}
	})
	in.wait(t, 10, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(gaps) != 1 || gaps[0].OldSeq != 5 || gaps[0].NewSeq != 15 {
		t.Fatalf("resync events %+v, want one from 5 to 15", gaps)
	}
}

// TestGroupFanOut: one send to a group of 50 lands exactly once in every
// member's mailbox. Acceptance #5 (the crash variant is in crash_test.go).
func TestGroupFanOut(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Store: storageShards(4)})
	owner := sdk(t, s, "owner", "phone", 0, nil)
	ctx := ctxT(t, 30*time.Second)
	var members []string
	for i := 1; i < 50; i++ {
		members = append(members, fmt.Sprintf("member%02d", i))
	}
	got, err := owner.CreateGroup(ctx, "team", members...)
	if err != nil || len(got) != 50 {
		t.Fatalf("create group: %d members, %v", len(got), err)
	}
	res, err := owner.SendGroup(ctx, "team", []byte("hello team"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range append(members, "owner") {
		waitHead(t, s, m, 1)
		es, err := s.Store.Entries(ctx, core.UserID(m), 0, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 1 || es[0].ID != core.MessageID(res.ID) || es[0].Group != "team" {
			t.Fatalf("%s's mailbox: %+v", m, es)
		}
	}
	// And a member's device receives it through the normal path.
	in := newInbox(0)
	sdk(t, s, "member07", "phone", 0, func(c *client.Config) { c.OnMessage = in.add })
	if m := in.wait(t, 1, 10*time.Second)[0]; m.Group != "team" || string(m.Body) != "hello team" || m.From != "owner" {
		t.Fatalf("member07 got %+v", m)
	}
}
