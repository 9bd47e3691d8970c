package core

import (
	"context"
	"hash/fnv"
	"time"
)

// Store is the durable state core works on. storage implements it over Badger
// and in memory; both pass the same contract suite (storage/storetest).
//
// All state changes go through Apply as deterministic commands; reads see
// only what committed commands wrote.
type Store interface {
	// Shards is the fixed number of shards state is split into. Users and
	// groups map to shards with UserShard and GroupShard.
	Shards() int

	// Apply runs cmd against the state of the shard cmd.Shard names and
	// returns once its effects are durable (or once it failed and wrote
	// nothing). Concurrent calls are packed into shared transactions.
	// ErrOverloaded means the shard's queue is full; ErrClosed that the store
	// is closed.
	Apply(ctx context.Context, cmd Command) (Result, error)

	Head(ctx context.Context, u UserID) (Head, error)
	// Entries returns up to limit entries of u's mailbox with seq > after, in
	// seq order, stopping early once their bodies exceed maxBytes (at least
	// one entry is returned when one exists). maxBytes <= 0 means no limit.
	Entries(ctx context.Context, u UserID, after Seq, limit, maxBytes int) ([]Entry, error)
	Cursor(ctx context.Context, u UserID, d DeviceID) (Seq, error)
	Group(ctx context.Context, g GroupID) (GroupMeta, bool, error)
	// Members returns the group's members in id order.
	Members(ctx context.Context, g GroupID) ([]UserID, error)
	IsMember(ctx context.Context, g GroupID, u UserID) (bool, error)
	// Blocks reports whether by blocks who.
	Blocks(ctx context.Context, by, who UserID) (bool, error)
	// Outbox calls fn for every outbox item of shard, in key order, until fn
	// returns false.
	Outbox(ctx context.Context, shard int, fn func(OutboxItem) bool) error
	// Mailboxes calls fn for the head of every mailbox of shard until fn
	// returns false.
	Mailboxes(ctx context.Context, shard int, fn func(UserID, Head) bool) error
	// PushRegistrations returns the push registrations of u's devices.
	PushRegistrations(ctx context.Context, u UserID) (map[DeviceID]PushRegistration, error)
	// AllPushRegistrations calls fn for every push registration of shard
	// until fn returns false.
	AllPushRegistrations(ctx context.Context, shard int, fn func(UserID, DeviceID, PushRegistration) bool) error

	Close() error
}

// StateTx is the typed view of one shard's state that a command is applied to.
// Reads see the writes of the same command and of commands before it in the
// same transaction. Implementations need not be safe for concurrent use.
type StateTx interface {
	// Shard is the shard this transaction owns; Shards the total.
	Shard() int
	Shards() int

	Head(u UserID) (Head, error)
	PutHead(u UserID, h Head) error
	// Entry returns u's entry at seq.
	Entry(u UserID, seq Seq) (Entry, bool, error)
	PutEntry(u UserID, e *Entry) error
	DeleteEntry(u UserID, seq Seq) error

	Dedup(k DedupKey) (DedupRecord, bool, error)
	PutDedup(k DedupKey, r DedupRecord) error

	Delivery(u UserID, id MessageID) (DeliveryRecord, bool, error)
	PutDelivery(u UserID, id MessageID, r DeliveryRecord) error

	PutOutbox(o *OutboxItem) error
	DeleteOutbox(k OutboxKey) error

	Cursor(u UserID, d DeviceID) (Seq, error)
	PutCursor(u UserID, d DeviceID, s Seq) error

	Group(g GroupID) (GroupMeta, bool, error)
	PutGroup(g GroupID, m GroupMeta) error
	IsMember(g GroupID, u UserID) (bool, error)
	PutMember(g GroupID, u UserID) error
	DeleteMember(g GroupID, u UserID) error

	Blocks(by, who UserID) (bool, error)
	PutBlock(by, who UserID) error
	DeleteBlock(by, who UserID) error

	PushRegistration(u UserID, d DeviceID) (PushRegistration, bool, error)
	PutPushRegistration(u UserID, d DeviceID, r PushRegistration) error
	DeletePushRegistration(u UserID, d DeviceID) error
}

// Command is one deterministic state change. Apply must depend only on the
// command's fields and the state it reads through tx, so that replaying the
// same commands in the same order on the same state gives the same state.
// An error from Apply means the command wrote nothing; the store discards its
// writes and goes on with the other commands of the transaction.
type Command interface {
	// Shard returns the shard whose state the command changes, given the
	// number of shards.
	Shard(shards int) int
	Apply(tx StateTx) (Result, error)
}

// Result is what an applied command reports back.
type Result struct {
	// ID, Seq and SentAt describe the entry a send or delivery created (or,
	// with Duplicate, the one an earlier identical command created).
	ID        MessageID
	Seq       Seq
	SentAt    time.Time
	Duplicate bool
	// Acked is the acknowledged seq after an ack (see Head.Acked and cursors).
	Acked Seq
	// Grown lists the mailboxes that received entries, with their new heads,
	// so that core can notify their sessions.
	Grown []Growth
	// Outbox lists the items written for the forwarder.
	Outbox []OutboxItem
	// Members is set by group commands that list members.
	Members []UserID
}

// Growth says that a mailbox grew to Head.
type Growth struct {
	User UserID
	Head Seq
	// Entry is the entry at Head (push previews use it).
	Entry *Entry
}

// ShardOf maps a key to one of n shards with FNV-1a. It never changes for a
// given key and n: data is laid out by it.
func ShardOf(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum64() % uint64(n))
}

// UserShard is the shard holding u's mailbox, cursors, dedup records and
// outbox.
func UserShard(u UserID, n int) int { return ShardOf("u/"+string(u), n) }

// GroupShard is the shard holding g's record and members.
func GroupShard(g GroupID, n int) int { return ShardOf("g/"+string(g), n) }
