package wire

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// ALPN is the TLS application protocol of Tern's QUIC connections.
const ALPN = "tern/1"

// CapabilityVersion is the protocol capability this package implements.
// Hello and Welcome carry it; each side speaks the minimum of the two.
//
//   - 1: the first version.
//   - 2: Request.send_batch.
//   - 3: Notify.entries (small new messages inline in the Notify).
//   - 4: a send's answer stands for the Notify of the sender's own new
//     entry: the server writes no Notify for an entry that a send on the
//     same connection created once that send is answered, and the client
//     builds the entry from its request, the answer and the Welcome.
const CapabilityVersion = 4

// MaxSendBatch is the most sends a SendBatchRequest may carry.
const MaxSendBatch = 64

// DefaultMaxFrameSize is the frame size limit, in bytes, used when a
// configuration leaves it zero. It bounds a single Request or SessionUp frame
// written by a client and a single Response written by a server.
const DefaultMaxFrameSize = 256 << 10

// MaxVarintLen is the most bytes a frame's length prefix may take.
const MaxVarintLen = 10

// Millis converts a duration to the uint32 milliseconds used on the wire,
// saturating at the type's bounds.
func Millis(d time.Duration) uint32 {
	ms := d.Milliseconds()
	switch {
	case ms <= 0:
		return 0
	case ms > int64(^uint32(0)):
		return ^uint32(0)
	}
	return uint32(ms)
}

// SizeInSyncResponse is how many bytes e adds to an encoded SyncResponse:
// its field tag, its length prefix and its encoding.
func (e *Entry) SizeInSyncResponse() int {
	n := proto.Size(e)
	return 1 + protowire.SizeVarint(uint64(n)) + n
}
