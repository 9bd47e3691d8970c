package storage

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus in testdata/fuzz")

var (
	testTime = time.UnixMilli(1_767_225_600_123)
	testID   = core.MessageID{0x01, 0x9b, 0x6f, 0x00, 0x00, 0x7b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
)

func testEntry() core.Entry {
	return core.Entry{
		Seq: 42, ID: testID, From: "alice", FromDevice: "phone", To: "bob",
		Body: []byte("hello, bob"), SentAt: testTime, ClientMsgID: "c-1",
	}
}

// codecCase is one valid encoding per value type and shape; the fuzz seeds
// and the truncation test are made from them.
type codecCase struct {
	name   string
	fuzz   string // the fuzz target whose corpus it seeds
	encode func() []byte
	// roundTrip decodes b and reports a difference from the encoded value.
	roundTrip func(b []byte) error
}

func codecCases() []codecCase {
	entryCase := func(name string, e core.Entry) codecCase {
		return codecCase{name, "FuzzDecodeEntry", func() []byte { return encodeEntry(&e) }, func(b []byte) error {
			got, err := decodeEntry(b)
			if err != nil {
				return err
			}
			return diffEntry(got, e)
		}}
	}
	group := testEntry()
	group.To, group.Group, group.ClientMsgID = "", "team", ""
	empty := core.Entry{}
	long := testEntry()
	long.From = core.UserID(strings.Repeat("é", core.MaxIDLen/2))
	long.Body = bytes.Repeat([]byte{0xff}, 300)
	old := testEntry()
	old.SentAt = time.UnixMilli(-1)

	headCase := func(name string, h core.Head) codecCase {
		return codecCase{name, "FuzzDecodeHead", func() []byte { return encodeHead(h) }, func(b []byte) error {
			got, err := decodeHead(b)
			if err != nil {
				return err
			}
			if got != h {
				return fmt.Errorf("got %+v, want %+v", got, h)
			}
			return nil
		}}
	}
	dedup := core.DedupRecord{ID: testID, Seq: 7, SentAt: testTime, Expires: testTime.Add(24 * time.Hour)}
	delivery := core.DeliveryRecord{Seq: 9, Expires: testTime.Add(time.Hour)}
	item := core.OutboxItem{Recipient: "carol", Entry: testEntry(), Created: testTime}
	item.Entry.Seq, item.Entry.ClientMsgID = 0, ""
	meta := core.GroupMeta{Owner: "alice", Created: testTime, Members: 1000}
	pushCase := func(name string, r core.PushRegistration) codecCase {
		return codecCase{name, "FuzzDecodePush", func() []byte { return encodePush(r) }, func(b []byte) error {
			got, err := decodePush(b)
			if err != nil {
				return err
			}
			if got != r {
				return fmt.Errorf("got %+v, want %+v", got, r)
			}
			return nil
		}}
	}

	return []codecCase{
		entryCase("entry-direct", testEntry()),
		entryCase("entry-group", group),
		entryCase("entry-empty", empty),
		entryCase("entry-long", long),
		entryCase("entry-before-epoch", old),
		headCase("head", core.Head{Head: 150, Floor: 3, Acked: 120}),
		headCase("head-zero", core.Head{}),
		headCase("head-max", core.Head{Head: 1<<64 - 1, Floor: 1 << 63, Acked: 1 << 32}),
		{"dedup", "FuzzDecodeDedup", func() []byte { return encodeDedup(dedup) }, func(b []byte) error {
			got, err := decodeDedup(b)
			if err != nil {
				return err
			}
			if got.ID != dedup.ID || got.Seq != dedup.Seq || !got.SentAt.Equal(dedup.SentAt) || !got.Expires.Equal(dedup.Expires) {
				return fmt.Errorf("got %+v, want %+v", got, dedup)
			}
			return nil
		}},
		{"delivery", "FuzzDecodeDelivery", func() []byte { return encodeDelivery(delivery) }, func(b []byte) error {
			got, err := decodeDelivery(b)
			if err != nil {
				return err
			}
			if got.Seq != delivery.Seq || !got.Expires.Equal(delivery.Expires) {
				return fmt.Errorf("got %+v, want %+v", got, delivery)
			}
			return nil
		}},
		{"outbox", "FuzzDecodeOutbox", func() []byte { return encodeOutbox(&item) }, func(b []byte) error {
			got, err := decodeOutbox(b)
			if err != nil {
				return err
			}
			if got.Recipient != item.Recipient || !got.Created.Equal(item.Created) {
				return fmt.Errorf("got %+v, want %+v", got, item)
			}
			return diffEntry(got.Entry, item.Entry)
		}},
		pushCase("push-ios", core.PushRegistration{Platform: core.PlatformIOS, Token: "a1b2c3", Topic: "com.example.app", Sandbox: true}),
		pushCase("push-android", core.PushRegistration{Platform: core.PlatformAndroid, Token: strings.Repeat("t", 300)}),
		{"group", "FuzzDecodeGroup", func() []byte { return encodeGroup(meta) }, func(b []byte) error {
			got, err := decodeGroup(b)
			if err != nil {
				return err
			}
			if got.Owner != meta.Owner || got.Members != meta.Members || !got.Created.Equal(meta.Created) {
				return fmt.Errorf("got %+v, want %+v", got, meta)
			}
			return nil
		}},
	}
}

func diffEntry(got, want core.Entry) error {
	if got.Seq != want.Seq || got.ID != want.ID || got.From != want.From || got.FromDevice != want.FromDevice ||
		got.To != want.To || got.Group != want.Group || !bytes.Equal(got.Body, want.Body) ||
		!got.SentAt.Equal(want.SentAt) || got.SentAt.IsZero() != want.SentAt.IsZero() || got.ClientMsgID != want.ClientMsgID {
		return fmt.Errorf("got %+v, want %+v", got, want)
	}
	return nil
}

func TestCodecRoundTrip(t *testing.T) {
	for _, c := range codecCases() {
		t.Run(c.name, func(t *testing.T) {
			if err := c.roundTrip(c.encode()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCodecTruncated checks that every strict prefix of a valid encoding,
// and the encoding with a byte appended, fail with errCorrupt.
func TestCodecTruncated(t *testing.T) {
	for _, c := range codecCases() {
		t.Run(c.name, func(t *testing.T) {
			b := c.encode()
			for n := range len(b) {
				if err := c.roundTrip(b[:n]); !errors.Is(err, errCorrupt) {
					t.Fatalf("prefix of %d of %d bytes: %v, want errCorrupt", n, len(b), err)
				}
			}
			if err := c.roundTrip(append(b[:len(b):len(b)], 0)); !errors.Is(err, errCorrupt) {
				t.Fatalf("trailing byte: %v, want errCorrupt", err)
			}
		})
	}
}

func TestCodecRejects(t *testing.T) {
	valid := encodeHead(core.Head{Head: 1})
	tests := []struct {
		name string
		b    []byte
	}{
		{"unknown version", append([]byte{2}, valid[1:]...)},
		{"non-shortest number", []byte{codecV1, 0x81, 0x00, 0, 0}},
		{"overflowing number", append([]byte{codecV1}, bytes.Repeat([]byte{0xff}, 11)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeHead(tt.b); !errors.Is(err, errCorrupt) {
				t.Fatalf("decodeHead(%x): %v, want errCorrupt", tt.b, err)
			}
		})
	}
	t.Run("over-long id", func(t *testing.T) {
		g := encodeGroup(core.GroupMeta{Owner: "a"})
		b := append([]byte{codecV1, core.MaxIDLen + 1, 1}, bytes.Repeat([]byte{'x'}, core.MaxIDLen+1)...)
		b = append(b, g[3:]...)
		if _, err := decodeGroup(b); !errors.Is(err, errCorrupt) {
			t.Fatalf("decodeGroup with a %d-byte owner: %v", core.MaxIDLen+1, err)
		}
	})
}

func TestExpiresAt(t *testing.T) {
	g := uint64(ExpiryGrace / time.Second)
	tests := []struct {
		name string
		t    time.Time
		want uint64
	}{
		{"zero means never", time.Time{}, 0},
		{"whole second plus grace", time.Unix(100, 0), 100 + g},
		{"rounded up", time.UnixMilli(100_001), 101 + g},
		{"long before the epoch", time.Unix(-5-int64(g), 0), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expiresAt(tt.t); got != tt.want {
				t.Fatalf("expiresAt(%v) = %d, want %d", tt.t, got, tt.want)
			}
		})
	}
}

// fuzzRoundTrip checks that decoding never panics and that whatever decodes
// encodes back to the same bytes (the encodings are canonical).
func fuzzRoundTrip[T any](f *testing.F, decode func([]byte) (T, error), encode func(T) []byte) {
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decode(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error not errCorrupt: %v", err)
			}
			return
		}
		if got := encode(v); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %x gave %x", b, got)
		}
	})
}

func FuzzDecodeEntry(f *testing.F) {
	fuzzRoundTrip(f, decodeEntry, func(e core.Entry) []byte { return encodeEntry(&e) })
}

func FuzzDecodeHead(f *testing.F) { fuzzRoundTrip(f, decodeHead, encodeHead) }

func FuzzDecodeDedup(f *testing.F) { fuzzRoundTrip(f, decodeDedup, encodeDedup) }

func FuzzDecodeDelivery(f *testing.F) { fuzzRoundTrip(f, decodeDelivery, encodeDelivery) }

func FuzzDecodeOutbox(f *testing.F) {
	fuzzRoundTrip(f, decodeOutbox, func(o core.OutboxItem) []byte { return encodeOutbox(&o) })
}

func FuzzDecodeGroup(f *testing.F) { fuzzRoundTrip(f, decodeGroup, encodeGroup) }

func FuzzDecodePush(f *testing.F) { fuzzRoundTrip(f, decodePush, encodePush) }

// FuzzParseKey runs every key parser; a key that parses must be the key
// its parts build.
func FuzzParseKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, key []byte) {
		if shard, u, err := parseHeadKey(key); err == nil && !bytes.Equal(headKey(shard, u), key) {
			t.Fatalf("head key %x rebuilt as %x", key, headKey(shard, u))
		}
		if shard, u, seq, err := parseEntryKey(key); err == nil && !bytes.Equal(entryKey(shard, u, seq), key) {
			t.Fatalf("entry key %x rebuilt as %x", key, entryKey(shard, u, seq))
		}
		if shard, g, u, err := parseMemberKey(key); err == nil && !bytes.Equal(memberKey(shard, g, u), key) {
			t.Fatalf("member key %x rebuilt as %x", key, memberKey(shard, g, u))
		}
		if shard, k, err := parseOutboxKey(key); err == nil && !bytes.Equal(outboxKey(shard, k), key) {
			t.Fatalf("outbox key %x rebuilt as %x", key, outboxKey(shard, k))
		}
		if shard, u, d, err := parsePushKey(key); err == nil && !bytes.Equal(pushKey(shard, u, d), key) {
			t.Fatalf("push key %x rebuilt as %x", key, pushKey(shard, u, d))
		}
	})
}

func keySeeds() map[string][]byte {
	return map[string][]byte{
		"head":   headKey(3, "alice"),
		"entry":  entryKey(1, "alice", 150),
		"member": memberKey(65535, "team", "bob"),
		"outbox": outboxKey(0, core.OutboxKey{Sender: "alice", ID: testID, Recipient: "bob"}),
		"push":   pushKey(2, "alice", "phone"),
	}
}

// TestFuzzSeedCorpus checks that testdata/fuzz holds the seeds made from
// codecCases and keySeeds. Regenerate with
//
//	go test ./storage -run TestFuzzSeedCorpus -update-corpus
func TestFuzzSeedCorpus(t *testing.T) {
	want := map[string][]byte{} // path → content
	add := func(target, name string, b []byte) {
		path := filepath.Join("testdata", "fuzz", target, "seed-"+name)
		want[path] = fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
	}
	for _, c := range codecCases() {
		add(c.fuzz, c.name, c.encode())
	}
	for name, k := range keySeeds() {
		add("FuzzParseKey", name, k)
	}
	for _, path := range slices.Sorted(maps.Keys(want)) {
		content := want[path]
		if *updateCorpus {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, content, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s is missing or stale (%v); run: go test ./storage -run TestFuzzSeedCorpus -update-corpus", path, err)
		}
	}
}
