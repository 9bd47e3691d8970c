package core_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/storage"
)

type fixture struct {
	t     *testing.T
	store core.Store
	core  *core.Core
}

func newFixture(t *testing.T, shards int, cfg core.Config) *fixture {
	t.Helper()
	store := storage.NewMemory(storage.Options{Shards: shards})
	return newFixtureOn(t, store, cfg)
}

func newFixtureOn(t *testing.T, store core.Store, cfg core.Config) *fixture {
	t.Helper()
	if cfg.SendRate == 0 {
		cfg.SendRate = -1
	}
	c, err := core.New(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Error(err)
		}
		store.Close()
	})
	return &fixture{t: t, store: store, core: c}
}

var msgN atomic.Int64

func (f *fixture) send(from, to core.UserID, body string) core.SendResult {
	f.t.Helper()
	res, err := f.core.Send(context.Background(), core.SendRequest{
		From: from, Device: "d1", ClientMsgID: core.ClientMsgID(fmt.Sprintf("m%d", msgN.Add(1))), To: to, Body: []byte(body),
	})
	if err != nil {
		f.t.Fatalf("send %s→%s: %v", from, to, err)
	}
	return res
}

func (f *fixture) sync(u core.UserID, d core.DeviceID, after core.Seq) core.SyncResult {
	f.t.Helper()
	res, err := f.core.Sync(context.Background(), core.SyncRequest{User: u, Device: d, After: after})
	if err != nil {
		f.t.Fatalf("sync %s/%s after %d: %v", u, d, after, err)
	}
	return res
}

// waitHead waits until u's mailbox head reaches want (deliveries through the
// forwarder are asynchronous).
func (f *fixture) waitHead(u core.UserID, want core.Seq) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := f.store.Head(context.Background(), u)
		if err != nil {
			f.t.Fatal(err)
		}
		if h.Head >= want {
			if h.Head > want {
				f.t.Fatalf("%s head %d, want %d", u, h.Head, want)
			}
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s head stuck at %d, want %d", u, h.Head, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func seqs(es []core.Entry) (first, last core.Seq, n int) {
	if len(es) == 0 {
		return 0, 0, 0
	}
	for i := 1; i < len(es); i++ {
		if es[i].Seq != es[i-1].Seq+1 {
			panic(fmt.Sprintf("gap between %d and %d", es[i-1].Seq, es[i].Seq))
		}
	}
	return es[0].Seq, es[len(es)-1].Seq, len(es)
}

// TestWorkedExample is DESIGN.md's worked example with its exact numbers.
func TestWorkedExample(t *testing.T) {
	for _, mode := range []core.AckMode{core.AckAccount, core.AckDevice} {
		t.Run(mode.String(), func(t *testing.T) {
			f := newFixture(t, 1, core.Config{AckMode: mode})
			for i := 0; i < 150; i++ {
				f.send("alice", "bob", "x")
			}
			f.waitHead("bob", 150)
			// Phone 1 has stored 100; the server is at 150.
			r := f.sync("bob", "phone1", 100)
			if first, last, n := seqs(r.Entries); first != 101 || last != 150 || n != 50 || r.HasMore {
				t.Fatalf("phone1 first sync: got %d..%d (%d), has_more %v; want 101..150", first, last, n, r.HasMore)
			}
			// It stores 150 and reports it: the server confirms 150.
			acked, err := f.core.Ack(context.Background(), "bob", "phone1", 150)
			if err != nil || acked != 150 {
				t.Fatalf("ack 150: got %d, %v", acked, err)
			}
			for i := 0; i < 50; i++ {
				f.send("alice", "bob", "y")
			}
			f.waitHead("bob", 200)
			r = f.sync("bob", "phone1", 150)
			if first, last, _ := seqs(r.Entries); first != 151 || last != 200 {
				t.Fatalf("phone1 second sync: got %d..%d, want 151..200", first, last)
			}
			// A second phone reports 120 after the server confirmed 150.
			r = f.sync("bob", "phone2", 120)
			first, last, _ := seqs(r.Entries)
			switch mode {
			case core.AckAccount:
				if first != 151 || last != 200 || r.From != 150 {
					t.Fatalf("phone2 (account mode): got %d..%d from %d, want 151..200 from 150", first, last, r.From)
				}
			case core.AckDevice:
				if first != 121 || last != 200 || r.From != 120 {
					t.Fatalf("phone2 (device mode): got %d..%d from %d, want 121..200 from 120", first, last, r.From)
				}
			}
		})
	}
}

func TestSendDedup(t *testing.T) {
	f := newFixture(t, 1, core.Config{})
	req := core.SendRequest{From: "alice", Device: "d1", ClientMsgID: "same", To: "bob", Body: []byte("hi")}
	a, err := f.core.Send(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.core.Send(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID || a.Seq != b.Seq || a.Duplicate || !b.Duplicate {
		t.Fatalf("first %+v, second %+v: want same id and seq, second a duplicate", a, b)
	}
	// Another device may reuse the id: it is a different message.
	req.Device = "d2"
	c, err := f.core.Send(context.Background(), req)
	if err != nil || c.Duplicate || c.ID == a.ID {
		t.Fatalf("other device: %+v, %v", c, err)
	}
	f.waitHead("bob", 2)
	if h, _ := f.store.Head(context.Background(), "alice"); h.Head != 2 {
		t.Fatalf("alice's mailbox holds %d entries, want 2", h.Head)
	}
}

func TestSenderCopyAndRecipientCopy(t *testing.T) {
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			f := newFixture(t, shards, core.Config{})
			res := f.send("alice", "bob", "hello")
			f.waitHead("bob", 1)
			mine := f.sync("alice", "d1", 0).Entries
			theirs := f.sync("bob", "phone", 0).Entries
			if len(mine) != 1 || len(theirs) != 1 {
				t.Fatalf("alice has %d, bob has %d entries; want 1 each", len(mine), len(theirs))
			}
			if mine[0].ID != res.ID || theirs[0].ID != res.ID || mine[0].Seq != res.Seq {
				t.Fatalf("ids/seqs differ: send %+v, alice %+v, bob %+v", res, mine[0], theirs[0])
			}
			if mine[0].ClientMsgID == "" || theirs[0].ClientMsgID != "" {
				t.Fatalf("client_msg_id must be on the sender's copy only: %q / %q", mine[0].ClientMsgID, theirs[0].ClientMsgID)
			}
			if string(theirs[0].Body) != "hello" || theirs[0].From != "alice" || theirs[0].To != "bob" {
				t.Fatalf("bob's entry: %+v", theirs[0])
			}
		})
	}
}

func TestValidation(t *testing.T) {
	f := newFixture(t, 1, core.Config{MaxBodySize: 10})
	tests := []struct {
		name string
		req  core.SendRequest
		want error
	}{
		{"no recipient", core.SendRequest{From: "a", Device: "d", ClientMsgID: "1"}, core.ErrInvalid},
		{"both recipients", core.SendRequest{From: "a", Device: "d", ClientMsgID: "1", To: "b", Group: "g"}, core.ErrInvalid},
		{"no client id", core.SendRequest{From: "a", Device: "d", To: "b"}, core.ErrInvalid},
		{"control char", core.SendRequest{From: "a", Device: "d", ClientMsgID: "1", To: "b\x00"}, core.ErrInvalid},
		{"body too large", core.SendRequest{From: "a", Device: "d", ClientMsgID: "1", To: "b", Body: make([]byte, 11)}, core.ErrTooLarge},
		{"no such group", core.SendRequest{From: "a", Device: "d", ClientMsgID: "1", Group: "nope"}, core.ErrNoSuchGroup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.core.Send(context.Background(), tt.req); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestGroupFanOut(t *testing.T) {
	f := newFixture(t, 4, core.Config{})
	ctx := context.Background()
	var members []core.UserID
	for i := 1; i < 50; i++ {
		members = append(members, core.UserID(fmt.Sprintf("m%02d", i)))
	}
	added, err := f.core.CreateGroup(ctx, "owner", "team", members)
	if err != nil || len(added) != 50 {
		t.Fatalf("create: %d added, %v", len(added), err)
	}
	res, err := f.core.Send(ctx, core.SendRequest{From: "owner", Device: "d", ClientMsgID: "g1", Group: "team", Body: []byte("hi all")})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		f.waitHead(m, 1)
		es := f.sync(m, "d", 0).Entries
		if len(es) != 1 || es[0].ID != res.ID || es[0].Group != "team" {
			t.Fatalf("%s: %+v", m, es)
		}
	}
	if h, _ := f.store.Head(ctx, "owner"); h.Head != 1 {
		t.Fatalf("owner head %d, want 1 (its own copy only)", h.Head)
	}
	// Non-members cannot send; members can leave; the owner cannot be removed.
	if _, err := f.core.Send(ctx, core.SendRequest{From: "stranger", Device: "d", ClientMsgID: "x", Group: "team"}); !errors.Is(err, core.ErrNotMember) {
		t.Fatalf("stranger send: %v", err)
	}
	if _, err := f.core.RemoveMembers(ctx, "m01", "team", []core.UserID{"m02"}); !errors.Is(err, core.ErrForbidden) {
		t.Fatalf("member removing another: %v", err)
	}
	if got, err := f.core.RemoveMembers(ctx, "m01", "team", []core.UserID{"m01"}); err != nil || len(got) != 1 {
		t.Fatalf("leave: %v %v", got, err)
	}
	if _, err := f.core.RemoveMembers(ctx, "owner", "team", []core.UserID{"owner"}); !errors.Is(err, core.ErrForbidden) {
		t.Fatalf("owner removing itself: %v", err)
	}
	if _, err := f.core.CreateGroup(ctx, "x", "team", nil); !errors.Is(err, core.ErrGroupExists) {
		t.Fatalf("create twice: %v", err)
	}
}

func TestGroupSizeLimit(t *testing.T) {
	f := newFixture(t, 1, core.Config{MaxGroupSize: 3})
	ctx := context.Background()
	if _, err := f.core.CreateGroup(ctx, "o", "g", []core.UserID{"a", "b", "c"}); !errors.Is(err, core.ErrGroupTooLarge) {
		t.Fatalf("got %v, want ErrGroupTooLarge", err)
	}
	if _, err := f.core.CreateGroup(ctx, "o", "g", []core.UserID{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.core.AddMembers(ctx, "a", "g", []core.UserID{"c"}); !errors.Is(err, core.ErrGroupTooLarge) {
		t.Fatalf("got %v, want ErrGroupTooLarge", err)
	}
}

func TestBlocklist(t *testing.T) {
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			f := newFixture(t, shards, core.Config{})
			ctx := context.Background()
			if err := f.core.Block(ctx, "bob", "mallory", false); err != nil {
				t.Fatal(err)
			}
			_, err := f.core.Send(ctx, core.SendRequest{From: "mallory", Device: "d", ClientMsgID: "1", To: "bob"})
			if !errors.Is(err, core.ErrBlocked) {
				t.Fatalf("got %v, want ErrBlocked", err)
			}
			// In a group, bob simply does not get mallory's messages.
			if _, err := f.core.CreateGroup(ctx, "mallory", "g", []core.UserID{"bob", "carol"}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.core.Send(ctx, core.SendRequest{From: "mallory", Device: "d", ClientMsgID: "2", Group: "g"}); err != nil {
				t.Fatal(err)
			}
			f.waitHead("carol", 1)
			waitDrained(t, f.core)
			if h, _ := f.store.Head(ctx, "bob"); h.Head != 0 {
				t.Fatalf("bob received %d entries from a blocked sender", h.Head)
			}
			if err := f.core.Block(ctx, "bob", "mallory", true); err != nil {
				t.Fatal(err)
			}
			f.send("mallory", "bob", "ok now")
			f.waitHead("bob", 1)
		})
	}
}

func waitDrained(t *testing.T, c *core.Core) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, loaded := c.Pending()
		if n == 0 && loaded {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("forwarder still has %d items", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRetentionResync(t *testing.T) {
	f := newFixture(t, 1, core.Config{RetainCount: 10})
	for i := 0; i < 25; i++ {
		f.send("alice", "bob", "x")
	}
	f.waitHead("bob", 25)
	h, _ := f.store.Head(context.Background(), "bob")
	if h.EffectiveFloor() != 16 {
		t.Fatalf("floor %d, want 16 (25 entries, 10 kept)", h.EffectiveFloor())
	}
	_, err := f.core.Sync(context.Background(), core.SyncRequest{User: "bob", Device: "d", After: 5})
	var rs *core.ResyncError
	if !errors.As(err, &rs) || rs.Floor != 16 || rs.Head != 25 {
		t.Fatalf("sync below floor: got %v, want ResyncError{Floor 16, Head 25}", err)
	}
	// Right at the floor is fine: after 15 means 16.. which is retained.
	if r := f.sync("bob", "d", 15); len(r.Entries) != 10 || r.Entries[0].Seq != 16 {
		t.Fatalf("sync after 15: %d entries from %d", len(r.Entries), r.Entries[0].Seq)
	}
	// Ahead of the head is a resync too.
	_, err = f.core.Sync(context.Background(), core.SyncRequest{User: "bob", Device: "d2", After: 99})
	if !errors.As(err, &rs) || rs.Head != 25 {
		t.Fatalf("sync above head: got %v", err)
	}
}

func TestRetentionByAge(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newFixture(t, 1, core.Config{RetainAge: time.Hour, RetentionInterval: time.Hour, Now: clock})
	for i := 0; i < 5; i++ {
		f.send("alice", "bob", "old")
	}
	mu.Lock()
	now = now.Add(50 * time.Minute)
	mu.Unlock()
	for i := 0; i < 3; i++ {
		f.send("alice", "bob", "new")
	}
	f.waitHead("bob", 8)
	mu.Lock()
	now = now.Add(20 * time.Minute) // the first five are 70 minutes old
	mu.Unlock()
	if n := f.core.TrimOld(context.Background()); n != 2 { // alice and bob
		t.Fatalf("trimmed %d mailboxes, want 2", n)
	}
	h, _ := f.store.Head(context.Background(), "bob")
	if h.EffectiveFloor() != 6 || h.Head != 8 {
		t.Fatalf("bob after trim: floor %d head %d, want 6 and 8", h.EffectiveFloor(), h.Head)
	}
}

type recordingSink struct {
	mu       sync.Mutex
	heads    []core.Seq
	replaced bool
}

func (s *recordingSink) Notify(h core.Seq, _ *core.Entry) {
	s.mu.Lock()
	s.heads = append(s.heads, h)
	s.mu.Unlock()
}
func (s *recordingSink) Replaced() { s.mu.Lock(); s.replaced = true; s.mu.Unlock() }
func (s *recordingSink) last() core.Seq {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.heads) == 0 {
		return 0
	}
	return s.heads[len(s.heads)-1]
}

func TestAttachNotifyTakeover(t *testing.T) {
	f := newFixture(t, 2, core.Config{})
	ctx := context.Background()
	f.send("alice", "bob", "before")
	f.waitHead("bob", 1)
	s1 := &recordingSink{}
	sess, w, err := f.core.Attach(ctx, core.SessionInfo{User: "bob", Device: "phone"}, s1)
	if err != nil {
		t.Fatal(err)
	}
	if w.Head != 1 || w.Floor != 1 || w.Mode != core.AckAccount {
		t.Fatalf("welcome %+v", w)
	}
	f.send("alice", "bob", "after")
	f.waitHead("bob", 2)
	deadline := time.Now().Add(5 * time.Second)
	for s1.last() != 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s1.last() != 2 {
		t.Fatalf("notified heads %v, want last 2", s1.heads)
	}
	// The same device again: the first session is replaced.
	s2 := &recordingSink{}
	sess2, w2, err := f.core.Attach(ctx, core.SessionInfo{User: "bob", Device: "phone", SeqCli: 2}, s2)
	if err != nil {
		t.Fatal(err)
	}
	if !s1.replaced || f.core.Sessions() != 1 {
		t.Fatalf("replaced=%v sessions=%d", s1.replaced, f.core.Sessions())
	}
	sess.Detach() // a late detach of the replaced session must not remove the new one
	if f.core.Sessions() != 1 {
		t.Fatal("detaching the replaced session removed the new one")
	}
	f.send("alice", "bob", "third")
	f.waitHead("bob", 3)
	for s2.last() != 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s2.last() != 3 || s1.last() != 2 {
		t.Fatalf("new session heads %v, old %v", s2.heads, s1.heads)
	}
	// The replaced session cannot be resumed; the current one can.
	if _, _, err := f.core.Attach(ctx, core.SessionInfo{User: "bob", Device: "phone", Resume: w.SessionID}, &recordingSink{}); !errors.Is(err, core.ErrSessionReplaced) {
		t.Fatalf("resuming the replaced session: %v, want ErrSessionReplaced", err)
	}
	sess2.Detach()
	if f.core.Sessions() != 0 {
		t.Fatal("session still attached")
	}
	sess3, w3, err := f.core.Attach(ctx, core.SessionInfo{User: "bob", Device: "phone", Resume: w2.SessionID}, &recordingSink{})
	if err != nil || w3.SessionID == w2.SessionID || w3.SessionID == "" {
		t.Fatalf("resuming a session that ended on its own: %v, id %q", err, w3.SessionID)
	}
	// Another device cannot be refused with a session id of this one.
	if _, _, err := f.core.Attach(ctx, core.SessionInfo{User: "bob", Device: "tablet", Resume: w.SessionID}, &recordingSink{}); err != nil {
		t.Fatalf("another device naming a replaced id of phone: %v", err)
	}
	sess3.Detach()
}

func TestRateLimit(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newFixture(t, 1, core.Config{SendRate: 1, SendBurst: 3, Now: clock})
	ctx := context.Background()
	send := func(id string) error {
		_, err := f.core.Send(ctx, core.SendRequest{From: "a", Device: "d", ClientMsgID: core.ClientMsgID(id), To: "b"})
		return err
	}
	for i := 0; i < 3; i++ {
		if err := send(fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	err := send("4")
	var rl *core.RateLimitError
	if !errors.As(err, &rl) || rl.RetryAfter <= 0 || rl.RetryAfter > time.Second {
		t.Fatalf("fourth send: %v", err)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if err := send("5"); err != nil {
		t.Fatalf("after a second: %v", err)
	}
}

// flakyStore fails DeliverCmds while failing is set, to exercise the
// forwarder's retries.
type flakyStore struct {
	core.Store
	failing atomic.Bool
	fails   atomic.Int64
}

func (s *flakyStore) Apply(ctx context.Context, cmd core.Command) (core.Result, error) {
	if _, ok := cmd.(*core.DeliverCmd); ok && s.failing.Load() {
		s.fails.Add(1)
		return core.Result{}, errors.New("injected failure")
	}
	return s.Store.Apply(ctx, cmd)
}

func TestForwarderRetries(t *testing.T) {
	fs := &flakyStore{Store: storage.NewMemory(storage.Options{Shards: 8})}
	fs.failing.Store(true)
	f := newFixtureOn(t, fs, core.Config{Forward: core.ForwardConfig{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}})
	ctx := context.Background()
	var members []core.UserID
	for i := 0; i < 10; i++ {
		members = append(members, core.UserID(fmt.Sprintf("u%d", i)))
	}
	if _, err := f.core.CreateGroup(ctx, "o", "g", members); err != nil {
		t.Fatal(err)
	}
	if _, err := f.core.Send(ctx, core.SendRequest{From: "o", Device: "d", ClientMsgID: "1", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for fs.fails.Load() < 30 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if fs.fails.Load() < 30 {
		t.Fatalf("only %d failed attempts; the forwarder is not retrying", fs.fails.Load())
	}
	fs.failing.Store(false)
	for _, m := range members {
		f.waitHead(m, 1)
	}
	waitDrained(t, f.core)
}

// TestForwarderResumesAfterRestart: items left in the outbox when core stops
// are delivered, once, by the next core on the same store.
func TestForwarderResumesAfterRestart(t *testing.T) {
	fs := &flakyStore{Store: storage.NewMemory(storage.Options{Shards: 4})}
	fs.failing.Store(true)
	c1, err := core.New(core.Config{SendRate: -1}, fs)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var members []core.UserID
	for i := 0; i < 20; i++ {
		members = append(members, core.UserID(fmt.Sprintf("u%d", i)))
	}
	if _, err := c1.CreateGroup(ctx, "o", "g", members); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Send(ctx, core.SendRequest{From: "o", Device: "d", ClientMsgID: "1", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	fs.failing.Store(false)
	f := newFixtureOn(t, fs, core.Config{})
	for _, m := range members {
		f.waitHead(m, 1)
	}
	waitDrained(t, f.core)
	n := 0
	_ = fs.Outbox(ctx, 0, func(core.OutboxItem) bool { n++; return true })
	for s := 1; s < fs.Shards(); s++ {
		_ = fs.Outbox(ctx, s, func(core.OutboxItem) bool { n++; return true })
	}
	if n != 0 {
		t.Fatalf("%d items left in the outbox", n)
	}
}

type recordingPusher struct {
	mu        sync.Mutex
	pushes    []core.PushRequest
	cancelled []core.DeviceID
}

func (p *recordingPusher) Push(r core.PushRequest) {
	p.mu.Lock()
	p.pushes = append(p.pushes, r)
	p.mu.Unlock()
}
func (p *recordingPusher) Cancel(_ core.UserID, d core.DeviceID) {
	p.mu.Lock()
	p.cancelled = append(p.cancelled, d)
	p.mu.Unlock()
}
func (p *recordingPusher) count() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.pushes) }

func waitCount(t *testing.T, what string, get func() int, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for get() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, get(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPushDecisions(t *testing.T) {
	// One shard: deliveries are inline, so growths come in send order.
	store := storage.NewMemory(storage.Options{Shards: 1})
	pusher := &recordingPusher{}
	f := newFixtureOn(t, store, core.Config{Pusher: pusher, PushPreview: true})
	<-f.core.Ready()
	ctx := context.Background()
	ios := core.PushRegistration{Platform: core.PlatformIOS, Token: "aa", Topic: "app"}
	if err := f.core.RegisterPush(ctx, "bob", "iphone", ios); err != nil {
		t.Fatal(err)
	}
	if err := f.core.RegisterPush(ctx, "bob", "web", core.PushRegistration{Platform: core.PlatformWeb, Token: "x"}); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("a web registration: %v", err)
	}
	// A user's own sent copies wake none of its devices.
	f.send("bob", "alice", "mine")
	// Three messages to an offline device: one push, with the preview on.
	for i := 0; i < 3; i++ {
		f.send("alice", "bob", fmt.Sprint("m", i))
	}
	waitCount(t, "pushes", pusher.count, 1)
	p := pusher.pushes[0]
	if p.Device != "iphone" || p.Head != 2 || p.Reg != ios || p.CollapseID == "" || p.Preview == nil || string(p.Preview.Body) != "m0" {
		t.Fatalf("push %+v", p)
	}
	// A sync clears it (and cancels what the pusher still holds); the next
	// message pushes again.
	f.sync("bob", "iphone", 0)
	f.send("alice", "bob", "m3")
	waitCount(t, "pushes", pusher.count, 2)
	if len(pusher.cancelled) != 1 {
		t.Fatalf("cancelled %v", pusher.cancelled)
	}
	// A foreground session is not pushed; a background one is.
	s, _, err := f.core.Attach(ctx, core.SessionInfo{User: "bob", Device: "iphone"}, &recordingSink{})
	if err != nil {
		t.Fatal(err)
	}
	f.send("alice", "bob", "m4")
	f.send("alice", "carol", "flush") // the decider handles growths in order
	f.waitHead("carol", 1)
	time.Sleep(20 * time.Millisecond)
	if pusher.count() != 2 {
		t.Fatalf("a foreground device was pushed: %d pushes", pusher.count())
	}
	s.SetAppState(core.Background)
	f.send("alice", "bob", "m5")
	waitCount(t, "pushes", pusher.count, 3)
	s.Detach()

	// Unregistering stops pushes for the device.
	f.sync("bob", "iphone", 0)
	if err := f.core.UnregisterPush(ctx, "bob", "iphone"); err != nil {
		t.Fatal(err)
	}
	if regs, _ := store.PushRegistrations(ctx, "bob"); len(regs) != 0 {
		t.Fatalf("registrations after logout: %v", regs)
	}
	// A dead token is dropped only while it is still the registered one.
	f.core.RegisterPush(ctx, "bob", "iphone", ios)
	f.core.DropPushToken(ctx, "bob", "iphone", "old-token", "Unregistered")
	if regs, _ := store.PushRegistrations(ctx, "bob"); len(regs) != 1 {
		t.Fatalf("a stale token report removed the current registration: %v", regs)
	}
	f.core.DropPushToken(ctx, "bob", "iphone", "aa", "Unregistered")
	if regs, _ := store.PushRegistrations(ctx, "bob"); len(regs) != 0 {
		t.Fatalf("the dead token stayed: %v", regs)
	}
}

// TestPushResume: a new Core over a store where a registered device is
// behind pushes it, from mailbox state alone.
func TestPushResume(t *testing.T) {
	store := storage.NewMemory(storage.Options{})
	c1, err := core.New(core.Config{SendRate: -1}, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ios := core.PushRegistration{Platform: core.PlatformIOS, Token: "aa"}
	c1.RegisterPush(ctx, "bob", "behind", ios)
	c1.RegisterPush(ctx, "bob", "caughtup", ios)
	for i := 0; i < 3; i++ {
		if _, err := c1.Send(ctx, core.SendRequest{From: "alice", Device: "d", ClientMsgID: core.ClientMsgID(fmt.Sprint(i)), To: "bob"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c1.Ack(ctx, "bob", "caughtup", 3); err != nil {
		t.Fatal(err)
	}
	c1.Close(ctx)
	pusher := &recordingPusher{}
	newFixtureOn(t, store, core.Config{Pusher: pusher})
	waitCount(t, "pushes", pusher.count, 1)
	if p := pusher.pushes[0]; p.Device != "behind" || p.Head != 3 {
		t.Fatalf("resume pushed %+v", p)
	}
}
