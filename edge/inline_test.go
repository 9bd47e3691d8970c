package edge

import (
	"testing"

	"github.com/ternhq/tern/core"
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
