package netsim

// Stats counts what the proxy did, per direction.
type Stats struct {
	Up   DirStats // client → server
	Down DirStats // server → client
}

// DirStats counts one direction. Every packet the proxy read is, at any
// moment, delivered, dropped or still queued, so
//
//	Packets + Duplicated == Delivered + Dropped.Total() + Queued
//
// holds in every snapshot.
type DirStats struct {
	Packets int64 // packets the proxy read in this direction
	Bytes   int64 // their payload bytes

	Delivered      int64 // packets (copies included) written towards their destination
	DeliveredBytes int64

	Duplicated int64 // extra copies scheduled by Link.Duplicate
	HeldBack   int64 // packets given the extra Link.ReorderDelay
	// Reordered counts packets delivered after a packet that arrived at the
	// proxy later than they did (by reordering or jitter).
	Reordered int64

	Dropped Drops
	Queued  int64 // scheduled and not yet delivered or dropped
}

// Drops counts dropped packets by reason.
type Drops struct {
	Loss       int64 // Link.Loss (the good state when bursty loss is on)
	Burst      int64 // Link.BurstLoss in the bad state
	Blackhole  int64 // arrived, or was due, while the blackhole was on
	Queue      int64 // tail drop at the bandwidth FIFO
	ClosedFlow int64 // its flow was closed (idle) before delivery
	// Rebound counts server→client packets sent to an upstream port that a
	// Rebind replaced: the old NAT mapping is gone.
	Rebound int64
	// Error counts packets the proxy could not forward: no upstream socket
	// could be opened, or a write failed (normally only while closing).
	Error int64
}

// Total is the sum of all drop reasons.
func (d Drops) Total() int64 {
	return d.Loss + d.Burst + d.Blackhole + d.Queue + d.ClosedFlow + d.Rebound + d.Error
}

// dropReason says why a packet was dropped; dropNone means delivered.
type dropReason int

const (
	dropNone dropReason = iota
	dropLoss
	dropBurst
	dropBlackhole
	dropQueue
	dropClosedFlow
	dropRebound
	dropError
)

func (d *Drops) add(r dropReason) {
	switch r {
	case dropLoss:
		d.Loss++
	case dropBurst:
		d.Burst++
	case dropBlackhole:
		d.Blackhole++
	case dropQueue:
		d.Queue++
	case dropClosedFlow:
		d.ClosedFlow++
	case dropRebound:
		d.Rebound++
	case dropError:
		d.Error++
	}
}
