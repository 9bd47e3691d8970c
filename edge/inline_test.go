package edge

import (
	"testing"

	"github.com/ternhq/tern/core"
)

func TestInlineRun(t *testing.T) {
	c := &conn{inline: 10}
	e := func(seq core.Seq, body string) *core.Entry { return &core.Entry{Seq: seq, Body: []byte(body)} }
	c.keep(e(6, "bb"))
	c.keep(e(5, "aa")) // out of order, as concurrent appends notify
	c.keep(e(8, "dd"))
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
	c.keep(e(9, "1234"))
	c.keep(e(10, "5678"))
	c.keep(e(11, "90ab")) // 12 bytes > 10: 9 goes
	if run := c.inlineRun(9, 11); len(run) != 2 || run[0].GetSeq() != 10 {
		t.Fatalf("run (9, 11]: %v", run)
	}
	c.keep(e(12, "this body is too long"))
	if c.pending != nil {
		t.Fatalf("kept an entry over the bound: %v", c.pending)
	}

	// A client below capability 3 keeps nothing; nor at or below sent.
	old := &conn{}
	old.keep(e(1, "x"))
	c.sent = 20
	c.keep(e(20, "x"))
	if old.pending != nil || c.pending != nil {
		t.Fatal("kept an entry it must not")
	}
}
