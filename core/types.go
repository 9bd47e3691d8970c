package core

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"
)

// UserID names a user (and so a mailbox). 1..MaxIDLen bytes of UTF-8 without
// control characters.
type UserID string

// DeviceID names one device of a user.
type DeviceID string

// GroupID names a group.
type GroupID string

// ClientMsgID is the sender device's idempotency key for a send.
type ClientMsgID string

// Seq is a position in one user's mailbox: 1, 2, 3… with no gaps.
type Seq uint64

// MaxIDLen bounds user, device, group and client message ids, in bytes.
const MaxIDLen = 128

// MessageID is the server's id of a message: the same in the sender's and
// every recipient's mailbox. It is 6 bytes of milliseconds since the epoch
// followed by 10 random bytes, so ids sort by creation time.
type MessageID [16]byte

// NewMessageID returns a fresh id for a message created at t.
func NewMessageID(t time.Time) MessageID {
	var id MessageID
	ms := uint64(t.UnixMilli())
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], ms)
	copy(id[:6], b[2:])
	_, _ = rand.Read(id[6:])
	return id
}

func (id MessageID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is unset.
func (id MessageID) IsZero() bool { return id == MessageID{} }

// MessageIDFromBytes converts a 16-byte slice.
func MessageIDFromBytes(b []byte) (MessageID, error) {
	var id MessageID
	if len(b) != len(id) {
		return id, fmt.Errorf("message id: want %d bytes, got %d", len(id), len(b))
	}
	copy(id[:], b)
	return id, nil
}

// Entry is one message in one mailbox.
type Entry struct {
	Seq        Seq
	ID         MessageID
	From       UserID
	FromDevice DeviceID
	// To is the recipient of a direct message; empty for group messages.
	To UserID
	// Group is set when the message was sent to a group.
	Group GroupID
	Body  []byte
	// SentAt is when the server accepted the send, in milliseconds precision.
	SentAt time.Time
	// ClientMsgID is set on the sender's own copy only.
	ClientMsgID ClientMsgID
}

// Head is the durable state of one mailbox.
type Head struct {
	// Head is the newest seq; 0 for an empty mailbox.
	Head Seq
	// Floor is the lowest seq still retained; entries below it were trimmed.
	// An untouched mailbox has Floor 1 (0 is read as 1).
	Floor Seq
	// Acked is the account-level acknowledged seq (AckAccount mode).
	Acked Seq
}

// EffectiveFloor returns Floor, reading 0 as 1.
func (h Head) EffectiveFloor() Seq {
	if h.Floor == 0 {
		return 1
	}
	return h.Floor
}

// AckMode decides what a device is sent after the seq it reports.
type AckMode int

const (
	// AckAccount (the default) keeps one acknowledged seq per account: a
	// device reporting less than it is sent only what follows it.
	AckAccount AckMode = iota
	// AckDevice keeps one cursor per device: each device is sent everything
	// after what it reports, within retention.
	AckDevice
)

func (m AckMode) String() string {
	switch m {
	case AckAccount:
		return "account"
	case AckDevice:
		return "device"
	}
	return fmt.Sprintf("AckMode(%d)", int(m))
}

// ParseAckMode parses "account" or "device".
func ParseAckMode(s string) (AckMode, error) {
	switch s {
	case "", "account":
		return AckAccount, nil
	case "device":
		return AckDevice, nil
	}
	return 0, fmt.Errorf("ack mode %q: want account or device", s)
}

// Platform is the kind of device.
type Platform int

const (
	PlatformUnknown Platform = iota
	PlatformIOS
	PlatformAndroid
	PlatformWeb
	PlatformDesktop
)

func (p Platform) String() string {
	switch p {
	case PlatformIOS:
		return "ios"
	case PlatformAndroid:
		return "android"
	case PlatformWeb:
		return "web"
	case PlatformDesktop:
		return "desktop"
	}
	return "unknown"
}

// AppState is what the app last said about its process.
type AppState int

const (
	Foreground AppState = iota
	Background
)

func (s AppState) String() string {
	if s == Background {
		return "background"
	}
	return "foreground"
}

// GroupMeta is a group's record.
type GroupMeta struct {
	Owner   UserID
	Created time.Time
	// Members is the number of members.
	Members int
}

// DedupKey identifies one send for idempotency.
type DedupKey struct {
	User        UserID
	Device      DeviceID
	ClientMsgID ClientMsgID
}

// DedupRecord is what a send answered, kept for the dedup window.
type DedupRecord struct {
	ID      MessageID
	Seq     Seq
	SentAt  time.Time
	Expires time.Time
}

// DeliveryRecord marks that a message was forwarded to a recipient's
// mailbox (Seq 0 when the recipient's blocklist dropped it).
type DeliveryRecord struct {
	Seq     Seq
	Expires time.Time
}

// OutboxItem is a message still to be appended to one recipient's mailbox.
// It lives in the sender's shard until the forwarder has delivered it.
type OutboxItem struct {
	Recipient UserID
	// Entry is the recipient's copy; its Seq is assigned on delivery.
	Entry Entry
	// Created is when the item was written.
	Created time.Time
}

// Key identifies the item in its outbox.
func (o OutboxItem) Key() OutboxKey {
	return OutboxKey{Sender: o.Entry.From, ID: o.Entry.ID, Recipient: o.Recipient}
}

// OutboxKey identifies an outbox item.
type OutboxKey struct {
	Sender    UserID
	ID        MessageID
	Recipient UserID
}

func validID(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalid, kind)
	case len(s) > MaxIDLen:
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, kind, MaxIDLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalid, kind)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s contains a control character", ErrInvalid, kind)
		}
	}
	return nil
}

// Validate checks a user id.
func (u UserID) Validate() error { return validID("user id", string(u)) }

// Validate checks a device id.
func (d DeviceID) Validate() error { return validID("device id", string(d)) }

// Validate checks a group id.
func (g GroupID) Validate() error { return validID("group id", string(g)) }

// Validate checks a client message id.
func (c ClientMsgID) Validate() error { return validID("client_msg_id", string(c)) }
