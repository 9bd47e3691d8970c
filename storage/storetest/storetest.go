// Package storetest is the contract suite every core.Store implementation
// runs: the same test bodies over Badger and memory (storage/store_test.go).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
)

// Factory opens the stores under test.
type Factory struct {
	// Open opens the store kept in dir with shards shards: a fresh one
	// when dir is new, else the one opened there before.
	Open func(dir string, shards int) (core.Store, error)
	// Persistent says that a store reopened on the same dir sees what was
	// committed before; without it the reopen tests are skipped.
	Persistent bool
}

// AppliedIndexer is implemented by stores that report their applied index
// (storage.Store does); the suite checks it when present.
type AppliedIndexer interface {
	AppliedIndex(ctx context.Context, shard int) (uint64, error)
}

// Run runs the contract suite against f.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		run  func(t *testing.T, f Factory)
	}{
		{"SeqsGapFreeOneMailbox", testSeqsOneMailbox},
		{"SeqsGapFreeManyMailboxes", testSeqsManyMailboxes},
		{"Dedup", testDedup},
		{"InlineDeliveryAndOutbox", testInlineAndOutbox},
		{"DeliverBlocked", testDeliverBlocked},
		{"OutboxOrderAndDone", testOutboxOrder},
		{"Ack", testAck},
		{"RetainCount", testRetainCount},
		{"TrimByAge", testTrimByAge},
		{"Groups", testGroups},
		{"Blocks", testBlocks},
		{"BlocksSurviveReopen", testBlocksReopen},
		{"EntriesLimitAndMaxBytes", testEntriesLimits},
		{"FailingCommandsWriteNothing", testFailingCommands},
		{"OtherShardRefused", testOtherShardRefused},
		{"AppliedIndex", testAppliedIndex},
		{"Mailboxes", testMailboxes},
		{"CallbacksMayCallStore", testCallbacks},
		{"InvalidIDs", testInvalidIDs},
		{"Canceled", testCanceled},
		{"Close", testClose},
		{"Reopen", testReopen},
		{"ShardCountMismatch", testShardCountMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, f)
		})
	}
}

// open opens a fresh store with shards shards, closed at cleanup.
func open(t *testing.T, f Factory, shards int) core.Store {
	t.Helper()
	s, err := f.Open(t.TempDir(), shards)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// now is the current time at millisecond precision, as core's clock gives
// it. Tests use times near the wall clock because Badger expires dedup and
// delivery records by wall-clock time.
func now() time.Time { return time.UnixMilli(time.Now().UnixMilli()) }

// userIn returns a user id starting with prefix that lives in shard.
func userIn(prefix string, shard, shards int) core.UserID {
	for i := 0; ; i++ {
		u := core.UserID(fmt.Sprintf("%s-%d", prefix, i))
		if core.UserShard(u, shards) == shard {
			return u
		}
	}
}

// send is a SendCmd from u's device "phone" with a fresh message id.
func send(u core.UserID, cmid string, at time.Time, to ...core.UserID) *core.SendCmd {
	c := &core.SendCmd{
		Sender:      u,
		Device:      "phone",
		ClientMsgID: core.ClientMsgID(cmid),
		ID:          core.NewMessageID(at),
		Now:         at,
		Body:        []byte("hello " + cmid),
		DedupWindow: time.Hour,
	}
	if len(to) > 0 {
		c.To = to[0]
		c.Recipients = to
	}
	return c
}

func apply(t *testing.T, s core.Store, cmd core.Command) core.Result {
	t.Helper()
	r, err := s.Apply(context.Background(), cmd)
	if err != nil {
		t.Fatalf("apply %T: %v", cmd, err)
	}
	return r
}

func applyErr(t *testing.T, s core.Store, cmd core.Command, want error) {
	t.Helper()
	if _, err := s.Apply(context.Background(), cmd); !errors.Is(err, want) {
		t.Fatalf("apply %T: got error %v, want %v", cmd, err, want)
	}
}

func head(t *testing.T, s core.Store, u core.UserID) core.Head {
	t.Helper()
	h, err := s.Head(context.Background(), u)
	if err != nil {
		t.Fatalf("head of %s: %v", u, err)
	}
	return h
}

func entries(t *testing.T, s core.Store, u core.UserID, after core.Seq, limit, maxBytes int) []core.Entry {
	t.Helper()
	es, err := s.Entries(context.Background(), u, after, limit, maxBytes)
	if err != nil {
		t.Fatalf("entries of %s: %v", u, err)
	}
	return es
}

func seqs(es []core.Entry) []core.Seq {
	var out []core.Seq
	for _, e := range es {
		out = append(out, e.Seq)
	}
	return out
}

func seqRange(from, to core.Seq) []core.Seq {
	var out []core.Seq
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func outbox(t *testing.T, s core.Store, shard int) []core.OutboxItem {
	t.Helper()
	var items []core.OutboxItem
	if err := s.Outbox(context.Background(), shard, func(o core.OutboxItem) bool {
		items = append(items, o)
		return true
	}); err != nil {
		t.Fatalf("outbox: %v", err)
	}
	return items
}

// sameEntry reports how a differs from b, or "".
func sameEntry(a, b core.Entry) string {
	if a.Seq != b.Seq || a.ID != b.ID || a.From != b.From || a.FromDevice != b.FromDevice ||
		a.To != b.To || a.Group != b.Group || !bytes.Equal(a.Body, b.Body) ||
		!a.SentAt.Equal(b.SentAt) || a.ClientMsgID != b.ClientMsgID {
		return fmt.Sprintf("got %+v, want %+v", a, b)
	}
	return ""
}

// appendConcurrently runs workers goroutines that each apply the commands
// mk makes for them, n each, and returns every result by worker.
func appendConcurrently(t *testing.T, s core.Store, workers, n int, mk func(w, i int) core.Command) [][]core.Result {
	t.Helper()
	results := make([][]core.Result, workers)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range n {
				r, err := s.Apply(context.Background(), mk(w, i))
				if err != nil {
					errs <- fmt.Errorf("worker %d, command %d: %w", w, i, err)
					return
				}
				results[w] = append(results[w], r)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return results
}

func testSeqsOneMailbox(t *testing.T, f Factory) {
	s := open(t, f, 1)
	const workers, each = 64, 8
	u := core.UserID("alice")
	results := appendConcurrently(t, s, workers, each, func(w, i int) core.Command {
		c := send(u, fmt.Sprintf("m-%d-%d", w, i), now())
		c.Device = core.DeviceID(fmt.Sprintf("dev-%d", w))
		return c
	})
	ids := map[core.Seq]core.MessageID{}
	for w, rs := range results {
		last := core.Seq(0)
		for _, r := range rs {
			if _, dup := ids[r.Seq]; dup {
				t.Fatalf("seq %d given twice", r.Seq)
			}
			if r.Seq <= last {
				t.Fatalf("worker %d: seq %d after %d", w, r.Seq, last)
			}
			last = r.Seq
			ids[r.Seq] = r.ID
		}
	}
	const total = workers * each
	if h := head(t, s, u); h.Head != total || h.EffectiveFloor() != 1 {
		t.Fatalf("head %+v, want head %d floor 1", h, total)
	}
	es := entries(t, s, u, 0, 0, 0)
	if got, want := seqs(es), seqRange(1, total); !slices.Equal(got, want) {
		t.Fatalf("entries have seqs %v, want 1..%d", got, total)
	}
	for _, e := range es {
		if e.ID != ids[e.Seq] {
			t.Fatalf("entry %d has id %s, Apply returned %s", e.Seq, e.ID, ids[e.Seq])
		}
	}
}

func testSeqsManyMailboxes(t *testing.T, f Factory) {
	const shards, workers, each = 4, 64, 8
	s := open(t, f, shards)
	results := appendConcurrently(t, s, workers, each, func(w, i int) core.Command {
		return send(core.UserID(fmt.Sprintf("user-%d", w)), fmt.Sprint(i), now())
	})
	for w, rs := range results {
		u := core.UserID(fmt.Sprintf("user-%d", w))
		for i, r := range rs {
			if r.Seq != core.Seq(i+1) || r.Duplicate {
				t.Fatalf("%s: send %d got seq %d (duplicate %v), want %d", u, i, r.Seq, r.Duplicate, i+1)
			}
		}
		if h := head(t, s, u); h.Head != each {
			t.Fatalf("%s: head %d, want %d", u, h.Head, each)
		}
		if got := seqs(entries(t, s, u, 0, 0, 0)); !slices.Equal(got, seqRange(1, each)) {
			t.Fatalf("%s: seqs %v", u, got)
		}
	}
}

func testDedup(t *testing.T, f Factory) {
	s := open(t, f, 1)
	u := core.UserID("alice")
	t0 := now()
	first := apply(t, s, send(u, "c1", t0))
	if first.Duplicate || first.Seq != 1 {
		t.Fatalf("first send: %+v", first)
	}
	again := send(u, "c1", t0.Add(time.Minute)) // new message id, same client_msg_id
	r := apply(t, s, again)
	if !r.Duplicate || r.ID != first.ID || r.Seq != first.Seq || !r.SentAt.Equal(first.SentAt) {
		t.Fatalf("repeat within the window: %+v, want the first result %+v with Duplicate", r, first)
	}
	if h := head(t, s, u); h.Head != 1 {
		t.Fatalf("head %d after a duplicate, want 1", h.Head)
	}
	// Another device's same client_msg_id is another send.
	other := send(u, "c1", t0)
	other.Device = "laptop"
	if r := apply(t, s, other); r.Duplicate || r.Seq != 2 {
		t.Fatalf("other device: %+v", r)
	}
	// After the window the pair is new again.
	late := send(u, "c1", t0.Add(time.Hour+time.Millisecond))
	r = apply(t, s, late)
	if r.Duplicate || r.Seq != 3 || r.ID != late.ID {
		t.Fatalf("after the window: %+v, want a new entry at seq 3", r)
	}
	if r := apply(t, s, send(u, "c1", t0.Add(time.Hour+time.Second))); !r.Duplicate || r.ID != late.ID {
		t.Fatalf("repeat of the new send: %+v", r)
	}
}

func testInlineAndOutbox(t *testing.T, f Factory) {
	const shards = 4
	s := open(t, f, shards)
	a := userIn("a", 0, shards)
	b := userIn("b", 0, shards) // a's shard: delivered inline
	c := userIn("c", 1, shards) // another shard: through the outbox

	t0 := now()
	toB := send(a, "1", t0, b)
	r := apply(t, s, toB)
	if len(r.Outbox) != 0 || len(r.Grown) != 2 || r.Grown[1].User != b || r.Grown[1].Head != 1 || r.Grown[1].Entry == nil {
		t.Fatalf("inline send: %+v", r)
	}
	es := entries(t, s, b, 0, 0, 0)
	want := core.Entry{Seq: 1, ID: toB.ID, From: a, FromDevice: "phone", To: b, Body: toB.Body, SentAt: t0}
	if len(es) != 1 || sameEntry(es[0], want) != "" {
		t.Fatalf("b's mailbox: %+v, want [%+v]", es, want)
	}
	// An inline delivery writes no outbox item, so nothing can deliver it
	// again: it needs (and writes) no delivery marker.

	toC := send(a, "2", t0, c)
	r = apply(t, s, toC)
	if len(r.Outbox) != 1 || len(r.Grown) != 1 || head(t, s, c).Head != 0 {
		t.Fatalf("send to another shard: %+v", r)
	}
	items := outbox(t, s, 0)
	if len(items) != 1 || items[0].Recipient != c || items[0].Key() != r.Outbox[0].Key() ||
		!items[0].Created.Equal(t0) || items[0].Entry.Seq != 0 || items[0].Entry.ClientMsgID != "" {
		t.Fatalf("outbox: %+v, want the item %+v", items, r.Outbox[0])
	}
	if got := outbox(t, s, 1); len(got) != 0 {
		t.Fatalf("recipient's shard has outbox items: %+v", got)
	}

	deliver := &core.DeliverCmd{Item: items[0], Now: t0, DeliveryTTL: time.Hour}
	d := apply(t, s, deliver)
	if d.Duplicate || d.Seq != 1 || d.ID != toC.ID || len(d.Grown) != 1 {
		t.Fatalf("deliver: %+v", d)
	}
	if d2 := apply(t, s, deliver); !d2.Duplicate || d2.Seq != 1 {
		t.Fatalf("deliver again: %+v, want duplicate of seq 1", d2)
	}
	if h := head(t, s, c); h.Head != 1 {
		t.Fatalf("c's head %d after two deliveries, want 1", h.Head)
	}
	apply(t, s, &core.OutboxDoneCmd{Keys: []core.OutboxKey{items[0].Key()}})
	if got := outbox(t, s, 0); len(got) != 0 {
		t.Fatalf("outbox after done: %+v", got)
	}
	// Done for keys of two shards is refused and removes nothing.
	apply(t, s, send(a, "3", t0, c))
	left := outbox(t, s, 0)
	mixed := []core.OutboxKey{left[0].Key(), {Sender: c, Recipient: a}}
	applyErr(t, s, &core.OutboxDoneCmd{Keys: mixed}, core.ErrInvalid)
	if got := outbox(t, s, 0); len(got) != 1 {
		t.Fatalf("a refused done removed items: %+v", got)
	}
}

func testDeliverBlocked(t *testing.T, f Factory) {
	const shards = 2
	s := open(t, f, shards)
	a, c := userIn("a", 0, shards), userIn("c", 1, shards)
	apply(t, s, &core.BlockCmd{By: c, Who: a})
	r := apply(t, s, send(a, "1", now(), c))
	item := r.Outbox[0]
	d := apply(t, s, &core.DeliverCmd{Item: item, Now: now(), DeliveryTTL: time.Hour})
	if d.Seq != 0 || len(d.Grown) != 0 || head(t, s, c).Head != 0 {
		t.Fatalf("delivery to a blocker: %+v", d)
	}
	if d := apply(t, s, &core.DeliverCmd{Item: item, Now: now(), DeliveryTTL: time.Hour}); !d.Duplicate || d.Seq != 0 {
		t.Fatalf("repeated delivery to a blocker: %+v", d)
	}
}

func testOutboxOrder(t *testing.T, f Factory) {
	const shards = 2
	s := open(t, f, shards)
	sender := userIn("s", 0, shards)
	x, y, z := userIn("x", 1, shards), userIn("y", 1, shards), userIn("z", 1, shards)
	t0 := now()
	var sent []*core.SendCmd
	for i := range 3 {
		c := send(sender, fmt.Sprint(i), t0.Add(time.Duration(i)*time.Millisecond))
		c.To, c.Group, c.Recipients = "", "g", []core.UserID{z, x, y}
		apply(t, s, c)
		sent = append(sent, c)
	}
	items := outbox(t, s, 0)
	var got, want []core.OutboxKey
	for _, o := range items {
		got = append(got, o.Key())
	}
	for _, c := range sent { // ids sort by time, recipients by id
		for _, r := range []core.UserID{x, y, z} {
			want = append(want, core.OutboxKey{Sender: sender, ID: c.ID, Recipient: r})
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("outbox order:\n got %v\nwant %v", got, want)
	}
	if items[0].Entry.Group != "g" || items[0].Entry.To != "" {
		t.Fatalf("group item: %+v", items[0])
	}
	// Stopping early.
	n := 0
	if err := s.Outbox(context.Background(), 0, func(core.OutboxItem) bool { n++; return n < 4 }); err != nil || n != 4 {
		t.Fatalf("outbox stopped after %d items (err %v), want 4", n, err)
	}
	apply(t, s, &core.OutboxDoneCmd{Keys: want[:4]})
	if got := outbox(t, s, 0); len(got) != 5 || got[0].Key() != want[4] {
		t.Fatalf("after removing 4 items: %d left, first %v", len(got), got[0].Key())
	}
}

func testAck(t *testing.T, f Factory) {
	s := open(t, f, 1)
	u := core.UserID("alice")
	for i := range 3 {
		apply(t, s, send(u, fmt.Sprint(i), now()))
	}
	steps := []struct {
		device core.DeviceID
		seq    core.Seq
		mode   core.AckMode
		acked  core.Seq // Result.Acked
		cursor core.Seq // the device's cursor after
		head   core.Seq // Head.Acked after
	}{
		{"d1", 2, core.AckAccount, 2, 2, 2},
		{"d2", 1, core.AckAccount, 2, 1, 2},  // behind the account: account unchanged
		{"d1", 1, core.AckAccount, 2, 2, 2},  // never backwards
		{"d1", 10, core.AckAccount, 3, 3, 3}, // clamped to the head
		{"d2", 2, core.AckDevice, 2, 2, 3},
		{"d2", 1, core.AckDevice, 2, 2, 3},
		{"d3", 0, core.AckDevice, 0, 0, 3},
	}
	for i, st := range steps {
		r := apply(t, s, &core.AckCmd{User: u, Device: st.device, Seq: st.seq, Mode: st.mode})
		cur, err := s.Cursor(context.Background(), u, st.device)
		if err != nil {
			t.Fatal(err)
		}
		if r.Acked != st.acked || cur != st.cursor || head(t, s, u).Acked != st.head {
			t.Fatalf("step %d %+v: acked %d, cursor %d, head acked %d", i, st, r.Acked, cur, head(t, s, u).Acked)
		}
	}
}

func testRetainCount(t *testing.T, f Factory) {
	s := open(t, f, 1)
	u := core.UserID("alice")
	for i := range 5 {
		c := send(u, fmt.Sprint(i), now())
		c.RetainCount = 3
		apply(t, s, c)
	}
	if h := head(t, s, u); h.Head != 5 || h.Floor != 3 {
		t.Fatalf("head %+v, want head 5 floor 3", h)
	}
	if got := seqs(entries(t, s, u, 0, 0, 0)); !slices.Equal(got, []core.Seq{3, 4, 5}) {
		t.Fatalf("retained seqs %v, want [3 4 5]", got)
	}
}

func testTrimByAge(t *testing.T, f Factory) {
	s := open(t, f, 1)
	u := core.UserID("alice")
	t0 := now()
	for i := range 5 {
		apply(t, s, send(u, fmt.Sprint(i), t0.Add(time.Duration(i)*time.Second)))
	}
	r := apply(t, s, &core.TrimCmd{User: u, Before: t0.Add(2 * time.Second)})
	if r.Seq != 3 || head(t, s, u).Floor != 3 {
		t.Fatalf("trim before t0+2s: floor %d, head %+v; want 3", r.Seq, head(t, s, u))
	}
	if got := seqs(entries(t, s, u, 0, 0, 0)); !slices.Equal(got, []core.Seq{3, 4, 5}) {
		t.Fatalf("seqs after trim %v", got)
	}
	r = apply(t, s, &core.TrimCmd{User: u, Before: t0.Add(time.Hour), Max: 1})
	if r.Seq != 4 {
		t.Fatalf("trim of at most 1: floor %d, want 4", r.Seq)
	}
	if got := seqs(entries(t, s, u, 0, 0, 0)); !slices.Equal(got, []core.Seq{4, 5}) {
		t.Fatalf("seqs after second trim %v", got)
	}
}

func testGroups(t *testing.T, f Factory) {
	s := open(t, f, 2)
	ctx := context.Background()
	g := core.GroupID("team")
	owner, m1, m2, x, y := core.UserID("owner"), core.UserID("amy"), core.UserID("bob"), core.UserID("xena"), core.UserID("yuri")
	t0 := now()
	members := func() []core.UserID {
		t.Helper()
		ms, err := s.Members(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	meta := func() core.GroupMeta {
		t.Helper()
		m, ok, err := s.Group(ctx, g)
		if err != nil || !ok {
			t.Fatalf("group: %v, exists %v", err, ok)
		}
		return m
	}

	r := apply(t, s, &core.CreateGroupCmd{Group: g, Owner: owner, Members: []core.UserID{m2, m1}, Now: t0, MaxSize: 4})
	if !slices.Equal(r.Members, []core.UserID{owner, m2, m1}) {
		t.Fatalf("created with %v", r.Members)
	}
	if m := meta(); m.Owner != owner || m.Members != 3 || !m.Created.Equal(t0) {
		t.Fatalf("meta %+v", m)
	}
	if got := members(); !slices.Equal(got, []core.UserID{m1, m2, owner}) {
		t.Fatalf("members %v, want id order", got)
	}
	applyErr(t, s, &core.CreateGroupCmd{Group: g, Owner: x, Now: t0}, core.ErrGroupExists)
	applyErr(t, s, &core.AddMembersCmd{Group: g, By: x, Members: []core.UserID{y}}, core.ErrNotMember)
	applyErr(t, s, &core.AddMembersCmd{Group: "nope", By: owner, Members: []core.UserID{y}}, core.ErrNoSuchGroup)
	// Over the size limit at the second member: nothing is written.
	applyErr(t, s, &core.AddMembersCmd{Group: g, By: m1, Members: []core.UserID{x, y}, MaxSize: 4}, core.ErrGroupTooLarge)
	if ok, _ := s.IsMember(ctx, g, x); ok || meta().Members != 3 {
		t.Fatalf("a refused add wrote: x member %v, meta %+v", ok, meta())
	}
	r = apply(t, s, &core.AddMembersCmd{Group: g, By: m1, Members: []core.UserID{x, m2}, MaxSize: 4})
	if !slices.Equal(r.Members, []core.UserID{x}) || meta().Members != 4 {
		t.Fatalf("add: %v, meta %+v", r.Members, meta())
	}
	applyErr(t, s, &core.RemoveMembersCmd{Group: g, By: m1, Members: []core.UserID{m2}}, core.ErrForbidden)
	applyErr(t, s, &core.RemoveMembersCmd{Group: g, By: owner, Members: []core.UserID{owner}}, core.ErrForbidden)
	apply(t, s, &core.RemoveMembersCmd{Group: g, By: m1, Members: []core.UserID{m1}})
	apply(t, s, &core.RemoveMembersCmd{Group: g, By: owner, Members: []core.UserID{x, y}})
	if got := members(); !slices.Equal(got, []core.UserID{m2, owner}) || meta().Members != 2 {
		t.Fatalf("after removals: members %v, meta %+v", got, meta())
	}
	for u, want := range map[core.UserID]bool{owner: true, m2: true, m1: false, x: false} {
		if ok, err := s.IsMember(ctx, g, u); err != nil || ok != want {
			t.Fatalf("IsMember(%s) = %v, %v; want %v", u, ok, err, want)
		}
	}
	if _, ok, err := s.Group(ctx, "nope"); ok || err != nil {
		t.Fatalf("unknown group: exists %v, err %v", ok, err)
	}
	if ms, err := s.Members(ctx, "nope"); len(ms) != 0 || err != nil {
		t.Fatalf("members of an unknown group: %v, %v", ms, err)
	}
}

func testBlocks(t *testing.T, f Factory) {
	const shards = 2
	s := open(t, f, shards)
	ctx := context.Background()
	a, b := userIn("a", 0, shards), userIn("b", 0, shards)
	blocks := func(by, who core.UserID) bool {
		t.Helper()
		ok, err := s.Blocks(ctx, by, who)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	apply(t, s, &core.BlockCmd{By: b, Who: a})
	if !blocks(b, a) || blocks(a, b) {
		t.Fatalf("after b blocks a: b→a %v, a→b %v", blocks(b, a), blocks(a, b))
	}
	applyErr(t, s, send(a, "1", now(), b), core.ErrBlocked)
	if h := head(t, s, a); h.Head != 0 {
		t.Fatalf("a blocked send wrote the sender's mailbox: %+v", h)
	}
	apply(t, s, &core.BlockCmd{By: b, Who: a, Unblock: true})
	if blocks(b, a) {
		t.Fatal("still blocked after unblock")
	}
	if r := apply(t, s, send(a, "1", now(), b)); r.Seq != 1 || head(t, s, b).Head != 1 {
		t.Fatalf("send after unblock: %+v", r)
	}
}

// testBlocksReopen: blocks made before a restart still hold after it, in
// both shards, for the committed-state read and for a send's check, and
// blocks made after it and after an unblock too.
func testBlocksReopen(t *testing.T, f Factory) {
	if !f.Persistent {
		t.Skip("the store is not persistent")
	}
	const shards = 2
	dir := t.TempDir()
	ctx := context.Background()
	a, b := userIn("a", 0, shards), userIn("b", 0, shards)
	c, d := userIn("c", 1, shards), userIn("d", 1, shards)
	s, err := f.Open(dir, shards)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, &core.BlockCmd{By: b, Who: a})
	apply(t, s, &core.BlockCmd{By: d, Who: c})
	apply(t, s, &core.BlockCmd{By: d, Who: a})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = f.Open(dir, shards)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range [][2]core.UserID{{b, a}, {d, c}, {d, a}} {
		if ok, err := s.Blocks(ctx, p[0], p[1]); !ok || err != nil {
			t.Fatalf("after reopen: %s blocks %s = %v, %v", p[0], p[1], ok, err)
		}
	}
	if ok, err := s.Blocks(ctx, a, b); ok || err != nil {
		t.Fatalf("a blocks b = %v, %v", ok, err)
	}
	applyErr(t, s, send(a, "1", now(), b), core.ErrBlocked) // same shard: checked in the command
	applyErr(t, s, send(c, "1", now(), d), core.ErrBlocked)
	// A block made now, by a user who blocked nobody before.
	apply(t, s, &core.BlockCmd{By: a, Who: b})
	applyErr(t, s, send(b, "2", now(), a), core.ErrBlocked)
	// Unblock, block again.
	apply(t, s, &core.BlockCmd{By: b, Who: a, Unblock: true})
	apply(t, s, send(a, "3", now(), b))
	apply(t, s, &core.BlockCmd{By: b, Who: a})
	applyErr(t, s, send(a, "4", now(), b), core.ErrBlocked)
}

func testEntriesLimits(t *testing.T, f Factory) {
	s := open(t, f, 1)
	u := core.UserID("alice")
	for i := range 10 {
		c := send(u, fmt.Sprint(i), now())
		c.Body = bytes.Repeat([]byte{'x'}, 100)
		apply(t, s, c)
	}
	tests := []struct {
		name            string
		after           core.Seq
		limit, maxBytes int
		want            []core.Seq
	}{
		{"all", 0, 0, 0, seqRange(1, 10)},
		{"limit", 0, 3, 0, seqRange(1, 3)},
		{"after", 5, 0, 0, seqRange(6, 10)},
		{"after and limit", 5, 2, 0, seqRange(6, 7)},
		{"max bytes", 0, 0, 250, seqRange(1, 2)},
		{"max bytes exact", 0, 0, 300, seqRange(1, 3)},
		{"max bytes below one body", 3, 0, 50, seqRange(4, 4)},
		{"limit before max bytes", 0, 2, 1000, seqRange(1, 2)},
		{"at head", 10, 5, 0, nil},
		{"past head", 20, 5, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := seqs(entries(t, s, u, tt.after, tt.limit, tt.maxBytes)); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	if es := entries(t, s, "nobody", 0, 10, 0); len(es) != 0 {
		t.Fatalf("unknown mailbox: %v", es)
	}
}

var errFailing = errors.New("storetest: failing command")

// failingCmd writes to u's mailbox, then fails: none of it may stay.
type failingCmd struct {
	user core.UserID
}

func (c *failingCmd) Shard(n int) int { return core.UserShard(c.user, n) }

func (c *failingCmd) Apply(tx core.StateTx) (core.Result, error) {
	h, err := tx.Head(c.user)
	if err != nil {
		return core.Result{}, err
	}
	h.Head += 1000
	if err := tx.PutEntry(c.user, &core.Entry{Seq: h.Head, From: c.user, Body: []byte("never")}); err != nil {
		return core.Result{}, err
	}
	if err := tx.PutHead(c.user, h); err != nil {
		return core.Result{}, err
	}
	if err := tx.PutBlock(c.user, "someone"); err != nil {
		return core.Result{}, err
	}
	return core.Result{Seq: h.Head}, errFailing
}

func testFailingCommands(t *testing.T, f Factory) {
	s := open(t, f, 1)
	u := core.UserID("alice")
	const workers, each = 64, 4
	errs := make(chan error, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if (w+i)%2 == 1 {
					r, err := s.Apply(context.Background(), &failingCmd{user: u})
					if !errors.Is(err, errFailing) || r.Seq != 0 {
						errs <- fmt.Errorf("failing command: result %+v, err %v", r, err)
					}
					continue
				}
				if _, err := s.Apply(context.Background(), send(u, fmt.Sprintf("%d-%d", w, i), now())); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const sends = workers * each / 2
	if h := head(t, s, u); h.Head != sends {
		t.Fatalf("head %d, want %d", h.Head, sends)
	}
	if got := seqs(entries(t, s, u, 0, 0, 0)); !slices.Equal(got, seqRange(1, sends)) {
		t.Fatalf("seqs %v, want 1..%d", got, sends)
	}
	if ok, _ := s.Blocks(context.Background(), u, "someone"); ok {
		t.Fatal("a failing command's block was written")
	}
}

// crossShardCmd, applied to from's shard, writes to's mailbox.
type crossShardCmd struct {
	from, to core.UserID
}

func (c *crossShardCmd) Shard(n int) int { return core.UserShard(c.from, n) }

func (c *crossShardCmd) Apply(tx core.StateTx) (core.Result, error) {
	return core.Result{}, tx.PutHead(c.to, core.Head{Head: 7})
}

func testOtherShardRefused(t *testing.T, f Factory) {
	const shards = 2
	s := open(t, f, shards)
	a, c := userIn("a", 0, shards), userIn("c", 1, shards)
	applyErr(t, s, &crossShardCmd{from: a, to: c}, core.ErrInvalid)
	if h := head(t, s, c); h.Head != 0 {
		t.Fatalf("another shard's command wrote %+v", h)
	}
}

func appliedIndex(t *testing.T, s core.Store, shard int) (uint64, bool) {
	t.Helper()
	ai, ok := s.(AppliedIndexer)
	if !ok {
		return 0, false
	}
	n, err := ai.AppliedIndex(context.Background(), shard)
	if err != nil {
		t.Fatalf("applied index: %v", err)
	}
	return n, true
}

func testAppliedIndex(t *testing.T, f Factory) {
	const shards = 2
	s := open(t, f, shards)
	if _, ok := s.(AppliedIndexer); !ok {
		t.Skip("the store does not report its applied index")
	}
	a, c := userIn("a", 0, shards), userIn("c", 1, shards)
	apply(t, s, send(a, "1", now()))
	apply(t, s, send(a, "2", now()))
	apply(t, s, send(a, "2", now()))                        // duplicate: applied, writes nothing new
	applyErr(t, s, &failingCmd{user: a}, errFailing)        // failed: applied
	apply(t, s, send(c, "1", now()))                        // the other shard
	ctx, cancel := context.WithCancel(context.Background()) // never applied
	cancel()
	if _, err := s.Apply(ctx, send(a, "3", now())); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled apply: %v", err)
	}
	for shard, want := range []uint64{4, 1} {
		if got, _ := appliedIndex(t, s, shard); got != want {
			t.Fatalf("shard %d: applied index %d, want %d", shard, got, want)
		}
	}
}

func testMailboxes(t *testing.T, f Factory) {
	const shards = 2
	s := open(t, f, shards)
	var want [shards][]core.UserID
	heads := map[core.UserID]core.Seq{}
	for i := range 40 {
		u := core.UserID(fmt.Sprintf("user-%02d", i))
		apply(t, s, send(u, "1", now()))
		heads[u] = 1
		if i%3 == 0 {
			apply(t, s, send(u, "2", now()))
			heads[u] = 2
		}
		sh := core.UserShard(u, shards)
		want[sh] = append(want[sh], u)
	}
	for shard := range shards {
		var got []core.UserID
		err := s.Mailboxes(context.Background(), shard, func(u core.UserID, h core.Head) bool {
			got = append(got, u)
			if h.Head != heads[u] {
				t.Errorf("%s: head %d, want %d", u, h.Head, heads[u])
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want[shard]) {
			t.Fatalf("shard %d mailboxes %v, want %v", shard, got, want[shard])
		}
	}
}

func testCallbacks(t *testing.T, f Factory) {
	const shards = 2
	s := open(t, f, shards)
	ctx := context.Background()
	a := userIn("a", 0, shards)
	var others []core.UserID
	for i := range 3 {
		others = append(others, userIn(fmt.Sprintf("o%d", i), 1, shards))
	}
	for i, o := range others {
		apply(t, s, send(a, fmt.Sprint(i), now(), o))
	}
	// Deliver from inside the callback: fn may call the store, writes
	// included.
	n := 0
	err := s.Outbox(ctx, 0, func(o core.OutboxItem) bool {
		if _, err := s.Apply(ctx, &core.DeliverCmd{Item: o, Now: now(), DeliveryTTL: time.Hour}); err != nil {
			t.Errorf("deliver from the outbox callback: %v", err)
		}
		n++
		return true
	})
	if err != nil || n != 3 {
		t.Fatalf("outbox scan: %d items, err %v", n, err)
	}
	err = s.Mailboxes(ctx, 1, func(u core.UserID, h core.Head) bool {
		if got := head(t, s, u); got != h {
			t.Errorf("%s: head %+v from Mailboxes, %+v from Head", u, h, got)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		if head(t, s, o).Head != 1 {
			t.Fatalf("%s not delivered", o)
		}
	}
}

func testInvalidIDs(t *testing.T, f Factory) {
	s := open(t, f, 1)
	ctx := context.Background()
	long := core.UserID(strings.Repeat("x", core.MaxIDLen+1))
	if _, err := s.Head(ctx, long); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("head of an over-long id: %v", err)
	}
	if _, err := s.Entries(ctx, long, 0, 1, 0); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("entries of an over-long id: %v", err)
	}
	c := send("alice", "1", now())
	c.Device = core.DeviceID(long)
	applyErr(t, s, c, core.ErrInvalid)
	if err := s.Outbox(ctx, 1, func(core.OutboxItem) bool { return true }); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("outbox of shard 1 of 1: %v", err)
	}
	applyErr(t, s, badShardCmd{}, core.ErrInvalid)
}

// badShardCmd names a shard that does not exist.
type badShardCmd struct{}

func (badShardCmd) Shard(n int) int                         { return n }
func (badShardCmd) Apply(core.StateTx) (core.Result, error) { return core.Result{}, nil }

func testCanceled(t *testing.T, f Factory) {
	s := open(t, f, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Apply(ctx, send("alice", "1", now())); !errors.Is(err, context.Canceled) {
		t.Fatalf("apply with a canceled context: %v", err)
	}
	if _, err := s.Head(ctx, "alice"); !errors.Is(err, context.Canceled) {
		t.Fatalf("head with a canceled context: %v", err)
	}
	if h := head(t, s, "alice"); h.Head != 0 {
		t.Fatalf("a canceled command was applied: %+v", h)
	}
}

func testClose(t *testing.T, f Factory) {
	s, err := f.Open(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, send("alice", "1", now()))
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Apply(context.Background(), send("alice", "2", now())); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
	if _, err := s.Head(context.Background(), "alice"); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("head after close: %v", err)
	}
}

// snapshot is what the reopen test compares.
type snapshot struct {
	heads   map[core.UserID]core.Head
	entries map[core.UserID][]core.Entry
	outbox  [][]core.OutboxItem
	applied []uint64
	members []core.UserID
	cursor  core.Seq
}

func takeSnapshot(t *testing.T, s core.Store, users []core.UserID) snapshot {
	t.Helper()
	snap := snapshot{heads: map[core.UserID]core.Head{}, entries: map[core.UserID][]core.Entry{}}
	for _, u := range users {
		snap.heads[u] = head(t, s, u)
		snap.entries[u] = entries(t, s, u, 0, 0, 0)
	}
	for shard := range s.Shards() {
		snap.outbox = append(snap.outbox, outbox(t, s, shard))
		n, _ := appliedIndex(t, s, shard)
		snap.applied = append(snap.applied, n)
	}
	var err error
	if snap.members, err = s.Members(context.Background(), "team"); err != nil {
		t.Fatal(err)
	}
	if snap.cursor, err = s.Cursor(context.Background(), users[0], "phone"); err != nil {
		t.Fatal(err)
	}
	return snap
}

func (a snapshot) diff(b snapshot) string {
	for u, h := range a.heads {
		if b.heads[u] != h {
			return fmt.Sprintf("%s: head %+v, then %+v", u, h, b.heads[u])
		}
		if len(a.entries[u]) != len(b.entries[u]) {
			return fmt.Sprintf("%s: %d entries, then %d", u, len(a.entries[u]), len(b.entries[u]))
		}
		for i := range a.entries[u] {
			if d := sameEntry(b.entries[u][i], a.entries[u][i]); d != "" {
				return fmt.Sprintf("%s: entry %d: %s", u, i, d)
			}
		}
	}
	for shard := range a.outbox {
		if len(a.outbox[shard]) != len(b.outbox[shard]) {
			return fmt.Sprintf("shard %d: %d outbox items, then %d", shard, len(a.outbox[shard]), len(b.outbox[shard]))
		}
		for i, o := range a.outbox[shard] {
			p := b.outbox[shard][i]
			if o.Key() != p.Key() || !o.Created.Equal(p.Created) || sameEntry(o.Entry, p.Entry) != "" {
				return fmt.Sprintf("shard %d: outbox item %d: %+v, then %+v", shard, i, o, p)
			}
		}
	}
	if !slices.Equal(a.applied, b.applied) {
		return fmt.Sprintf("applied index %v, then %v", a.applied, b.applied)
	}
	if !slices.Equal(a.members, b.members) {
		return fmt.Sprintf("members %v, then %v", a.members, b.members)
	}
	if a.cursor != b.cursor {
		return fmt.Sprintf("cursor %d, then %d", a.cursor, b.cursor)
	}
	return ""
}

func testReopen(t *testing.T, f Factory) {
	if !f.Persistent {
		t.Skip("the store is not persistent")
	}
	const shards = 2
	dir := t.TempDir()
	s, err := f.Open(dir, shards)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := userIn("a", 0, shards), userIn("b", 0, shards), userIn("c", 1, shards)
	users := []core.UserID{a, b, c}
	for i := range 20 {
		apply(t, s, send(a, fmt.Sprint(i), now(), []core.UserID{b, c}[i%2]))
	}
	apply(t, s, &core.AckCmd{User: a, Device: "phone", Seq: 5})
	apply(t, s, &core.CreateGroupCmd{Group: "team", Owner: a, Members: []core.UserID{c, b}, Now: now()})
	before := takeSnapshot(t, s, users)
	if len(before.outbox[0]) != 10 || before.heads[b].Head != 10 {
		t.Fatalf("setup: %d outbox items, b's head %d", len(before.outbox[0]), before.heads[b].Head)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = f.Open(dir, shards)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	after := takeSnapshot(t, s, users)
	if d := before.diff(after); d != "" {
		t.Fatalf("state changed across reopen: %s", d)
	}
	// Appends go on from the head, and dedup records survived.
	if r := apply(t, s, send(a, "new", now())); r.Seq != 21 {
		t.Fatalf("send after reopen got seq %d, want 21", r.Seq)
	}
	if r := apply(t, s, send(a, "3", now())); !r.Duplicate || r.Seq != 4 {
		t.Fatalf("repeat of a send from before the reopen: %+v", r)
	}
}

func testShardCountMismatch(t *testing.T, f Factory) {
	if !f.Persistent {
		t.Skip("the store is not persistent")
	}
	dir := t.TempDir()
	s, err := f.Open(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, send("alice", "1", now()))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := f.Open(dir, 3); err == nil {
		_ = s.Close()
		t.Fatal("opened a 2-shard store with 3 shards")
	}
	s, err = f.Open(dir, 2)
	if err != nil {
		t.Fatalf("reopen with the right shard count after a refusal: %v", err)
	}
	if h := head(t, s, "alice"); h.Head != 1 {
		t.Fatalf("head %+v after reopen", h)
	}
	_ = s.Close()
}
