package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/ternhq/tern/core"
)

// Value encodings. Every value starts with a version byte (codecV1); the
// fields follow in a fixed order:
//
//	number   uvarint (signed ones zigzag varint), shortest form only
//	id       uvarint length (at most core.MaxIDLen) + bytes
//	body     uvarint length + bytes
//	time     varint milliseconds since the Unix epoch (the zero time is
//	         time.Time{}.UnixMilli()); sub-millisecond precision is dropped
//	msg id   16 bytes
//
//	Head            head, floor, acked
//	Entry           seq, msg id, from, from device, to, group, sent at, client_msg_id, body
//	DedupRecord     msg id, seq, sent at, expires
//	DeliveryRecord  seq, expires
//	OutboxItem      recipient, created, then the Entry fields (without version)
//	GroupMeta       owner, created, members (signed)
//
// Decoders reject unknown versions, truncated input, non-shortest numbers,
// oversized ids and trailing bytes, so that decode(b) succeeding implies
// encode(decode(b)) == b. Cursors and the applied index are plain 8-byte
// big-endian numbers.
const codecV1 = 1

// errCorrupt says a stored value does not decode.
var errCorrupt = errors.New("storage: corrupt value")

func corrupt(what, why string) error {
	return fmt.Errorf("%w: %s: %s", errCorrupt, what, why)
}

// decoder reads fields in order; the first failure sticks in err.
type decoder struct {
	what string // for errors: "entry", "head", ...
	b    []byte
	err  error
}

func newDecoder(what string, b []byte) *decoder {
	d := &decoder{what: what, b: b}
	if len(b) == 0 {
		d.fail("empty")
	} else if b[0] != codecV1 {
		d.fail(fmt.Sprintf("unknown version %d", b[0]))
	} else {
		d.b = b[1:]
	}
	return d
}

func (d *decoder) fail(why string) {
	if d.err == nil {
		d.err = corrupt(d.what, why)
		d.b = nil
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or overflowing number")
		return 0
	}
	if n != uvarintLen(v) {
		d.fail("non-shortest number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	// Zigzag, as binary.Varint.
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// bytes reads a length-prefixed field of at most max bytes. The result
// aliases the input.
func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail("field too long")
		return nil
	}
	return d.fixed(int(n))
}

func (d *decoder) id() string { return string(d.bytes(core.MaxIDLen)) }

func (d *decoder) body() []byte {
	b := d.bytes(math.MaxInt32)
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func (d *decoder) msgID() core.MessageID {
	var id core.MessageID
	copy(id[:], d.fixed(len(id)))
	return id
}

func (d *decoder) time() time.Time {
	ms := d.varint()
	if d.err != nil || ms == zeroTimeMillis {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func (d *decoder) seq() core.Seq { return core.Seq(d.uvarint()) }

// done reports the first failure, or trailing bytes.
func (d *decoder) done() error {
	if d.err == nil && len(d.b) > 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

func uvarintLen(v uint64) int {
	return max(1, (bits.Len64(v)+6)/7)
}

var zeroTimeMillis = time.Time{}.UnixMilli()

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, zeroTimeMillis)
	}
	return binary.AppendVarint(b, t.UnixMilli())
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// checkEntryIDs reports an id of e too long to encode.
func checkEntryIDs(e *core.Entry) error {
	return checkIDs(string(e.From), string(e.FromDevice), string(e.To), string(e.Group), string(e.ClientMsgID))
}

func encodeHead(h core.Head) []byte {
	b := make([]byte, 1, 1+3*binary.MaxVarintLen64)
	b[0] = codecV1
	b = binary.AppendUvarint(b, uint64(h.Head))
	b = binary.AppendUvarint(b, uint64(h.Floor))
	return binary.AppendUvarint(b, uint64(h.Acked))
}

func decodeHead(b []byte) (core.Head, error) {
	d := newDecoder("head", b)
	h := core.Head{Head: d.seq(), Floor: d.seq(), Acked: d.seq()}
	return h, d.done()
}

// appendEntryFields appends e's fields without a version byte.
func appendEntryFields(b []byte, e *core.Entry) []byte {
	b = binary.AppendUvarint(b, uint64(e.Seq))
	b = append(b, e.ID[:]...)
	b = appendString(b, string(e.From))
	b = appendString(b, string(e.FromDevice))
	b = appendString(b, string(e.To))
	b = appendString(b, string(e.Group))
	b = appendTime(b, e.SentAt)
	b = appendString(b, string(e.ClientMsgID))
	return appendBytes(b, e.Body)
}

func entrySize(e *core.Entry) int {
	return 1 + 2*binary.MaxVarintLen64 + len(e.ID) + 6 + len(e.From) + len(e.FromDevice) +
		len(e.To) + len(e.Group) + len(e.ClientMsgID) + binary.MaxVarintLen64 + len(e.Body)
}

// encodeEntry encodes e; ids must have passed checkEntryIDs.
func encodeEntry(e *core.Entry) []byte {
	b := make([]byte, 1, entrySize(e))
	b[0] = codecV1
	return appendEntryFields(b, e)
}

func (d *decoder) entry() core.Entry {
	return core.Entry{
		Seq:         d.seq(),
		ID:          d.msgID(),
		From:        core.UserID(d.id()),
		FromDevice:  core.DeviceID(d.id()),
		To:          core.UserID(d.id()),
		Group:       core.GroupID(d.id()),
		SentAt:      d.time(),
		ClientMsgID: core.ClientMsgID(d.id()),
		Body:        d.body(),
	}
}

func decodeEntry(b []byte) (core.Entry, error) {
	d := newDecoder("entry", b)
	e := d.entry()
	if err := d.done(); err != nil {
		return core.Entry{}, err
	}
	return e, nil
}

func encodeDedup(r core.DedupRecord) []byte {
	b := make([]byte, 1, 1+len(r.ID)+3*binary.MaxVarintLen64)
	b[0] = codecV1
	b = append(b, r.ID[:]...)
	b = binary.AppendUvarint(b, uint64(r.Seq))
	b = appendTime(b, r.SentAt)
	return appendTime(b, r.Expires)
}

func decodeDedup(b []byte) (core.DedupRecord, error) {
	d := newDecoder("dedup record", b)
	r := core.DedupRecord{ID: d.msgID(), Seq: d.seq(), SentAt: d.time(), Expires: d.time()}
	if err := d.done(); err != nil {
		return core.DedupRecord{}, err
	}
	return r, nil
}

func encodeDelivery(r core.DeliveryRecord) []byte {
	b := make([]byte, 1, 1+2*binary.MaxVarintLen64)
	b[0] = codecV1
	b = binary.AppendUvarint(b, uint64(r.Seq))
	return appendTime(b, r.Expires)
}

func decodeDelivery(b []byte) (core.DeliveryRecord, error) {
	d := newDecoder("delivery record", b)
	r := core.DeliveryRecord{Seq: d.seq(), Expires: d.time()}
	if err := d.done(); err != nil {
		return core.DeliveryRecord{}, err
	}
	return r, nil
}

// encodeOutbox encodes o; ids must have passed checkIDs.
func encodeOutbox(o *core.OutboxItem) []byte {
	b := make([]byte, 1, 1+len(o.Recipient)+2*binary.MaxVarintLen64+entrySize(&o.Entry))
	b[0] = codecV1
	b = appendString(b, string(o.Recipient))
	b = appendTime(b, o.Created)
	return appendEntryFields(b, &o.Entry)
}

func decodeOutbox(b []byte) (core.OutboxItem, error) {
	d := newDecoder("outbox item", b)
	o := core.OutboxItem{Recipient: core.UserID(d.id()), Created: d.time()}
	o.Entry = d.entry()
	if err := d.done(); err != nil {
		return core.OutboxItem{}, err
	}
	return o, nil
}

func encodeGroup(m core.GroupMeta) []byte {
	b := make([]byte, 1, 1+len(m.Owner)+3*binary.MaxVarintLen64)
	b[0] = codecV1
	b = appendString(b, string(m.Owner))
	b = appendTime(b, m.Created)
	return binary.AppendVarint(b, int64(m.Members))
}

func decodeGroup(b []byte) (core.GroupMeta, error) {
	d := newDecoder("group record", b)
	m := core.GroupMeta{Owner: core.UserID(d.id()), Created: d.time()}
	n := d.varint()
	if d.err == nil && (n < math.MinInt32 || n > math.MaxInt32) {
		d.fail("member count out of range")
	}
	m.Members = int(n)
	if err := d.done(); err != nil {
		return core.GroupMeta{}, err
	}
	return m, nil
}

// maxTopicLen bounds an APNs topic (a bundle id, plus a suffix such as
// ".voip"), in bytes.
const maxTopicLen = 256

func encodePush(r core.PushRegistration) []byte {
	b := make([]byte, 1, 4+len(r.Token)+len(r.Topic)+2*binary.MaxVarintLen64)
	b[0] = codecV1
	b = binary.AppendUvarint(b, uint64(r.Platform))
	b = appendString(b, r.Token)
	b = appendString(b, r.Topic)
	sandbox := byte(0)
	if r.Sandbox {
		sandbox = 1
	}
	return append(b, sandbox)
}

func decodePush(b []byte) (core.PushRegistration, error) {
	d := newDecoder("push registration", b)
	r := core.PushRegistration{Platform: core.Platform(d.uvarint())}
	if d.err == nil && r.Platform > core.PlatformDesktop {
		d.fail("unknown platform")
	}
	r.Token = string(d.bytes(core.MaxPushTokenLen))
	r.Topic = string(d.bytes(maxTopicLen))
	switch flag := d.fixed(1); {
	case d.err != nil:
	case flag[0] > 1:
		d.fail("sandbox flag not 0 or 1")
	default:
		r.Sandbox = flag[0] == 1
	}
	if err := d.done(); err != nil {
		return core.PushRegistration{}, err
	}
	return r, nil
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(what string, b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, corrupt(what, fmt.Sprintf("want 8 bytes, got %d", len(b)))
	}
	return binary.BigEndian.Uint64(b), nil
}
