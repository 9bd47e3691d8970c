package core

import (
	"fmt"
	"time"
)

// The commands below are every state change core makes. Each carries all the
// inputs its Apply needs (including the time and the limits in force), so
// that applying the same sequence of commands gives the same state on any
// replica.

var (
	_ Command = (*SendCmd)(nil)
	_ Command = (*DeliverCmd)(nil)
	_ Command = (*OutboxDoneCmd)(nil)
	_ Command = (*AckCmd)(nil)
	_ Command = (*TrimCmd)(nil)
	_ Command = (*CreateGroupCmd)(nil)
	_ Command = (*AddMembersCmd)(nil)
	_ Command = (*RemoveMembersCmd)(nil)
	_ Command = (*BlockCmd)(nil)
	_ Command = (*RegisterPushCmd)(nil)
	_ Command = (*UnregisterPushCmd)(nil)
)

// SendCmd appends a sent message to the sender's mailbox, records it for
// dedup, and forwards it: a direct message to a recipient in the same shard is
// appended to the recipient's mailbox in the same transaction; every other
// recipient gets an outbox item for the forwarder.
type SendCmd struct {
	Sender      UserID
	Device      DeviceID
	ClientMsgID ClientMsgID
	ID          MessageID
	Now         time.Time
	// To is the recipient of a direct message; Group the group of a group
	// message. Exactly one is set.
	To    UserID
	Group GroupID
	// Recipients are the mailboxes to forward to: To, or the group's members
	// except the sender, resolved when the command was made.
	Recipients []UserID
	Body       []byte
	// RetainCount trims the sender's (and inline recipients') mailbox to
	// this many entries; <= 0 keeps everything.
	RetainCount int
	DedupWindow time.Duration
}

func (c *SendCmd) Shard(n int) int { return UserShard(c.Sender, n) }

func (c *SendCmd) Apply(tx StateTx) (Result, error) {
	key := DedupKey{User: c.Sender, Device: c.Device, ClientMsgID: c.ClientMsgID}
	if rec, ok, err := tx.Dedup(key); err != nil {
		return Result{}, err
	} else if ok && rec.Expires.After(c.Now) {
		return Result{ID: rec.ID, Seq: rec.Seq, SentAt: rec.SentAt, Duplicate: true}, nil
	}
	sent := Entry{
		ID:          c.ID,
		From:        c.Sender,
		FromDevice:  c.Device,
		To:          c.To,
		Group:       c.Group,
		Body:        c.Body,
		SentAt:      c.Now,
		ClientMsgID: c.ClientMsgID,
	}
	// Check inline recipients before writing anything, so that a block
	// fails the whole command.
	inline := c.Group == "" && len(c.Recipients) == 1 && c.Recipients[0] != c.Sender &&
		UserShard(c.Recipients[0], tx.Shards()) == tx.Shard()
	if inline {
		blocked, err := tx.Blocks(c.Recipients[0], c.Sender)
		if err != nil {
			return Result{}, err
		}
		if blocked {
			return Result{}, ErrBlocked
		}
	}
	head, err := appendEntry(tx, c.Sender, &sent, c.RetainCount)
	if err != nil {
		return Result{}, err
	}
	res := Result{ID: c.ID, Seq: head, SentAt: c.Now, Grown: []Growth{{User: c.Sender, Head: head, Entry: &sent}}}
	if err := tx.PutDedup(key, DedupRecord{ID: c.ID, Seq: head, SentAt: c.Now, Expires: c.Now.Add(c.DedupWindow)}); err != nil {
		return Result{}, err
	}
	for _, r := range c.Recipients {
		if r == c.Sender {
			continue
		}
		rc := sent // the recipient's copy
		rc.Seq = 0
		rc.ClientMsgID = ""
		if inline {
			// In the same transaction as the sender's entry, and with no
			// outbox item: nothing can deliver it again, so no marker.
			seq, err := appendEntry(tx, r, &rc, c.RetainCount)
			if err != nil {
				return Result{}, err
			}
			res.Grown = append(res.Grown, Growth{User: r, Head: seq, Entry: &rc})
			continue
		}
		item := OutboxItem{Recipient: r, Entry: rc, Created: c.Now}
		if err := tx.PutOutbox(&item); err != nil {
			return Result{}, err
		}
		res.Outbox = append(res.Outbox, item)
	}
	return res, nil
}

// appendEntry gives e the next seq of u's mailbox, stores it and trims the
// mailbox to retain entries (retain <= 0: no count limit). It returns the
// new head.
func appendEntry(tx StateTx, u UserID, e *Entry, retain int) (Seq, error) {
	h, err := tx.Head(u)
	if err != nil {
		return 0, err
	}
	h.Floor = h.EffectiveFloor()
	h.Head++
	e.Seq = h.Head
	if err := tx.PutEntry(u, e); err != nil {
		return 0, err
	}
	if retain > 0 {
		for uint64(h.Head-h.Floor+1) > uint64(retain) {
			if err := tx.DeleteEntry(u, h.Floor); err != nil {
				return 0, err
			}
			h.Floor++
		}
	}
	if err := tx.PutHead(u, h); err != nil {
		return 0, err
	}
	return h.Head, nil
}

// DeliverCmd appends an outbox item to its recipient's mailbox, once: a
// delivery marker makes repeats (after a crash between delivery and
// OutboxDone) return the first delivery's seq. A recipient that blocks the
// sender gets nothing, and the marker records seq 0.
type DeliverCmd struct {
	Item        OutboxItem
	Now         time.Time
	RetainCount int
	DeliveryTTL time.Duration
}

func (c *DeliverCmd) Shard(n int) int { return UserShard(c.Item.Recipient, n) }

func (c *DeliverCmd) Apply(tx StateTx) (Result, error) {
	r := c.Item.Recipient
	if rec, ok, err := tx.Delivery(r, c.Item.Entry.ID); err != nil {
		return Result{}, err
	} else if ok {
		return Result{ID: c.Item.Entry.ID, Seq: rec.Seq, Duplicate: true}, nil
	}
	marker := DeliveryRecord{Expires: c.Now.Add(c.DeliveryTTL)}
	blocked, err := tx.Blocks(r, c.Item.Entry.From)
	if err != nil {
		return Result{}, err
	}
	var res Result
	if !blocked {
		e := c.Item.Entry
		e.ClientMsgID = ""
		seq, err := appendEntry(tx, r, &e, c.RetainCount)
		if err != nil {
			return Result{}, err
		}
		marker.Seq = seq
		res = Result{ID: e.ID, Seq: seq, SentAt: e.SentAt, Grown: []Growth{{User: r, Head: seq, Entry: &e}}}
	}
	if err := tx.PutDelivery(r, c.Item.Entry.ID, marker); err != nil {
		return Result{}, err
	}
	return res, nil
}

// OutboxDoneCmd removes delivered items from one shard's outbox. All keys
// must belong to the same sender shard.
type OutboxDoneCmd struct {
	Keys []OutboxKey
}

func (c *OutboxDoneCmd) Shard(n int) int {
	if len(c.Keys) == 0 {
		return 0
	}
	return UserShard(c.Keys[0].Sender, n)
}

func (c *OutboxDoneCmd) Apply(tx StateTx) (Result, error) {
	for _, k := range c.Keys {
		if UserShard(k.Sender, tx.Shards()) != tx.Shard() {
			return Result{}, fmt.Errorf("%w: outbox key of another shard", ErrInvalid)
		}
		if err := tx.DeleteOutbox(k); err != nil {
			return Result{}, err
		}
	}
	return Result{}, nil
}

// AckCmd records that Device has stored everything up to Seq: the device's
// cursor and the account's acked seq only move forward, and never past the
// mailbox head. Result.Acked is the account's acked seq in AckAccount mode and
// the device's cursor in AckDevice mode.
type AckCmd struct {
	User   UserID
	Device DeviceID
	Seq    Seq
	Mode   AckMode
}

func (c *AckCmd) Shard(n int) int { return UserShard(c.User, n) }

func (c *AckCmd) Apply(tx StateTx) (Result, error) {
	h, err := tx.Head(c.User)
	if err != nil {
		return Result{}, err
	}
	seq := min(c.Seq, h.Head)
	cur, err := tx.Cursor(c.User, c.Device)
	if err != nil {
		return Result{}, err
	}
	if seq > cur {
		if err := tx.PutCursor(c.User, c.Device, seq); err != nil {
			return Result{}, err
		}
		cur = seq
	}
	if seq > h.Acked {
		h.Acked = seq
		if err := tx.PutHead(c.User, h); err != nil {
			return Result{}, err
		}
	}
	if c.Mode == AckDevice {
		return Result{Acked: cur}, nil
	}
	return Result{Acked: h.Acked}, nil
}

// TrimCmd deletes User's entries sent before Before, oldest first, at most
// Max of them (<= 0: 1000), and raises the floor past them.
type TrimCmd struct {
	User   UserID
	Before time.Time
	Max    int
}

func (c *TrimCmd) Shard(n int) int { return UserShard(c.User, n) }

func (c *TrimCmd) Apply(tx StateTx) (Result, error) {
	h, err := tx.Head(c.User)
	if err != nil {
		return Result{}, err
	}
	h.Floor = h.EffectiveFloor()
	limit := c.Max
	if limit <= 0 {
		limit = 1000
	}
	trimmed := 0
	for ; trimmed < limit && h.Floor <= h.Head; trimmed++ {
		e, ok, err := tx.Entry(c.User, h.Floor)
		if err != nil {
			return Result{}, err
		}
		if ok {
			if !e.SentAt.Before(c.Before) {
				break
			}
			if err := tx.DeleteEntry(c.User, h.Floor); err != nil {
				return Result{}, err
			}
		}
		h.Floor++
	}
	if trimmed > 0 {
		if err := tx.PutHead(c.User, h); err != nil {
			return Result{}, err
		}
	}
	return Result{Seq: h.Floor}, nil
}

// CreateGroupCmd creates Group with Owner and Members (the owner is always a
// member).
type CreateGroupCmd struct {
	Group   GroupID
	Owner   UserID
	Members []UserID
	Now     time.Time
	MaxSize int
}

func (c *CreateGroupCmd) Shard(n int) int { return GroupShard(c.Group, n) }

func (c *CreateGroupCmd) Apply(tx StateTx) (Result, error) {
	if _, ok, err := tx.Group(c.Group); err != nil {
		return Result{}, err
	} else if ok {
		return Result{}, ErrGroupExists
	}
	meta := GroupMeta{Owner: c.Owner, Created: c.Now}
	added, err := addMembers(tx, c.Group, &meta, append([]UserID{c.Owner}, c.Members...), c.MaxSize)
	if err != nil {
		return Result{}, err
	}
	return Result{Members: added}, tx.PutGroup(c.Group, meta)
}

// AddMembersCmd adds Members to Group; By must be a member.
type AddMembersCmd struct {
	Group   GroupID
	By      UserID
	Members []UserID
	MaxSize int
}

func (c *AddMembersCmd) Shard(n int) int { return GroupShard(c.Group, n) }

func (c *AddMembersCmd) Apply(tx StateTx) (Result, error) {
	meta, err := groupFor(tx, c.Group, c.By)
	if err != nil {
		return Result{}, err
	}
	added, err := addMembers(tx, c.Group, &meta, c.Members, c.MaxSize)
	if err != nil {
		return Result{}, err
	}
	return Result{Members: added}, tx.PutGroup(c.Group, meta)
}

// RemoveMembersCmd removes Members from Group. The owner may remove anyone
// but itself; other members may remove only themselves.
type RemoveMembersCmd struct {
	Group   GroupID
	By      UserID
	Members []UserID
}

func (c *RemoveMembersCmd) Shard(n int) int { return GroupShard(c.Group, n) }

func (c *RemoveMembersCmd) Apply(tx StateTx) (Result, error) {
	meta, err := groupFor(tx, c.Group, c.By)
	if err != nil {
		return Result{}, err
	}
	var removed []UserID
	for _, m := range c.Members {
		if m == meta.Owner || (c.By != meta.Owner && m != c.By) {
			return Result{}, ErrForbidden
		}
		ok, err := tx.IsMember(c.Group, m)
		if err != nil {
			return Result{}, err
		}
		if !ok {
			continue
		}
		if err := tx.DeleteMember(c.Group, m); err != nil {
			return Result{}, err
		}
		meta.Members--
		removed = append(removed, m)
	}
	return Result{Members: removed}, tx.PutGroup(c.Group, meta)
}

func groupFor(tx StateTx, g GroupID, by UserID) (GroupMeta, error) {
	meta, ok, err := tx.Group(g)
	if err != nil {
		return meta, err
	}
	if !ok {
		return meta, ErrNoSuchGroup
	}
	member, err := tx.IsMember(g, by)
	if err != nil {
		return meta, err
	}
	if !member {
		return meta, ErrNotMember
	}
	return meta, nil
}

func addMembers(tx StateTx, g GroupID, meta *GroupMeta, members []UserID, maxSize int) ([]UserID, error) {
	var added []UserID
	for _, m := range members {
		ok, err := tx.IsMember(g, m)
		if err != nil {
			return nil, err
		}
		if ok {
			continue
		}
		if maxSize > 0 && meta.Members >= maxSize {
			return nil, ErrGroupTooLarge
		}
		if err := tx.PutMember(g, m); err != nil {
			return nil, err
		}
		meta.Members++
		added = append(added, m)
	}
	return added, nil
}

// BlockCmd makes By block (or, with Unblock, stop blocking) Who.
type BlockCmd struct {
	By      UserID
	Who     UserID
	Unblock bool
}

func (c *BlockCmd) Shard(n int) int { return UserShard(c.By, n) }

func (c *BlockCmd) Apply(tx StateTx) (Result, error) {
	if c.Unblock {
		return Result{}, tx.DeleteBlock(c.By, c.Who)
	}
	return Result{}, tx.PutBlock(c.By, c.Who)
}

// RegisterPushCmd stores (or replaces) a device's push registration.
type RegisterPushCmd struct {
	User   UserID
	Device DeviceID
	Reg    PushRegistration
}

func (c *RegisterPushCmd) Shard(n int) int { return UserShard(c.User, n) }

func (c *RegisterPushCmd) Apply(tx StateTx) (Result, error) {
	return Result{}, tx.PutPushRegistration(c.User, c.Device, c.Reg)
}

// UnregisterPushCmd removes a device's push registration: always when Token
// is empty (logout), otherwise only while the stored token is Token (a
// provider refused that token; a newer registration stays).
type UnregisterPushCmd struct {
	User   UserID
	Device DeviceID
	Token  string
}

func (c *UnregisterPushCmd) Shard(n int) int { return UserShard(c.User, n) }

func (c *UnregisterPushCmd) Apply(tx StateTx) (Result, error) {
	if c.Token != "" {
		r, ok, err := tx.PushRegistration(c.User, c.Device)
		if err != nil || !ok || r.Token != c.Token {
			return Result{}, err
		}
	}
	return Result{}, tx.DeletePushRegistration(c.User, c.Device)
}
