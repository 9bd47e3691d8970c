package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Core is the logic tier: mailboxes, sends, syncs, acks, groups, blocklists,
// routes to live sessions and the forwarder. It is safe for concurrent use.
type Core struct {
	cfg   Config
	store Store
	log   *slog.Logger
	m     Metrics

	routes  *routes
	fwd     *forwarder
	limiter *rateLimiter
	push    *pushes // nil without a Pusher
	acks    *acker

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup // background loops: forwarder, flusher, retention

	starting sync.WaitGroup // startup work: the outbox reload, the push resume
	ready    chan struct{}  // closed when starting is done
}

// New returns a Core over store and starts its background work: the
// forwarder (which first re-queues every outbox item left from before a
// restart) and the retention sweeper. Close stops them; the caller closes
// the store afterwards.
func New(cfg Config, store Store) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Core{
		cfg:   cfg,
		store: store,
		log:   cfg.Logger,
		m:     cfg.Metrics,
		stop:  make(chan struct{}),
		ready: make(chan struct{}),
	}
	c.routes = newRoutes(c)
	c.limiter = newRateLimiter(cfg.SendRate, cfg.SendBurst, cfg.Now)
	c.fwd = newForwarder(c)
	c.acks = newAcker(c)
	c.wg.Add(1)
	go c.acks.run()
	c.starting.Add(1)
	c.fwd.start()
	if cfg.RetainAge > 0 {
		c.wg.Add(1)
		go c.retentionLoop()
	}
	if cfg.Pusher != nil {
		c.push = newPushes(c, cfg.Pusher)
		c.starting.Add(1)
		c.wg.Add(1)
		go c.push.run()
	}
	go func() {
		c.starting.Wait()
		close(c.ready)
	}()
	return c, nil
}

// Close stops the background work, waiting for in-flight deliveries and the
// last outbox flush until ctx is done. Sends still running may fail with
// ErrClosed. It does not close the store.
func (c *Core) Close(ctx context.Context) error {
	c.stopOnce.Do(func() { close(c.stop) })
	done := make(chan struct{})
	go func() {
		c.fwd.wait()
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("core: close: %w", ctx.Err())
	}
}

// Ready is closed once the startup work is done: the outbox of the previous
// run is queued for delivery and the pushes it owed are sent.
func (c *Core) Ready() <-chan struct{} { return c.ready }

// Config returns the configuration in force, defaults filled in.
func (c *Core) Config() Config { return c.cfg }

func (c *Core) now() time.Time {
	// Millisecond precision, no monotonic reading: what is stored is what
	// every reader sees.
	return time.UnixMilli(c.cfg.Now().UnixMilli())
}

// SendRequest is one message from a device.
type SendRequest struct {
	From        UserID
	Device      DeviceID
	ClientMsgID ClientMsgID
	// Exactly one of To and Group is set.
	To    UserID
	Group GroupID
	Body  []byte
}

// SendResult answers a send. Seq is the entry's seq in the sender's mailbox.
type SendResult struct {
	ID        MessageID
	Seq       Seq
	SentAt    time.Time
	Duplicate bool
}

// Send appends the message to the sender's mailbox, durably, and forwards it
// to the recipient or the group's members. It returns once the sender's
// entry is durable; a repeated ClientMsgID from the same device within the
// dedup window returns the first result with Duplicate set.
func (c *Core) Send(ctx context.Context, req SendRequest) (res SendResult, err error) {
	start := time.Now()
	defer func() {
		label := Reason(err)
		if err == nil && res.Duplicate {
			label = "duplicate"
		}
		c.m.Add(MetricSends, label, 1)
		if err == nil {
			c.m.Observe(MetricSendSeconds, time.Since(start).Seconds())
		}
	}()
	if err := validateSend(&req, c.cfg.MaxBodySize); err != nil {
		return SendResult{}, err
	}
	if wait := c.limiter.take(req.From); wait > 0 {
		return SendResult{}, &RateLimitError{RetryAfter: wait}
	}
	var recipients []UserID
	if req.To != "" {
		blocked, err := c.store.Blocks(ctx, req.To, req.From)
		if err != nil {
			return SendResult{}, fmt.Errorf("core: send: %w", err)
		}
		if blocked {
			return SendResult{}, ErrBlocked
		}
		recipients = []UserID{req.To}
	} else {
		member, err := c.store.IsMember(ctx, req.Group, req.From)
		if err != nil {
			return SendResult{}, fmt.Errorf("core: send: %w", err)
		}
		if !member {
			if _, ok, err := c.store.Group(ctx, req.Group); err != nil {
				return SendResult{}, fmt.Errorf("core: send: %w", err)
			} else if !ok {
				return SendResult{}, ErrNoSuchGroup
			}
			return SendResult{}, ErrNotMember
		}
		if recipients, err = c.store.Members(ctx, req.Group); err != nil {
			return SendResult{}, fmt.Errorf("core: send: %w", err)
		}
	}
	now := c.now()
	cmd := &SendCmd{
		Sender:      req.From,
		Device:      req.Device,
		ClientMsgID: req.ClientMsgID,
		ID:          NewMessageID(now),
		Now:         now,
		To:          req.To,
		Group:       req.Group,
		Recipients:  recipients,
		Body:        req.Body,
		RetainCount: c.cfg.RetainCount,
		DedupWindow: c.cfg.DedupWindow,
	}
	r, err := c.store.Apply(ctx, cmd)
	if err != nil {
		return SendResult{}, fmt.Errorf("core: send: %w", err)
	}
	c.applied(r)
	return SendResult{ID: r.ID, Seq: r.Seq, SentAt: r.SentAt, Duplicate: r.Duplicate}, nil
}

func validateSend(req *SendRequest, maxBody int) error {
	if err := req.From.Validate(); err != nil {
		return err
	}
	if err := req.Device.Validate(); err != nil {
		return err
	}
	if err := req.ClientMsgID.Validate(); err != nil {
		return err
	}
	switch {
	case (req.To == "") == (req.Group == ""):
		return fmt.Errorf("%w: exactly one of recipient user and group", ErrInvalid)
	case req.To != "":
		if err := req.To.Validate(); err != nil {
			return err
		}
	default:
		if err := req.Group.Validate(); err != nil {
			return err
		}
	}
	if maxBody > 0 && len(req.Body) > maxBody {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(req.Body), maxBody)
	}
	return nil
}

// applied notifies the sessions of every mailbox a command grew and hands its
// outbox items to the forwarder.
func (c *Core) applied(r Result) {
	for _, g := range r.Grown {
		c.routes.notify(g.User, g.Head, g.Entry)
		if c.push != nil {
			c.push.grown(g)
		}
	}
	if len(r.Outbox) > 0 {
		c.fwd.enqueue(r.Outbox, time.Time{})
	}
}

// SyncRequest asks for a device's entries after After.
type SyncRequest struct {
	User   UserID
	Device DeviceID
	After  Seq
	// Limit caps the entries returned; 0 or more than Config.SyncLimit means
	// Config.SyncLimit.
	Limit int
	// MaxBytes stops a page once the bodies returned exceed it (at least one
	// entry is returned); 0 means no byte limit.
	MaxBytes int
}

// SyncResult is one page of a mailbox.
type SyncResult struct {
	Entries []Entry
	// From is the seq the page starts after: After, or in AckAccount mode
	// the account's acked seq when that is higher.
	From    Seq
	Head    Seq
	Floor   Seq
	HasMore bool
}

// Sync returns the device's next page. Reporting After acknowledges
// everything up to it. In AckAccount mode the page starts after the higher of
// After and the account's acknowledged seq; in AckDevice mode after After.
// A page that would start below the retained floor, or above the head,
// fails with a *ResyncError.
func (c *Core) Sync(ctx context.Context, req SyncRequest) (res SyncResult, err error) {
	defer func() { c.m.Add(MetricSyncs, Reason(err), 1) }()
	if err := req.User.Validate(); err != nil {
		return res, err
	}
	if err := req.Device.Validate(); err != nil {
		return res, err
	}
	h, err := c.store.Head(ctx, req.User)
	if err != nil {
		return res, fmt.Errorf("core: sync: %w", err)
	}
	if req.After > h.Head {
		return res, &ResyncError{Floor: h.EffectiveFloor(), Head: h.Head, Asked: req.After}
	}
	acked, err := c.syncAck(ctx, req.User, req.Device, req.After, h)
	if err != nil {
		return res, err
	}
	from := req.After
	if c.cfg.AckMode == AckAccount {
		from = max(from, acked)
	}
	floor := h.EffectiveFloor()
	if from+1 < floor {
		return res, &ResyncError{Floor: floor, Head: h.Head, Asked: from}
	}
	limit := req.Limit
	if limit <= 0 || limit > c.cfg.SyncLimit {
		limit = c.cfg.SyncLimit
	}
	entries, err := c.store.Entries(ctx, req.User, from, limit, req.MaxBytes)
	if err != nil {
		return res, fmt.Errorf("core: sync: %w", err)
	}
	head := h.Head
	if n := len(entries); n > 0 {
		if entries[0].Seq != from+1 {
			// Trimmed between reading the head and the entries.
			h, err := c.store.Head(ctx, req.User)
			if err != nil {
				return res, fmt.Errorf("core: sync: %w", err)
			}
			return res, &ResyncError{Floor: h.EffectiveFloor(), Head: h.Head, Asked: from}
		}
		head = max(head, entries[n-1].Seq)
	}
	res = SyncResult{Entries: entries, From: from, Head: head, Floor: floor}
	res.HasMore = (len(entries) > 0 && entries[len(entries)-1].Seq < head) || (len(entries) == 0 && from < head)
	if c.push != nil {
		c.push.synced(req.User, req.Device)
	}
	return res, nil
}

// syncAck is the ack a Sync carries: like ack, but applied in the
// background (see acker). In AckAccount mode it returns the acked seq the
// page starts from: the stored one, or seq when higher.
func (c *Core) syncAck(ctx context.Context, u UserID, d DeviceID, seq Seq, h Head) (Seq, error) {
	if seq == 0 {
		return h.Acked, nil
	}
	seq, _, moves, err := c.ackMove(ctx, u, d, seq, h)
	if err != nil {
		return 0, err
	}
	if moves {
		c.acks.add(u, d, seq)
	}
	return max(h.Acked, seq), nil
}

// ackMove caps seq at the head, reads the device's cursor, and reports
// whether an ack of seq moves the cursor or the account's acked seq.
func (c *Core) ackMove(ctx context.Context, u UserID, d DeviceID, seq Seq, h Head) (capped, cur Seq, moves bool, err error) {
	cur, err = c.store.Cursor(ctx, u, d)
	if err != nil {
		return 0, 0, false, fmt.Errorf("core: ack: %w", err)
	}
	seq = min(seq, h.Head)
	return seq, cur, seq > cur || seq > h.Acked, nil
}

// ack records seq for the device when it moves the device's cursor or the
// account's acked seq, and returns the acknowledged seq of the configured mode.
func (c *Core) ack(ctx context.Context, u UserID, d DeviceID, seq Seq, h Head) (Seq, error) {
	if seq == 0 && c.cfg.AckMode == AckAccount {
		return h.Acked, nil
	}
	seq, cur, moves, err := c.ackMove(ctx, u, d, seq, h)
	if err != nil {
		return 0, err
	}
	if !moves {
		if c.cfg.AckMode == AckDevice {
			return cur, nil
		}
		return h.Acked, nil
	}
	r, err := c.store.Apply(ctx, &AckCmd{User: u, Device: d, Seq: seq, Mode: c.cfg.AckMode})
	if err != nil {
		return 0, fmt.Errorf("core: ack: %w", err)
	}
	return r.Acked, nil
}

// Ack records that the device has stored everything up to seq and returns
// the acknowledged seq (the account's in AckAccount mode, the device's
// cursor in AckDevice mode).
func (c *Core) Ack(ctx context.Context, u UserID, d DeviceID, seq Seq) (Seq, error) {
	if err := u.Validate(); err != nil {
		return 0, err
	}
	if err := d.Validate(); err != nil {
		return 0, err
	}
	h, err := c.store.Head(ctx, u)
	if err != nil {
		return 0, fmt.Errorf("core: ack: %w", err)
	}
	acked, err := c.ack(ctx, u, d, seq, h)
	if err == nil && c.push != nil {
		c.push.synced(u, d)
	}
	return acked, err
}

// CreateGroup creates g owned by owner with members, and returns the members
// added (owner included).
func (c *Core) CreateGroup(ctx context.Context, owner UserID, g GroupID, members []UserID) ([]UserID, error) {
	if err := validateGroupOp(owner, g, members); err != nil {
		return nil, err
	}
	r, err := c.store.Apply(ctx, &CreateGroupCmd{Group: g, Owner: owner, Members: members, Now: c.now(), MaxSize: c.cfg.MaxGroupSize})
	if err != nil {
		return nil, fmt.Errorf("core: create group: %w", err)
	}
	return r.Members, nil
}

// AddMembers adds members to g; by must be a member. It returns those added.
func (c *Core) AddMembers(ctx context.Context, by UserID, g GroupID, members []UserID) ([]UserID, error) {
	if err := validateGroupOp(by, g, members); err != nil {
		return nil, err
	}
	r, err := c.store.Apply(ctx, &AddMembersCmd{Group: g, By: by, Members: members, MaxSize: c.cfg.MaxGroupSize})
	if err != nil {
		return nil, fmt.Errorf("core: add members: %w", err)
	}
	return r.Members, nil
}

// RemoveMembers removes members from g and returns those removed. The owner
// may remove others; everyone may remove themselves.
func (c *Core) RemoveMembers(ctx context.Context, by UserID, g GroupID, members []UserID) ([]UserID, error) {
	if err := validateGroupOp(by, g, members); err != nil {
		return nil, err
	}
	r, err := c.store.Apply(ctx, &RemoveMembersCmd{Group: g, By: by, Members: members})
	if err != nil {
		return nil, fmt.Errorf("core: remove members: %w", err)
	}
	return r.Members, nil
}

// Members lists g's members; by must be one of them.
func (c *Core) Members(ctx context.Context, by UserID, g GroupID) ([]UserID, error) {
	if err := validateGroupOp(by, g, nil); err != nil {
		return nil, err
	}
	ok, err := c.store.IsMember(ctx, g, by)
	if err != nil {
		return nil, fmt.Errorf("core: members: %w", err)
	}
	if !ok {
		if _, exists, err := c.store.Group(ctx, g); err != nil {
			return nil, fmt.Errorf("core: members: %w", err)
		} else if !exists {
			return nil, ErrNoSuchGroup
		}
		return nil, ErrNotMember
	}
	return c.store.Members(ctx, g)
}

func validateGroupOp(by UserID, g GroupID, members []UserID) error {
	if err := by.Validate(); err != nil {
		return err
	}
	if err := g.Validate(); err != nil {
		return err
	}
	for _, m := range members {
		if err := m.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Block makes by block who (or stop blocking, with unblock). Blocked users'
// direct sends to by fail with ErrBlocked; their group messages are not
// delivered to by.
func (c *Core) Block(ctx context.Context, by, who UserID, unblock bool) error {
	if err := by.Validate(); err != nil {
		return err
	}
	if err := who.Validate(); err != nil {
		return err
	}
	if by == who {
		return fmt.Errorf("%w: a user cannot block itself", ErrInvalid)
	}
	if _, err := c.store.Apply(ctx, &BlockCmd{By: by, Who: who, Unblock: unblock}); err != nil {
		return fmt.Errorf("core: block: %w", err)
	}
	return nil
}

func isErr(err, target error) bool { return errors.Is(err, target) }

func isRateLimit(err error) bool {
	var e *RateLimitError
	return errors.As(err, &e)
}

func isResync(err error) bool {
	var e *ResyncError
	return errors.As(err, &e)
}

func isCtx(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
