package client

import (
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
		{[]uint64{7}, []uint64{5, 6, 7}},          // continues: appended
		{[]uint64{6, 7, 8}, []uint64{5, 6, 7, 8}}, // overlaps: the new part appended
		{[]uint64{7}, []uint64{5, 6, 7, 8}},       // nothing new
		{[]uint64{10, 11}, []uint64{10, 11}},      // a gap: replaces
		{[]uint64{12, 14}, []uint64{10, 11}},      // not contiguous: ignored
		{nil, []uint64{10, 11}},                   // none
	} {
		c.offerInline(es(step.offer...))
		if got := seqs(&c); len(got) != len(step.want) || (len(got) > 0 && (got[0] != step.want[0] || got[len(got)-1] != step.want[len(step.want)-1])) {
			t.Fatalf("after offering %v: %v, want %v", step.offer, got, step.want)
		}
	}
}
