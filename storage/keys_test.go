package storage

import (
	"bytes"
	"testing"

	"github.com/ternhq/tern/core"
)

func TestKeyOrder(t *testing.T) {
	tests := []struct {
		name        string
		lower, high []byte
	}{
		{"entries by seq", entryKey(0, "alice", 9), entryKey(0, "alice", 10)},
		{"entries by seq across bytes", entryKey(0, "alice", 255), entryKey(0, "alice", 256)},
		{"shards apart", entryKey(1, "zed", 1<<60), entryKey(2, "alice", 1)},
		{"members by id", memberKey(0, "team", "ab"), memberKey(0, "team", "b")},
		{"heads by id", headKey(0, "alice"), headKey(0, "alicf")},
		{"outbox by sender then id", outboxKey(0, core.OutboxKey{Sender: "a", ID: core.MessageID{9}, Recipient: "z"}),
			outboxKey(0, core.OutboxKey{Sender: "a", ID: core.MessageID{10}, Recipient: "a"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if bytes.Compare(tt.lower, tt.high) >= 0 {
				t.Fatalf("%x sorts after %x", tt.lower, tt.high)
			}
		})
	}
}

func TestKeyPrefixesDoNotOverlap(t *testing.T) {
	tests := []struct {
		name   string
		prefix []byte
		other  []byte
	}{
		{"mailbox of a longer id", entryPrefix(0, "al"), entryKey(0, "alice", 1)},
		{"mailbox of another shard", entryPrefix(0, "alice"), entryKey(1, "alice", 1)},
		{"members of a longer group", memberPrefix(0, "team"), memberKey(0, "teams", "bob")},
		{"heads are not entries", shardPrefix(tagHead, 0, 0), entryKey(0, "alice", 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if bytes.HasPrefix(tt.other, tt.prefix) {
				t.Fatalf("%x has prefix %x", tt.other, tt.prefix)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	if shard, u, err := parseHeadKey(headKey(7, "alice")); err != nil || shard != 7 || u != "alice" {
		t.Fatalf("head key: %d %q %v", shard, u, err)
	}
	if shard, u, seq, err := parseEntryKey(entryKey(7, "alice", 150)); err != nil || shard != 7 || u != "alice" || seq != 150 {
		t.Fatalf("entry key: %d %q %d %v", shard, u, seq, err)
	}
	if shard, g, u, err := parseMemberKey(memberKey(7, "team", "bob")); err != nil || shard != 7 || g != "team" || u != "bob" {
		t.Fatalf("member key: %d %q %q %v", shard, g, u, err)
	}
	k := core.OutboxKey{Sender: "alice", ID: testID, Recipient: "bob"}
	if shard, got, err := parseOutboxKey(outboxKey(7, k)); err != nil || shard != 7 || got != k {
		t.Fatalf("outbox key: %d %+v %v", shard, got, err)
	}
	for name, key := range map[string][]byte{
		"empty":        nil,
		"wrong table":  entryKey(0, "alice", 1)[:5],
		"short entry":  entryKey(0, "alice", 1)[:10],
		"id past end":  {tagMember, 0, 0, 10, 'a'},
		"outbox no id": {tagOutbox, 0, 0, 1, 'a', 1, 2},
	} {
		if _, _, _, err := parseEntryKey(key); err == nil {
			t.Errorf("%s: parseEntryKey(%x) succeeded", name, key)
		}
		if _, _, _, err := parseMemberKey(key); err == nil && name != "wrong table" {
			t.Errorf("%s: parseMemberKey(%x) succeeded", name, key)
		}
		if _, _, err := parseOutboxKey(key); err == nil {
			t.Errorf("%s: parseOutboxKey(%x) succeeded", name, key)
		}
	}
}
