package edge

import (
	"testing"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/wire"
)

func TestInlineRun(t *testing.T) {
	c := &conn{inline: 10}
	// s is a Notify's arguments: head seq and the entry that made it.
	s := func(seq core.Seq, body string) (core.Seq, *core.Entry) {
		return seq, &core.Entry{Seq: seq, Body: []byte(body)}
	}
	c.Notify(s(6, "bb"))
	c.Notify(s(5, "aa")) // out of order, as concurrent appends notify
	c.Notify(s(8, "dd"))
	run := c.inlineRun(4, 6)
	if len(run) != 2 || run[0].GetSeq() != 5 || run[1].GetSeq() != 6 || string(run[1].GetBody()) != "bb" {
		t.Fatalf("run (4, 6]: %v", run)
	}
	if len(c.pending) != 1 || c.pending[0].Seq != 8 || c.pendingN != 2 {
		t.Fatalf("kept after the run: %v (%d bytes), want seq 8 only", c.pending, c.pendingN)
	}
	if run := c.inlineRun(6, 8); run != nil {
		t.Fatalf("run (6, 8] without 7: %v, want none", run)
	}
	if c.pending != nil {
		t.Fatalf("kept %v, want nothing at or below 8", c.pending)
	}

	// The byte bound drops the oldest; an entry over it is not kept.
	c.Notify(s(9, "1234"))
	c.Notify(s(10, "5678"))
	c.Notify(s(11, "90ab")) // 12 bytes > 10: 9 goes
	if run := c.inlineRun(9, 11); len(run) != 2 || run[0].GetSeq() != 10 {
		t.Fatalf("run (9, 11]: %v", run)
	}
	c.Notify(s(12, "this body is too long"))
	if c.pending != nil {
		t.Fatalf("kept an entry over the bound: %v", c.pending)
	}

	// A client below capability 3 keeps nothing; nor at or below sent.
	old := &conn{}
	old.Notify(s(1, "x"))
	c.sent = 20
	c.Notify(s(20, "x"))
	if old.pending != nil || c.pending != nil {
		t.Fatal("kept an entry it must not")
	}
}

// TestAnsweredOwnEntries: capability 4 bookkeeping. An entry made by a send
// in flight on the connection raises the head without a flush; an answer
// that is written moves what the client was told past it; one that fails
// flushes, so that a Notify tells the client after all.
func TestAnsweredOwnEntries(t *testing.T) {
	newConn := func() *conn {
		return &conn{s: &Server{m: core.NopMetrics{}}, answers: true, open: true, stopped: true, inline: 100,
			id: Identity{User: "alice", Device: "phone"}}
	}
	own := func(seq core.Seq, id string) (core.Seq, *core.Entry) {
		return seq, &core.Entry{Seq: seq, From: "alice", FromDevice: "phone", ClientMsgID: core.ClientMsgID(id), Body: []byte("b")}
	}
	send := func(id string) *wire.Request {
		return &wire.Request{Req: &wire.Request_Send{Send: &wire.SendRequest{ClientMsgId: id}}}
	}
	answer := func(seq uint64) *wire.Response {
		return &wire.Response{Resp: &wire.Response_Send{Send: &wire.SendResponse{Seq: seq}}}
	}

	c := newConn()
	c.beginSends(send("m1"))
	c.Notify(own(1, "m1"))
	if c.dirty || c.notifySeq.Load() != 1 {
		t.Fatalf("own entry: dirty %v, head %d; want no flush, head 1", c.dirty, c.notifySeq.Load())
	}
	c.endSends(send("m1"), answer(1), true)
	if c.sent != 1 || c.dirty || len(c.sending) != 0 {
		t.Fatalf("answered: sent %d, dirty %v, sending %v; want 1, false, none", c.sent, c.dirty, c.sending)
	}

	// The same entry from another device's send, or with the send no
	// longer in flight: a Notify as usual.
	c.Notify(own(2, "m1"))
	if !c.dirty {
		t.Fatal("an entry of no send in flight here: no flush")
	}

	// An answer that could not be written: flush.
	c = newConn()
	c.beginSends(send("m2"))
	c.Notify(own(1, "m2"))
	c.endSends(send("m2"), answer(1), false)
	if !c.dirty || c.sent != 0 {
		t.Fatalf("failed answer: dirty %v, sent %d; want a flush, sent 0", c.dirty, c.sent)
	}

	// Answers out of order: sent moves only over what continues it.
	c = newConn()
	c.beginSends(send("a"))
	c.beginSends(send("b"))
	c.Notify(own(1, "a"))
	c.Notify(own(2, "b"))
	c.endSends(send("b"), answer(2), true)
	if c.sent != 0 {
		t.Fatalf("answer 2 before 1: sent %d, want 0", c.sent)
	}
	if run := c.inlineRun(c.sent, 2); len(run) != 2 {
		t.Fatalf("a Notify now would carry %d entries, want both", len(run))
	}
}
