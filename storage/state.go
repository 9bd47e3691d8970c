package storage

import (
	"fmt"

	"github.com/ternhq/tern/core"
)

// state is core.StateTx over one command's overlay. Every method checks
// that the record it names belongs to the transaction's shard: a command
// that touched another shard's keys would race with that shard's writer.
type state struct {
	kv       kvWriter
	shard    int
	shards   int
	blockers *blockers // the shard's; nil: look every block up
}

var _ core.StateTx = (*state)(nil)

func (s *state) Shard() int  { return s.shard }
func (s *state) Shards() int { return s.shards }

// ownUser checks u's id and that u's records live in this shard.
func (s *state) ownUser(u core.UserID) error {
	if err := checkIDs(string(u)); err != nil {
		return err
	}
	return s.own("user", core.UserShard(u, s.shards))
}

func (s *state) ownGroup(g core.GroupID) error {
	if err := checkIDs(string(g)); err != nil {
		return err
	}
	return s.own("group", core.GroupShard(g, s.shards))
}

func (s *state) own(kind string, shard int) error {
	if shard != s.shard {
		return fmt.Errorf("storage: %s of shard %d in a transaction of shard %d: %w", kind, shard, s.shard, core.ErrInvalid)
	}
	return nil
}

func (s *state) Head(u core.UserID) (core.Head, error) {
	if err := s.ownUser(u); err != nil {
		return core.Head{}, err
	}
	return readHead(s.kv, s.shard, u)
}

func (s *state) PutHead(u core.UserID, h core.Head) error {
	if err := s.ownUser(u); err != nil {
		return err
	}
	return s.kv.set(headKey(s.shard, u), encodeHead(h), 0)
}

func (s *state) Entry(u core.UserID, seq core.Seq) (core.Entry, bool, error) {
	if err := s.ownUser(u); err != nil {
		return core.Entry{}, false, err
	}
	v, ok, err := s.kv.get(entryKey(s.shard, u, seq))
	if err != nil || !ok {
		return core.Entry{}, false, err
	}
	e, err := decodeEntry(v)
	if err != nil {
		return core.Entry{}, false, err
	}
	if e.Seq != seq {
		return core.Entry{}, false, corrupt("entry", fmt.Sprintf("seq %d stored under seq %d", e.Seq, seq))
	}
	return e, true, nil
}

func (s *state) PutEntry(u core.UserID, e *core.Entry) error {
	if err := s.ownUser(u); err != nil {
		return err
	}
	if err := checkEntryIDs(e); err != nil {
		return err
	}
	return s.kv.set(entryKey(s.shard, u, e.Seq), encodeEntry(e), 0)
}

func (s *state) DeleteEntry(u core.UserID, seq core.Seq) error {
	if err := s.ownUser(u); err != nil {
		return err
	}
	return s.kv.delete(entryKey(s.shard, u, seq))
}

func (s *state) ownDedup(k core.DedupKey) error {
	if err := checkIDs(string(k.Device), string(k.ClientMsgID)); err != nil {
		return err
	}
	return s.ownUser(k.User)
}

func (s *state) Dedup(k core.DedupKey) (core.DedupRecord, bool, error) {
	if err := s.ownDedup(k); err != nil {
		return core.DedupRecord{}, false, err
	}
	v, ok, err := s.kv.get(dedupKey(s.shard, k))
	if err != nil || !ok {
		return core.DedupRecord{}, false, err
	}
	r, err := decodeDedup(v)
	return r, err == nil, err
}

func (s *state) PutDedup(k core.DedupKey, r core.DedupRecord) error {
	if err := s.ownDedup(k); err != nil {
		return err
	}
	return s.kv.set(dedupKey(s.shard, k), encodeDedup(r), expiresAt(r.Expires))
}

func (s *state) Delivery(u core.UserID, id core.MessageID) (core.DeliveryRecord, bool, error) {
	if err := s.ownUser(u); err != nil {
		return core.DeliveryRecord{}, false, err
	}
	v, ok, err := s.kv.get(deliveryKey(s.shard, u, id))
	if err != nil || !ok {
		return core.DeliveryRecord{}, false, err
	}
	r, err := decodeDelivery(v)
	return r, err == nil, err
}

func (s *state) PutDelivery(u core.UserID, id core.MessageID, r core.DeliveryRecord) error {
	if err := s.ownUser(u); err != nil {
		return err
	}
	return s.kv.set(deliveryKey(s.shard, u, id), encodeDelivery(r), expiresAt(r.Expires))
}

func (s *state) ownOutbox(k core.OutboxKey) error {
	if err := checkIDs(string(k.Recipient)); err != nil {
		return err
	}
	return s.ownUser(k.Sender)
}

func (s *state) PutOutbox(o *core.OutboxItem) error {
	k := o.Key()
	if err := s.ownOutbox(k); err != nil {
		return err
	}
	if err := checkEntryIDs(&o.Entry); err != nil {
		return err
	}
	return s.kv.set(outboxKey(s.shard, k), encodeOutbox(o), 0)
}

func (s *state) DeleteOutbox(k core.OutboxKey) error {
	if err := s.ownOutbox(k); err != nil {
		return err
	}
	return s.kv.delete(outboxKey(s.shard, k))
}

func (s *state) Cursor(u core.UserID, d core.DeviceID) (core.Seq, error) {
	if err := s.ownUser(u); err != nil {
		return 0, err
	}
	if err := checkIDs(string(d)); err != nil {
		return 0, err
	}
	return readCursor(s.kv, s.shard, u, d)
}

func (s *state) PutCursor(u core.UserID, d core.DeviceID, seq core.Seq) error {
	if err := s.ownUser(u); err != nil {
		return err
	}
	if err := checkIDs(string(d)); err != nil {
		return err
	}
	return s.kv.set(cursorKey(s.shard, u, d), encodeUint64(uint64(seq)), 0)
}

func (s *state) Group(g core.GroupID) (core.GroupMeta, bool, error) {
	if err := s.ownGroup(g); err != nil {
		return core.GroupMeta{}, false, err
	}
	return readGroup(s.kv, s.shard, g)
}

func (s *state) PutGroup(g core.GroupID, m core.GroupMeta) error {
	if err := s.ownGroup(g); err != nil {
		return err
	}
	if err := checkIDs(string(m.Owner)); err != nil {
		return err
	}
	return s.kv.set(groupKey(s.shard, g), encodeGroup(m), 0)
}

func (s *state) IsMember(g core.GroupID, u core.UserID) (bool, error) {
	if err := s.ownGroup(g); err != nil {
		return false, err
	}
	if err := checkIDs(string(u)); err != nil {
		return false, err
	}
	return exists(s.kv, memberKey(s.shard, g, u))
}

func (s *state) PutMember(g core.GroupID, u core.UserID) error {
	if err := s.ownGroup(g); err != nil {
		return err
	}
	if err := checkIDs(string(u)); err != nil {
		return err
	}
	return s.kv.set(memberKey(s.shard, g, u), []byte{}, 0)
}

func (s *state) DeleteMember(g core.GroupID, u core.UserID) error {
	if err := s.ownGroup(g); err != nil {
		return err
	}
	if err := checkIDs(string(u)); err != nil {
		return err
	}
	return s.kv.delete(memberKey(s.shard, g, u))
}

func (s *state) ownBlock(by, who core.UserID) error {
	if err := checkIDs(string(who)); err != nil {
		return err
	}
	return s.ownUser(by)
}

func (s *state) Blocks(by, who core.UserID) (bool, error) {
	if err := s.ownBlock(by, who); err != nil {
		return false, err
	}
	if s.blockers != nil && !s.blockers.may(by) {
		return false, nil
	}
	return exists(s.kv, blockKey(s.shard, by, who))
}

func (s *state) PutBlock(by, who core.UserID) error {
	if err := s.ownBlock(by, who); err != nil {
		return err
	}
	if s.blockers != nil {
		s.blockers.add(by)
	}
	return s.kv.set(blockKey(s.shard, by, who), []byte{}, 0)
}

func (s *state) DeleteBlock(by, who core.UserID) error {
	if err := s.ownBlock(by, who); err != nil {
		return err
	}
	return s.kv.delete(blockKey(s.shard, by, who))
}

// Readers shared by state and by Store's committed-state reads. Ids must
// have passed checkIDs.

func readHead(kv kvGetter, shard int, u core.UserID) (core.Head, error) {
	v, ok, err := kv.get(headKey(shard, u))
	if err != nil || !ok {
		return core.Head{}, err
	}
	return decodeHead(v)
}

func readCursor(kv kvGetter, shard int, u core.UserID, d core.DeviceID) (core.Seq, error) {
	v, ok, err := kv.get(cursorKey(shard, u, d))
	if err != nil || !ok {
		return 0, err
	}
	n, err := decodeUint64("cursor", v)
	return core.Seq(n), err
}

func readGroup(kv kvGetter, shard int, g core.GroupID) (core.GroupMeta, bool, error) {
	v, ok, err := kv.get(groupKey(shard, g))
	if err != nil || !ok {
		return core.GroupMeta{}, false, err
	}
	m, err := decodeGroup(v)
	return m, err == nil, err
}

func readApplied(kv kvGetter, shard int) (uint64, error) {
	v, ok, err := kv.get(appliedKey(shard))
	if err != nil || !ok {
		return 0, err
	}
	return decodeUint64("applied index", v)
}

func exists(kv kvGetter, key []byte) (bool, error) {
	_, ok, err := kv.get(key)
	return ok, err
}

func (s *state) PushRegistration(u core.UserID, d core.DeviceID) (core.PushRegistration, bool, error) {
	if err := s.ownUser(u); err != nil {
		return core.PushRegistration{}, false, err
	}
	if err := checkIDs(string(d)); err != nil {
		return core.PushRegistration{}, false, err
	}
	v, ok, err := s.kv.get(pushKey(s.shard, u, d))
	if err != nil || !ok {
		return core.PushRegistration{}, false, err
	}
	r, err := decodePush(v)
	return r, err == nil, err
}

func (s *state) PutPushRegistration(u core.UserID, d core.DeviceID, r core.PushRegistration) error {
	if err := s.ownUser(u); err != nil {
		return err
	}
	if err := checkIDs(string(d)); err != nil {
		return err
	}
	if len(r.Token) > core.MaxPushTokenLen || len(r.Topic) > maxTopicLen {
		return fmt.Errorf("storage: push registration too long: %w", core.ErrInvalid)
	}
	return s.kv.set(pushKey(s.shard, u, d), encodePush(r), 0)
}

func (s *state) DeletePushRegistration(u core.UserID, d core.DeviceID) error {
	if err := s.ownUser(u); err != nil {
		return err
	}
	if err := checkIDs(string(d)); err != nil {
		return err
	}
	return s.kv.delete(pushKey(s.shard, u, d))
}
