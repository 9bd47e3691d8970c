package client

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func TestPathWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var w pathWatch
	obs := func(sec float64, sent, received uint64) time.Duration {
		return w.observe(quic.ConnectionStats{PacketsSent: sent, PacketsReceived: received}, at(sec))
	}
	steps := []struct {
		sec            float64
		sent, received uint64
		want           time.Duration
	}{
		{0, 10, 10, 0},
		{2, 10, 10, 0},  // idle
		{14, 10, 10, 0}, // still idle, a long quiet spell
		{16, 11, 10, 0}, // a keepalive went out: owed from now, not from 0 s
		{18, 11, 10, 2 * time.Second},
		{20, 12, 10, 4 * time.Second}, // retransmissions do not restart the clock
		{22, 12, 11, 0},               // the answer came
		{24, 12, 11, 0},
		{26, 13, 11, 0},
		{34.5, 14, 11, 8500 * time.Millisecond},
	}
	for _, s := range steps {
		if got := obs(s.sec, s.sent, s.received); got != s.want {
			t.Fatalf("at %gs (sent %d, received %d): silent %v, want %v", s.sec, s.sent, s.received, got, s.want)
		}
	}
}
