package mochi

import (
	"context"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ternhq/tern/bench"
)

// blockStore holds up the storing of messages bound for one client's
// session (OnQosPublish, called after the Badger hook's) until released.
type blockStore struct {
	mqtt.HookBase
	client  string
	entered chan struct{} // one value when a store for client is held
	release chan struct{}
	once    sync.Once
}

func (h *blockStore) ID() string           { return "block-store" }
func (h *blockStore) Provides(b byte) bool { return b == mqtt.OnQosPublish }
func (h *blockStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if cl.ID != h.client || pk.FixedHeader.Type != packets.Publish {
		return
	}
	h.once.Do(func() { h.entered <- struct{}{} })
	<-h.release
}

// TestStoreBeforeAck shows when the publisher gets its PUBACK relative to
// the storing of the message in the subscriber's session: stock mochi acks
// while the store is still in progress; with the store-before-ack hook the
// PUBACK waits for it.
func TestStoreBeforeAck(t *testing.T) {
	for _, tc := range []struct {
		name           string
		ackBeforeStore bool
	}{{"store-before-ack", false}, {"stock", true}} {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := New(Config{Dir: t.TempDir(), AckBeforeStore: tc.ackBeforeStore})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			gate := &blockStore{client: "inbox-r", entered: make(chan struct{}, 1), release: make(chan struct{})}
			if err := tg.srv.AddHook(gate, nil); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rc, err := tg.Connect(ctx, "r", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			sc, err := tg.Connect(ctx, "s", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()

			sent := make(chan error, 1)
			go func() { sent <- sc.Send(ctx, "r", []byte("m")) }()
			<-gate.entered
			if tc.ackBeforeStore {
				// The PUBACK arrives although the store is held.
				if err := <-sent; err != nil {
					t.Fatalf("send: %v", err)
				}
				close(gate.release)
				return
			}
			// The PUBACK must not arrive while the store is held. (Only a
			// bounded wait can show an absence; 200 ms is ample on loopback.)
			select {
			case err := <-sent:
				t.Fatalf("send returned (%v) while the message was not yet stored for its subscriber", err)
			case <-time.After(200 * time.Millisecond):
			}
			close(gate.release)
			if err := <-sent; err != nil {
				t.Fatalf("send: %v", err)
			}
		})
	}
}

// TestRestartKeepsInbox stops the broker while a receiver is away and
// starts a new one on the same directory: the messages acknowledged before
// the stop are delivered after it.
func TestRestartKeepsInbox(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tg, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := tg.Connect(ctx, "r", nil) // creates r's session
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	sc, err := tg.Connect(ctx, "s", nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if err := sc.Send(ctx, "r", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	sc.Close()
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}

	tg, err = New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	got := make(chan byte, n)
	rc, err = tg.Connect(ctx, "r", func(d bench.Delivery) { got <- d.Body[0] })
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	seen := make(map[byte]bool)
	for len(seen) < n {
		select {
		case b := <-got:
			seen[b] = true
		case <-ctx.Done():
			t.Fatalf("after the restart r got %d of %d messages", len(seen), n)
		}
	}
}
