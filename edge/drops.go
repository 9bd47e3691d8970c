package edge

import (
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
	"github.com/ternhq/tern/core"
)

// dropCounter is the listener transport's qlog recorder. quic-go reports
// there the packets it drops before they reach a connection: the server's
// receive queue full (dos_prevention: 1,024 packets wait for the goroutine
// that creates connections), unknown connection IDs, undecodable headers...
// It counts them by reason (MetricPacketsDropped) and keeps nothing else.
// A burst of new connections that overflows the queue shows here; the
// clients whose Initials were dropped wait for their next probe (0.2s, then
// doubling), which is what makes the tail of a reconnect storm.
type dropCounter struct{ m core.Metrics }

var _ qlogwriter.Recorder = dropCounter{}

func (d dropCounter) RecordEvent(ev qlogwriter.Event) {
	if p, ok := ev.(qlog.PacketDropped); ok {
		reason := string(p.Trigger)
		if reason == "" {
			reason = "unknown"
		}
		d.m.Add(MetricPacketsDropped, reason, 1)
	}
}

func (dropCounter) Close() error { return nil }
