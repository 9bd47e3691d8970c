package edge

import "github.com/ternhq/tern/core"

// The edge's metrics.
const (
	MetricConnections      = "edge_connections"              // gauge
	MetricHandshakes       = "edge_hellos_total"             // label result: ok or a code name
	MetricRequests         = "edge_requests_total"           // label kind: send, send_batch, sync, ack, group, block, push, unknown, invalid, abandoned
	MetricRequestErrors    = "edge_request_errors_total"     // label code
	MetricRequestSeconds   = "edge_request_seconds"          // histogram
	MetricNotifiesSent     = "edge_notifies_sent_total"      // Notify frames written
	MetricNotifiesMerged   = "edge_notifies_merged_total"    // notifies coalesced into a later one
	MetricNotifyEntries    = "edge_notify_entries_total"     // entries carried inline in Notify frames
	MetricNotifiesAnswered = "edge_notifies_answered_total"  // notifies not written: the send's answer told the client (capability 4)
	MetricClosed           = "edge_connections_closed_total" // label reason
	MetricZeroRTT          = "edge_0rtt_connections_total"
	MetricHandshakeWait    = "edge_tls_handshake_wait_seconds" // histogram: a TLS handshake's wait for its turn (QUICOptions.Handshakes)
	MetricHandshakesShed   = "edge_tls_handshakes_shed_total"  // label reason: queue_timeout
	MetricPacketsDropped   = "edge_quic_packets_dropped_total" // label reason: quic-go's qlog drop trigger (dos_prevention...)
)

// MetricDescs lists the edge's metrics.
var MetricDescs = []core.MetricDesc{
	{Name: MetricConnections, Help: "Open client connections.", Kind: core.Gauge},
	{Name: MetricHandshakes, Help: "Hellos handled, by result.", Kind: core.Counter, Label: "result"},
	{Name: MetricRequests, Help: "Requests received, by kind.", Kind: core.Counter, Label: "kind"},
	{Name: MetricRequestErrors, Help: "Requests answered with an error, by code.", Kind: core.Counter, Label: "code"},
	{Name: MetricRequestSeconds, Help: "Time from a request's arrival to its response being written.", Kind: core.Histogram},
	{Name: MetricNotifiesSent, Help: "Notify frames written to sessions.", Kind: core.Counter},
	{Name: MetricNotifiesMerged, Help: "Notifies coalesced into a later notify.", Kind: core.Counter},
	{Name: MetricNotifyEntries, Help: "Mailbox entries carried inline in Notify frames (capability 3).", Kind: core.Counter},
	{Name: MetricNotifiesAnswered, Help: "Notifies of a device's own sends left out because the send's answer told it (capability 4).", Kind: core.Counter},
	{Name: MetricClosed, Help: "Connections closed, by reason.", Kind: core.Counter, Label: "reason"},
	{Name: MetricZeroRTT, Help: "Connections that used 0-RTT.", Kind: core.Counter},
	{Name: MetricHandshakeWait, Help: "Time a TLS handshake waited for its turn (the listener works on a few at once).", Kind: core.Histogram},
	{Name: MetricHandshakesShed, Help: "TLS handshakes refused, by reason (queue_timeout: waited half the handshake timeout).", Kind: core.Counter, Label: "reason"},
	{Name: MetricPacketsDropped, Help: "Packets the listener's QUIC transport dropped before they reached a connection, by reason (dos_prevention: the server's receive queue was full).", Kind: core.Counter, Label: "reason"},
}
