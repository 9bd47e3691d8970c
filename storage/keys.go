package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ternhq/tern/core"
)

// Key layout. One byte names the table; every number is big-endian and
// fixed-width, so byte order is numeric order; the shard is 2 bytes right
// after the tag, so a shard's keys never mix with another shard's. An id
// (user, device, group, client_msg_id; at most core.MaxIDLen bytes) that is
// not the last part of its key is prefixed with its length in one byte, so
// that a prefix ending after it matches that id only. The last id of a key
// runs to the end of the key unprefixed, so that the keys under one prefix
// sort by that id in byte order (Members is in id order).
//
//	table            key                                                    value
//	format version   'v'                                                    uint32 formatVersion
//	shard count      'n'                                                    uint32
//	applied index    'a' shard                                              uint64
//	mailbox head     'h' shard user                                         Head
//	entry            'm' shard len user seq(8)                              Entry
//	device cursor    'c' shard len user device                              uint64 seq
//	dedup record     'd' shard len user len device client_msg_id            DedupRecord, expires
//	delivery marker  'r' shard len user id(16)                              DeliveryRecord, expires
//	outbox item      'o' shard len sender id(16) recipient                  OutboxItem
//	group record     'g' shard group                                        GroupMeta
//	group member     'p' shard len group member                             empty
//	block            'b' shard len by who                                   empty
//	push registration 'w' shard len user device                            PushRegistration
//
// Values are the encodings in codec.go. The shard of a key is the shard
// that owns its first id: core.UserShard of the user, sender or blocker,
// core.GroupShard of the group.
const (
	tagFormatVersion = 'v'
	tagShardCount    = 'n'
	tagApplied       = 'a'
	tagHead          = 'h'
	tagEntry         = 'm'
	tagCursor        = 'c'
	tagDedup         = 'd'
	tagDelivery      = 'r'
	tagOutbox        = 'o'
	tagGroup         = 'g'
	tagMember        = 'p'
	tagBlock         = 'b'
	tagPush          = 'w'
)

// MaxShards is the most shards a store can have: the shard is 2 bytes of
// every key.
const MaxShards = 1 << 16

var (
	keyFormatVersion = []byte{tagFormatVersion}
	keyShardCount    = []byte{tagShardCount}
)

// errBadKey says a key does not parse as the table it was read from.
var errBadKey = errors.New("storage: malformed key")

// checkIDs reports an id too long to be part of a key.
func checkIDs(ids ...string) error {
	for _, id := range ids {
		if len(id) > core.MaxIDLen {
			return fmt.Errorf("storage: id of %d bytes, over %d: %w", len(id), core.MaxIDLen, core.ErrInvalid)
		}
	}
	return nil
}

// shardPrefix returns tag and shard, with room for extra more bytes.
func shardPrefix(tag byte, shard, extra int) []byte {
	b := make([]byte, 3, 3+extra)
	b[0] = tag
	binary.BigEndian.PutUint16(b[1:], uint16(shard))
	return b
}

// appendID appends id with its one-byte length.
func appendID(b []byte, id string) []byte {
	return append(append(b, byte(len(id))), id...)
}

func appliedKey(shard int) []byte { return shardPrefix(tagApplied, shard, 0) }

func headKey(shard int, u core.UserID) []byte {
	return append(shardPrefix(tagHead, shard, len(u)), u...)
}

// entryPrefix is the prefix of every entry of u's mailbox.
func entryPrefix(shard int, u core.UserID) []byte {
	return appendID(shardPrefix(tagEntry, shard, 1+len(u)+8), string(u))
}

func entryKey(shard int, u core.UserID, seq core.Seq) []byte {
	return binary.BigEndian.AppendUint64(entryPrefix(shard, u), uint64(seq))
}

func cursorKey(shard int, u core.UserID, d core.DeviceID) []byte {
	return append(appendID(shardPrefix(tagCursor, shard, 1+len(u)+len(d)), string(u)), d...)
}

func dedupKey(shard int, k core.DedupKey) []byte {
	b := shardPrefix(tagDedup, shard, 2+len(k.User)+len(k.Device)+len(k.ClientMsgID))
	b = appendID(b, string(k.User))
	b = appendID(b, string(k.Device))
	return append(b, k.ClientMsgID...)
}

func deliveryKey(shard int, u core.UserID, id core.MessageID) []byte {
	return append(appendID(shardPrefix(tagDelivery, shard, 1+len(u)+len(id)), string(u)), id[:]...)
}

func outboxPrefix(shard int) []byte { return shardPrefix(tagOutbox, shard, 0) }

func outboxKey(shard int, k core.OutboxKey) []byte {
	b := appendID(shardPrefix(tagOutbox, shard, 1+len(k.Sender)+len(k.ID)+len(k.Recipient)), string(k.Sender))
	b = append(b, k.ID[:]...)
	return append(b, k.Recipient...)
}

func groupKey(shard int, g core.GroupID) []byte {
	return append(shardPrefix(tagGroup, shard, len(g)), g...)
}

// memberPrefix is the prefix of every member key of g.
func memberPrefix(shard int, g core.GroupID) []byte {
	return appendID(shardPrefix(tagMember, shard, 1+len(g)+core.MaxIDLen), string(g))
}

func memberKey(shard int, g core.GroupID, u core.UserID) []byte {
	return append(memberPrefix(shard, g), u...)
}

func blockKey(shard int, by, who core.UserID) []byte {
	return append(appendID(shardPrefix(tagBlock, shard, 1+len(by)+len(who)), string(by)), who...)
}

// pushPrefix is the prefix of every push registration of u.
func pushPrefix(shard int, u core.UserID) []byte {
	return appendID(shardPrefix(tagPush, shard, 1+len(u)+core.MaxIDLen), string(u))
}

func pushKey(shard int, u core.UserID, d core.DeviceID) []byte {
	return append(pushPrefix(shard, u), d...)
}

// parsePushKey returns the shard, user and device of a push registration key.
func parsePushKey(key []byte) (int, core.UserID, core.DeviceID, error) {
	shard, rest, err := parseShardKey(key, tagPush)
	if err != nil {
		return 0, "", "", err
	}
	u, rest, err := parsePrefixedID(rest)
	if err != nil {
		return 0, "", "", err
	}
	d, err := parseLastID(rest)
	return shard, core.UserID(u), core.DeviceID(d), err
}

// parseShardKey checks key's tag and returns its shard and the rest.
func parseShardKey(key []byte, tag byte) (int, []byte, error) {
	if len(key) < 3 || key[0] != tag {
		return 0, nil, errBadKey
	}
	return int(binary.BigEndian.Uint16(key[1:3])), key[3:], nil
}

// parseLastID reads the unprefixed id that ends a key.
func parseLastID(rest []byte) (string, error) {
	if len(rest) > core.MaxIDLen {
		return "", errBadKey
	}
	return string(rest), nil
}

// parsePrefixedID reads a length-prefixed id and returns the rest.
func parsePrefixedID(rest []byte) (string, []byte, error) {
	if len(rest) < 1 {
		return "", nil, errBadKey
	}
	n := int(rest[0])
	if n > core.MaxIDLen || len(rest) < 1+n {
		return "", nil, errBadKey
	}
	return string(rest[1 : 1+n]), rest[1+n:], nil
}

// parseHeadKey returns the shard and user of a mailbox head key.
func parseHeadKey(key []byte) (int, core.UserID, error) {
	shard, rest, err := parseShardKey(key, tagHead)
	if err != nil {
		return 0, "", err
	}
	u, err := parseLastID(rest)
	return shard, core.UserID(u), err
}

// parseEntryKey returns the shard, user and seq of an entry key.
func parseEntryKey(key []byte) (int, core.UserID, core.Seq, error) {
	shard, rest, err := parseShardKey(key, tagEntry)
	if err != nil {
		return 0, "", 0, err
	}
	u, rest, err := parsePrefixedID(rest)
	if err != nil {
		return 0, "", 0, err
	}
	if len(rest) != 8 {
		return 0, "", 0, errBadKey
	}
	return shard, core.UserID(u), core.Seq(binary.BigEndian.Uint64(rest)), nil
}

// parseMemberKey returns the shard, group and member of a member key.
func parseMemberKey(key []byte) (int, core.GroupID, core.UserID, error) {
	shard, rest, err := parseShardKey(key, tagMember)
	if err != nil {
		return 0, "", "", err
	}
	g, rest, err := parsePrefixedID(rest)
	if err != nil {
		return 0, "", "", err
	}
	u, err := parseLastID(rest)
	return shard, core.GroupID(g), core.UserID(u), err
}

// parseOutboxKey returns the shard and outbox key of an outbox item key.
func parseOutboxKey(key []byte) (int, core.OutboxKey, error) {
	shard, rest, err := parseShardKey(key, tagOutbox)
	if err != nil {
		return 0, core.OutboxKey{}, err
	}
	sender, rest, err := parsePrefixedID(rest)
	if err != nil {
		return 0, core.OutboxKey{}, err
	}
	var k core.OutboxKey
	if len(rest) < len(k.ID) {
		return 0, core.OutboxKey{}, errBadKey
	}
	copy(k.ID[:], rest)
	r, err := parseLastID(rest[len(k.ID):])
	if err != nil {
		return 0, core.OutboxKey{}, err
	}
	k.Sender, k.Recipient = core.UserID(sender), core.UserID(r)
	return shard, k, nil
}
