package client

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ternhq/tern/wire"
)

// MessageID is the server's id of a message, the same in every mailbox.
type MessageID [16]byte

func (id MessageID) String() string { return hex.EncodeToString(id[:]) }

func messageID(b []byte) MessageID {
	var id MessageID
	copy(id[:], b)
	return id
}

// Message is one entry of the user's mailbox.
type Message struct {
	// Seq is the entry's position in this user's mailbox.
	Seq uint64
	ID  MessageID
	// From and FromDevice name the sender.
	From       string
	FromDevice string
	// To is the recipient of a direct message; Group is set instead for a
	// group message.
	To     string
	Group  string
	Body   []byte
	SentAt time.Time
	// ClientMsgID is set on the sender's own copy only.
	ClientMsgID string
	// Mine is true when the message was sent by this user (from this device
	// or another one).
	Mine bool
}

func newMessage(e *wire.Entry, self string) Message {
	return Message{
		Seq:         e.GetSeq(),
		ID:          messageID(e.GetId()),
		From:        e.GetFrom(),
		FromDevice:  e.GetFromDevice(),
		To:          e.GetTo(),
		Group:       e.GetGroup(),
		Body:        e.GetBody(),
		SentAt:      time.UnixMilli(e.GetSentAtMs()),
		ClientMsgID: e.GetClientMsgId(),
		Mine:        self != "" && e.GetFrom() == self,
	}
}

// SendOptions describes one send. Exactly one of To and Group is set.
type SendOptions struct {
	// ClientMsgID makes the send idempotent: every attempt of this send, and
	// any later send with the same id from this device within the server's
	// dedup window, returns the first send's result. 1..64 bytes; empty means
	// a fresh NewClientMsgID. Apps that persist outgoing messages set it so
	// that a send retried after a restart is stored once.
	ClientMsgID string
	To          string
	Group       string
	Body        []byte
}

// SendResult is the server's answer to a send.
type SendResult struct {
	ID MessageID
	// Seq is the message's seq in the sender's own mailbox.
	Seq         uint64
	SentAt      time.Time
	ClientMsgID string
	// Duplicate is true when the server had already stored this
	// ClientMsgID (an earlier attempt whose answer was lost, for instance).
	Duplicate bool
}

// NewClientMsgID returns a fresh client message id: 16 random bytes,
// base64url without padding.
func NewClientMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// EventKind says what an Event reports.
type EventKind int

const (
	// EventConnected: a session is up (Session, Resumed, Used0RTT).
	EventConnected EventKind = iota + 1
	// EventDisconnected: the session ended (Err); the client reconnects.
	EventDisconnected
	// EventGoAway: the server asked the client to reconnect (Code, Delay).
	EventGoAway
	// EventResync: the server no longer holds what follows the local seq, or
	// holds less than it. The local seq moved from OldSeq to NewSeq; when
	// NewSeq > OldSeq the entries OldSeq+1..NewSeq will never be delivered.
	EventResync
	// EventReplaced: a newer session of the same device took over. The
	// client stops; its calls return Err.
	EventReplaced
	// EventStopped: a terminal error (Err) stopped the client, e.g. a token
	// the server no longer accepts.
	EventStopped
	// EventMigrated: the connection moved to a new local address (Addr).
	EventMigrated
	// EventMigrationFailed: moving to Addr failed (Err); the client
	// reconnects from there instead.
	EventMigrationFailed
)

var eventNames = map[EventKind]string{
	EventConnected:       "connected",
	EventDisconnected:    "disconnected",
	EventGoAway:          "goaway",
	EventResync:          "resync",
	EventReplaced:        "replaced",
	EventStopped:         "stopped",
	EventMigrated:        "migrated",
	EventMigrationFailed: "migration_failed",
}

func (k EventKind) String() string {
	if s, ok := eventNames[k]; ok {
		return s
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event reports a change of the client's state. Which fields are set depends
// on Kind.
type Event struct {
	Kind     EventKind
	Err      error
	Session  string
	Resumed  bool
	Used0RTT bool
	Code     wire.Code
	Delay    time.Duration
	OldSeq   uint64
	NewSeq   uint64
	Addr     string
}

// Stats are the client's counters since Dial.
type Stats struct {
	// Dials counts connection attempts, Connects the ones that got a
	// Welcome, Reconnects those of them after the first.
	Dials      uint64
	Connects   uint64
	Reconnects uint64
	// Handshakes counts full TLS handshakes, Resumed resumed ones, Used0RTT
	// the resumed ones whose 0-RTT data the server accepted, Rejected0RTT
	// the ones whose 0-RTT data it refused.
	Handshakes   uint64
	Resumed      uint64
	Used0RTT     uint64
	Rejected0RTT uint64
	Disconnects  uint64
	GoAways      uint64
	// Notifies counts Notify frames; Syncs SyncRequests (pages asked for);
	// Resyncs accepted gaps; Messages messages handed to the app; Acks
	// AckRequests.
	Notifies uint64
	Syncs    uint64
	Resyncs  uint64
	Messages uint64
	Acks     uint64
	// Sends counts sends answered by the server, SendRetries attempts after
	// the first.
	Sends       uint64
	SendRetries uint64
	// SendBatches counts send_batch requests (two or more sends each).
	SendBatches uint64
	// Migrations counts successful network switches, MigrationFailures the
	// ones that fell back to a reconnect.
	Migrations        uint64
	MigrationFailures uint64
	// DeadPaths counts paths declared dead by Config.DeadPathTimeout.
	DeadPaths uint64
	// StaleNotifies counts wakes of the pull loop by a Notify or a send's
	// answer that found nothing to do: what they announced had already been
	// fetched or taken.
	StaleNotifies uint64
	// Inline counts messages taken from Notify frames (capability 3)
	// without a pull.
	Inline uint64
	// DatagramsOut and DatagramsIn count the UDP datagrams the client's
	// sockets sent and received (QUIC packets, coalesced ones counting
	// once), retransmissions and probes included.
	DatagramsOut uint64
	DatagramsIn  uint64
}

type counters struct {
	dials, connects, reconnects                                  atomic.Uint64
	handshakes, resumed, used0RTT, rejected0RTT                  atomic.Uint64
	disconnects, goAways                                         atomic.Uint64
	notifies, syncs, resyncs, messages, acks                     atomic.Uint64
	sends, sendRetries, sendBatches, migrations, migrationFailed atomic.Uint64
	deadPaths, staleWakes, inline                                atomic.Uint64
	datagramsOut, datagramsIn                                    atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Dials:             c.dials.Load(),
		Connects:          c.connects.Load(),
		Reconnects:        c.reconnects.Load(),
		Handshakes:        c.handshakes.Load(),
		Resumed:           c.resumed.Load(),
		Used0RTT:          c.used0RTT.Load(),
		Rejected0RTT:      c.rejected0RTT.Load(),
		Disconnects:       c.disconnects.Load(),
		GoAways:           c.goAways.Load(),
		Notifies:          c.notifies.Load(),
		Syncs:             c.syncs.Load(),
		Resyncs:           c.resyncs.Load(),
		Messages:          c.messages.Load(),
		Acks:              c.acks.Load(),
		Sends:             c.sends.Load(),
		SendRetries:       c.sendRetries.Load(),
		SendBatches:       c.sendBatches.Load(),
		Migrations:        c.migrations.Load(),
		MigrationFailures: c.migrationFailed.Load(),
		DeadPaths:         c.deadPaths.Load(),
		StaleNotifies:     c.staleWakes.Load(),
		Inline:            c.inline.Load(),
		DatagramsOut:      c.datagramsOut.Load(),
		DatagramsIn:       c.datagramsIn.Load(),
	}
}
