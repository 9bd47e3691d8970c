package mochi

import (
	"testing"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/bench/peers/internal/targettest"
)

func newTarget(tr Transport) func(t *testing.T) bench.Target {
	return func(t *testing.T) bench.Target {
		targettest.NoLeaks(t, "badger.(*Hook).gcLoop") // mochi never stops it
		tg, err := New(Config{Dir: t.TempDir(), Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := tg.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			if a, b := tg.Dropped(); a+b != 0 {
				t.Errorf("mochi dropped messages: %d (session full), %d (send queue full)", a, b)
			}
		})
		return tg
	}
}

func TestContractTCP(t *testing.T) {
	targettest.Run(t, newTarget(TCP), targettest.Options{ReordersOnResume: true})
}

func TestContractQUIC(t *testing.T) {
	targettest.Run(t, newTarget(QUIC), targettest.Options{ReordersOnResume: true})
}
