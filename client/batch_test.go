package client

import (
	"sync"
	"testing"

	"github.com/ternhq/tern/wire"
)

// queueSends starts n sends from c while the server holds the first one at
// its gate, and returns once all n are waiting: one at the server, n-1 in
// the client's queue, in the order they were started.
func queueSends(t *testing.T, f *fakeServer, c *Client, n int) (results []SendResult, errs []error, wait func()) {
	t.Helper()
	gate := make(chan struct{})
	f.do(func(f *fakeServer) { f.sendGate = gate })
	results, errs = make([]SendResult, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = c.Send(testCtx(t), "bob", []byte{byte(i)}) })
		switch i {
		case 0:
			waitFor(t, "first send at the server", func() bool { return f.held.Load() == 1 })
		default:
			waitFor(t, "send queued", func() bool {
				c.batch.mu.Lock()
				defer c.batch.mu.Unlock()
				return len(c.batch.queue) == i
			})
		}
	}
	return results, errs, func() {
		f.do(func(f *fakeServer) { f.sendGate = nil })
		close(gate)
		wg.Wait()
	}
}

func TestSendBatching(t *testing.T) {
	f := newFakeServer(t)
	cfg := f.testConfig(t, "alice/phone")
	cfg.SendsInFlight = 1
	alice := dial(t, cfg)

	results, errs, wait := queueSends(t, f, alice, 21)
	wait()
	seqs := map[uint64]bool{}
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		if seqs[r.Seq] {
			t.Fatalf("seq %d twice", r.Seq)
		}
		seqs[r.Seq] = true
	}
	f.do(func(f *fakeServer) {
		if len(f.batches) != 1 || f.batches[0] != 20 {
			t.Errorf("batches %v, want one of 20 (the first send went alone)", f.batches)
		}
		if len(f.sendIDs) != 21 {
			t.Errorf("%d sends at the server, want 21", len(f.sendIDs))
		}
	})
	if st := alice.Stats(); st.Sends != 21 || st.SendBatches != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A batch's sends fail on their own: a retryable code sends that message
// again alone, a terminal code fails only its own send.
func TestSendBatchItemErrors(t *testing.T) {
	f := newFakeServer(t)
	f.do(func(f *fakeServer) {
		f.failBodies = map[string][]*wire.Error{
			"\x01": {wire.NewError(wire.CodeOverloaded, "busy")},
			"\x02": {wire.NewError(wire.CodeBlocked, "blocked")},
		}
	})
	cfg := f.testConfig(t, "alice/phone")
	cfg.SendsInFlight = 1
	alice := dial(t, cfg)

	results, errs, wait := queueSends(t, f, alice, 4)
	wait()
	for i, err := range errs {
		if want := i != 2; (err == nil) != want {
			t.Errorf("send %d: %v", i, err)
		}
	}
	if errCode(errs[2]) != wire.CodeBlocked || results[2].ClientMsgID == "" {
		t.Errorf("blocked send: %+v, %v", results[2], errs[2])
	}
	f.do(func(f *fakeServer) {
		if len(f.batches) != 1 || f.batches[0] != 3 {
			t.Errorf("batches %v, want one of 3", f.batches)
		}
		// 0 alone, the batch 1 2 3, then 1 again alone with its id.
		if n := len(f.sendIDs); n != 5 || f.sendIDs[4] != results[1].ClientMsgID {
			t.Errorf("sends at the server %v; send 1 had %s", f.sendIDs, results[1].ClientMsgID)
		}
	})
}

// A server that announces capability 1 gets one stream per send, also for
// sends that queued together.
func TestSendBatchOldServer(t *testing.T) {
	f := newFakeServer(t)
	f.do(func(f *fakeServer) { f.capability = 1 })
	cfg := f.testConfig(t, "alice/phone")
	cfg.SendsInFlight = 1
	alice := dial(t, cfg)

	_, errs, wait := queueSends(t, f, alice, 6)
	wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	f.do(func(f *fakeServer) {
		if len(f.batches) != 0 || len(f.sendIDs) != 6 {
			t.Errorf("batches %v, %d sends", f.batches, len(f.sendIDs))
		}
	})
}
