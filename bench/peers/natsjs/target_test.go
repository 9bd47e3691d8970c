package natsjs

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/bench/peers/internal/targettest"
)

func newTarget(t *testing.T) bench.Target {
	targettest.NoLeaks(t)
	tg, err := New(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

func TestContract(t *testing.T) {
	targettest.Run(t, newTarget, targettest.Options{})
}

// TestSyncAlways checks the durability setting where it takes effect: the
// server's JetStream config, and the stream's file store (a stream created
// by the server reports its config; the store syncs per SyncAlways, which
// the server hands every file store it creates).
func TestSyncAlways(t *testing.T) {
	tg, err := New(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if !tg.SyncAlways() {
		t.Fatal("JetStream does not report sync_always")
	}
	nc, err := nats.Connect(tg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Storage != jetstream.FileStorage || info.Config.Replicas != 1 || info.Config.PersistMode == jetstream.AsyncPersistMode {
		t.Fatalf("stream config %+v: want file storage, one replica, default persist mode", info.Config)
	}
}

// TestRestartKeepsInbox stops the server while a receiver is away and
// starts a new one on the same directory.
func TestRestartKeepsInbox(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tg, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
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
	tg.Close()

	tg, err = New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	got := make(chan byte, n)
	rc, err := tg.Connect(ctx, "r", func(d bench.Delivery) { got <- d.Body[0] })
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	for i := range n {
		select {
		case b := <-got:
			if int(b) != i {
				t.Fatalf("message %d is %d", i, b)
			}
		case <-ctx.Done():
			t.Fatalf("after the restart r got %d of %d messages", i, n)
		}
	}
}

func TestContractTLS(t *testing.T) {
	targettest.Run(t, func(t *testing.T) bench.Target {
		tg, err := New(Config{Dir: t.TempDir(), TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tg.Close() })
		// The server takes TLS clients only.
		if nc, err := nats.Connect(tg.URL(), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Fatal("a plain-TCP client connected to the TLS target")
		}
		return tg
	}, targettest.Options{Messages: 30})
}
