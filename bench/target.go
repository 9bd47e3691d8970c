package bench

import (
	"context"
	"time"
)

// A Target is a messaging system under test, seen from its clients: Tern
// through its SDK, or a peer (an MQTT broker with persistent sessions, NATS
// JetStream) through theirs, running the same durable-inbox workload. The
// load generators and the delivery validator only ever use this interface.
type Target interface {
	// Name labels the target in reports ("tern", "mochi-mqtt/tcp", ...).
	Name() string
	// Connect opens a client for user. Messages for user are handed to
	// deliver, in the order the target delivers them, from one goroutine
	// per connection; deliver must not block for long. A user connected
	// again after Close resumes where it stopped (durable inbox).
	Connect(ctx context.Context, user string, deliver func(Delivery)) (Conn, error)
	// Close releases what the target holds (servers it started, ...).
	Close() error
}

// Conn is one connected client of a Target.
type Conn interface {
	// Send delivers body to user `to` and returns once the target has
	// acknowledged it durably: after a crash of the server the message is
	// still delivered. It retries on its own until ctx is done.
	Send(ctx context.Context, to string, body []byte) error
	// Close disconnects; queued deliveries stay in the target.
	Close() error
}

// Delivery is one message handed to a receiving client.
type Delivery struct {
	// Seq is the receiver's mailbox position where the target has one
	// (Tern), 0 otherwise.
	Seq uint64
	// ID is the target's message id, "" when it has none.
	ID   string
	Body []byte
	// At is when the client got it.
	At time.Time
}
