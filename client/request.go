package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ternhq/tern/wire"
)

// callOpts says how call runs a request.
type callOpts struct {
	name string // for logs and errors
	// noWait makes one attempt, and fails at once while disconnected.
	noWait bool
	// retries counts the attempts after the first.
	retries *atomic.Uint64
}

// attemptFunc runs one attempt of a request on a session, bounded by ctx.
type attemptFunc func(ctx context.Context, s *session) (*wire.Response, error)

// plain is the attempt of a request sent as it is.
func plain(req *wire.Request, replaySafe bool) attemptFunc {
	return func(ctx context.Context, s *session) (*wire.Response, error) {
		return s.roundTrip(ctx, req, replaySafe)
	}
}

// call runs a request until it gets an answer, retrying the same request on
// connection loss, stream resets, attempt timeouts and codes of the retry
// range (after retry_after_ms when given, with backoff otherwise). It
// returns the Response, a *wire.Error for terminal and resync codes, or the
// context's cause when ctx is done first. A request issued while
// disconnected waits for the next session.
func (c *Client) call(ctx context.Context, o callOpts, attempt attemptFunc) (*wire.Response, error) {
	var last error
	for n := 1; ; n++ {
		if n > 1 && o.retries != nil {
			o.retries.Add(1)
		}
		s, err := c.acquire(ctx, o.noWait)
		if err != nil {
			return nil, callErr(o.name, err, last)
		}
		actx, cancel := s.attemptContext(ctx, c.cfg.RequestTimeout)
		resp, err := attempt(actx, s)
		moved := errors.Is(context.Cause(actx), errPathChanged)
		cancel()
		if err == nil {
			if e := resp.GetError(); e != nil {
				err = e
			} else {
				return resp, nil
			}
		}
		if ctx.Err() != nil {
			if !errors.Is(err, context.Cause(ctx)) {
				last = err
			}
			return nil, callErr(o.name, context.Cause(ctx), last)
		}
		last = err
		if o.noWait {
			return nil, callErr(o.name, err, nil) // best effort: not repeated, even after a move
		}
		if moved && s.conn.Context().Err() == nil {
			c.log.Debug("request repeated on the new path", "req", o.name, "attempt", n)
			continue
		}
		delay, retry := c.retryDelay(err, s, n)
		if !retry {
			return nil, callErr(o.name, err, nil)
		}
		c.log.Debug("request retry", "req", o.name, "attempt", n, "delay", delay, "err", err)
		if delay < 0 {
			// The connection is gone: wait for run to unpublish it, then
			// take the next one.
			select {
			case <-s.gone:
			case <-ctx.Done():
				return nil, callErr(o.name, context.Cause(ctx), last)
			}
			continue
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, callErr(o.name, context.Cause(ctx), last)
		}
	}
}

// retryDelay classifies a failed attempt: no retry (terminal), retry on the
// next session (delay < 0), or retry after delay.
func (c *Client) retryDelay(err error, s *session, n int) (time.Duration, bool) {
	var we *wire.Error
	if errors.As(err, &we) {
		code := we.ErrorCode()
		if !code.Retryable() {
			return 0, false
		}
		if ms := we.GetRetryAfterMs(); ms > 0 {
			d := time.Duration(ms) * time.Millisecond
			return d + rand.N(d/10+time.Millisecond), true
		}
		return c.backoff(n), true
	}
	if s.conn.Context().Err() != nil || errors.Is(err, quic.Err0RTTRejected) {
		return -1, true
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		if code := wire.Code(se.ErrorCode); code != 0 && !code.Retryable() {
			return 0, false
		}
		return c.backoff(n), true
	}
	if errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrFrameTooLarge) {
		return 0, false // the server's answer itself is broken
	}
	// Attempt timeouts, truncated responses, streams the server gave up.
	return c.backoff(n), true
}

func callErr(name string, err, last error) error {
	if last != nil && !errors.Is(err, last) {
		return fmt.Errorf("client: %s: %w (last attempt: %w)", name, err, last)
	}
	return fmt.Errorf("client: %s: %w", name, err)
}

// errUnexpected reports a Response of the wrong kind.
func errUnexpected(name string, resp *wire.Response) error {
	return fmt.Errorf("client: %s: %w: unexpected response %T", name, wire.ErrMalformed, resp.GetResp())
}

// Send sends body to the user to. See SendWith.
func (c *Client) Send(ctx context.Context, to string, body []byte) (SendResult, error) {
	return c.SendWith(ctx, SendOptions{To: to, Body: body})
}

// SendGroup sends body to every member of group. See SendWith.
func (c *Client) SendGroup(ctx context.Context, group string, body []byte) (SendResult, error) {
	return c.SendWith(ctx, SendOptions{Group: group, Body: body})
}

// SendWith sends a message and returns once the server has stored it
// durably in the sender's mailbox. Every attempt carries the same
// ClientMsgID, so a send retried after a lost answer, a reconnect or a
// timeout is stored once (the answer then says Duplicate). It retries until
// ctx is done or the server answers with a terminal code (a *wire.Error:
// BLOCKED, PAYLOAD_TOO_LARGE...). The result carries the ClientMsgID even on
// error, so that the app can try again later with the same id.
func (c *Client) SendWith(ctx context.Context, o SendOptions) (SendResult, error) {
	if (o.To == "") == (o.Group == "") {
		return SendResult{}, errors.New("client: send: exactly one of To and Group must be set")
	}
	if o.ClientMsgID == "" {
		o.ClientMsgID = NewClientMsgID()
	}
	res := SendResult{ClientMsgID: o.ClientMsgID}
	if len(o.ClientMsgID) > 64 {
		return res, errors.New("client: send: ClientMsgID is longer than 64 bytes")
	}
	sr := &wire.SendRequest{ClientMsgId: o.ClientMsgID, Body: o.Body}
	if o.To != "" {
		sr.To = &wire.SendRequest_User{User: o.To}
	} else {
		sr.To = &wire.SendRequest_Group{Group: o.Group}
	}
	r, err := c.sendQueued(ctx, sr)
	if err != nil {
		return res, err
	}
	c.stats.sends.Add(1)
	c.ownEntry(sr, r)
	res.ID = messageID(r.GetId())
	res.Seq = r.GetSeq()
	res.SentAt = time.UnixMilli(r.GetSentAtMs())
	res.Duplicate = r.GetDuplicate()
	return res, nil
}

// Ack tells the server that everything up to seq is stored and returns the
// seq the server counts as acknowledged (the account's in account mode). The
// client acknowledges on its own after every pull; Ack is for apps that
// track what they processed themselves.
func (c *Client) Ack(ctx context.Context, seq uint64) (uint64, error) {
	req := &wire.Request{Req: &wire.Request_Ack{Ack: &wire.AckRequest{Seq: seq}}}
	resp, err := c.call(ctx, callOpts{name: "ack"}, plain(req, true))
	if err != nil {
		return 0, err
	}
	r := resp.GetAck()
	if r == nil {
		return 0, errUnexpected("ack", resp)
	}
	c.stats.acks.Add(1)
	c.noteAcked(r.GetAcked())
	return r.GetAcked(), nil
}

func (c *Client) noteAcked(seq uint64) { raise(&c.acked, seq) }

// raise sets a to v when v is higher.
func raise(a *atomic.Uint64, v uint64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// group runs a group operation; it is not replay-safe, so it never goes in
// 0-RTT data. A retried CREATE whose first answer was lost can report
// ALREADY_EXISTS.
func (c *Client) group(ctx context.Context, op wire.GroupRequest_Op, name, group string, members []string) ([]string, error) {
	req := &wire.Request{Req: &wire.Request_Group{Group: &wire.GroupRequest{Op: op, Group: group, Members: members}}}
	resp, err := c.call(ctx, callOpts{name: name}, plain(req, false))
	if err != nil {
		return nil, err
	}
	r := resp.GetGroup()
	if r == nil {
		return nil, errUnexpected(name, resp)
	}
	return r.GetMembers(), nil
}

// CreateGroup creates group with the caller as owner and the given members,
// and returns the members.
func (c *Client) CreateGroup(ctx context.Context, group string, members ...string) ([]string, error) {
	return c.group(ctx, wire.GroupRequest_OP_CREATE, "create group", group, members)
}

// AddMembers adds members to group and returns the members.
func (c *Client) AddMembers(ctx context.Context, group string, members ...string) ([]string, error) {
	return c.group(ctx, wire.GroupRequest_OP_ADD, "add members", group, members)
}

// RemoveMembers removes members from group and returns the members left.
func (c *Client) RemoveMembers(ctx context.Context, group string, members ...string) ([]string, error) {
	return c.group(ctx, wire.GroupRequest_OP_REMOVE, "remove members", group, members)
}

// Members returns the members of group.
func (c *Client) Members(ctx context.Context, group string) ([]string, error) {
	return c.group(ctx, wire.GroupRequest_OP_MEMBERS, "members", group, nil)
}

// Block stops user's messages from reaching the caller.
func (c *Client) Block(ctx context.Context, user string) error {
	return c.block(ctx, user, false)
}

// Unblock removes a block.
func (c *Client) Unblock(ctx context.Context, user string) error {
	return c.block(ctx, user, true)
}

func (c *Client) block(ctx context.Context, user string, unblock bool) error {
	name := "block"
	if unblock {
		name = "unblock"
	}
	req := &wire.Request{Req: &wire.Request_Block{Block: &wire.BlockRequest{User: user, Unblock: unblock}}}
	resp, err := c.call(ctx, callOpts{name: name}, plain(req, false))
	if err != nil {
		return err
	}
	if resp.GetBlock() == nil {
		return errUnexpected(name, resp)
	}
	return nil
}

// SetPush registers the device's push token (or replaces the registration),
// so that the server can wake the app through APNs or FCM while it has no
// live session. The registration is also sent in every later Hello. Call it
// whenever the OS hands the app a new token.
func (c *Client) SetPush(ctx context.Context, reg *wire.PushRegistration) error {
	if reg == nil || reg.GetToken() == "" {
		return errors.New("client: SetPush: a registration with a token is required")
	}
	if err := c.pushRequest(ctx, &wire.PushRequest{Registration: reg}); err != nil {
		return err
	}
	c.mu.Lock()
	c.push = reg
	c.mu.Unlock()
	return nil
}

// Logout removes the device's push registration, so that the server stops
// waking it, and closes the client. The local seq stays where it is.
func (c *Client) Logout(ctx context.Context) error {
	c.mu.Lock()
	c.push = nil
	c.mu.Unlock()
	err := c.pushRequest(ctx, &wire.PushRequest{Remove: true})
	c.Close()
	return err
}

func (c *Client) pushRequest(ctx context.Context, r *wire.PushRequest) error {
	req := &wire.Request{Req: &wire.Request_Push{Push: r}}
	resp, err := c.call(ctx, callOpts{name: "push"}, plain(req, false))
	if err != nil {
		return err
	}
	if resp.GetPush() == nil {
		return errUnexpected("push", resp)
	}
	return nil
}
