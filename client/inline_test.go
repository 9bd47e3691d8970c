package client

import (
	"slices"
	"testing"

	"github.com/ternhq/tern/wire"
)

func TestOfferInline(t *testing.T) {
	es := func(seqs ...uint64) []*wire.Entry {
		out := make([]*wire.Entry, len(seqs))
		for i, s := range seqs {
			out[i] = &wire.Entry{Seq: s}
		}
		return out
	}
	seqs := func(c *Client) []uint64 {
		var out []uint64
		for _, e := range c.offered {
			out = append(out, e.GetSeq())
		}
		return out
	}
	var c Client
	for _, step := range []struct {
		offer []uint64
		want  []uint64
	}{
		{[]uint64{5, 6}, []uint64{5, 6}},
		{[]uint64{7}, []uint64{5, 6, 7}},                 // continues: appended
		{[]uint64{6, 7, 8}, []uint64{5, 6, 7, 8}},        // overlaps: the new part appended
		{[]uint64{7}, []uint64{5, 6, 7, 8}},              // nothing new
		{[]uint64{10, 11}, []uint64{5, 6, 7, 8, 10, 11}}, // after a gap: kept, for the gap to fill
		{[]uint64{12, 14}, []uint64{5, 6, 7, 8, 10, 11}}, // not contiguous: ignored
		{nil, []uint64{5, 6, 7, 8, 10, 11}},              // none
		{[]uint64{9}, []uint64{5, 6, 7, 8, 9, 10, 11}},   // fills the gap (an answer out of order)
		{[]uint64{3, 4, 5}, []uint64{3, 4, 5, 6, 7, 8, 9, 10, 11}},
	} {
		c.offerInline(es(step.offer...))
		if got := seqs(&c); !slices.Equal(got, step.want) {
			t.Fatalf("after offering %v: %v, want %v", step.offer, got, step.want)
		}
	}
}

// TestOwnEntryGap: a send's answer announces an own entry above a gap that
// no answer fills (here an entry stored without a Notify, as when the
// answer of an earlier send was lost with its connection). The client
// takes nothing past the gap, then pulls it after gapWait.
func TestOwnEntryGap(t *testing.T) {
	f := newFakeServer(t)
	f.answersOnly = true
	alice := dial(t, f.testConfig(t, "alice/phone"))
	f.do(func(f *fakeServer) {
		b := f.box("alice")
		b.entries = append(b.entries, &wire.Entry{Seq: 1, Id: make([]byte, 16), From: "alice", FromDevice: "phone", To: "bob", Body: []byte("lost answer"), ClientMsgId: "x"})
	})
	res, err := alice.Send(testCtx(t), "bob", []byte("answered"))
	if err != nil || res.Seq != 2 {
		t.Fatalf("send: %+v %v", res, err)
	}
	got := recv(t, alice, 2)
	if string(got[0].Body) != "lost answer" || string(got[1].Body) != "answered" || got[1].ClientMsgID != res.ClientMsgID {
		t.Fatalf("got %+v", got)
	}
	if st := alice.Stats(); st.Syncs == 0 || st.Notifies != 0 {
		t.Fatalf("stats %+v: want the gap pulled, without a Notify", st)
	}
}
