package bench

import (
	"context"
	"errors"
	"sync"
)

// fault is how fakeTarget misbehaves on purpose.
type fault int

const (
	faultNone    fault = iota
	faultLose          // acknowledges the 5th send and drops it
	faultDup           // stores the 5th send twice
	faultReorder       // holds the 5th send back behind the pair's next one
	faultReplay        // a reconnecting user gets its last message again
	faultSeqDup        // hands the 5th delivery over twice with the same seq
)

const faultAt = 5

// fakeTarget is an in-memory durable inbox: Send appends to the receiver's
// mailbox and acknowledges; each connection delivers the mailbox from the
// user's cursor on, from one goroutine. It breaks one guarantee on demand.
type fakeTarget struct {
	fault fault

	mu    sync.Mutex
	boxes map[string]*fakeBox
	sends int
	held  map[[2]int]*heldMsg // faultReorder: (sender, receiver) → the held send
}

type heldMsg struct {
	to   string
	body []byte
}

type fakeBox struct {
	msgs   [][]byte
	cursor int // entries delivered so far (the user's durable position)
	wake   chan struct{}
	conn   *fakeConn
}

func newFake(f fault) *fakeTarget {
	return &fakeTarget{fault: f, boxes: make(map[string]*fakeBox), held: make(map[[2]int]*heldMsg)}
}

func (t *fakeTarget) Name() string { return "fake" }
func (t *fakeTarget) Close() error { return nil }

func (t *fakeTarget) box(user string) *fakeBox {
	b := t.boxes[user]
	if b == nil {
		b = &fakeBox{wake: make(chan struct{}, 1)}
		t.boxes[user] = b
	}
	return b
}

func (t *fakeTarget) Connect(ctx context.Context, user string, deliver func(Delivery)) (Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.box(user)
	if b.conn != nil {
		return nil, errors.New("fake: user already connected")
	}
	if t.fault == faultReplay && b.cursor > 0 {
		b.cursor--
	}
	c := &fakeConn{t: t, user: user, quit: make(chan struct{}), done: make(chan struct{})}
	b.conn = c
	go c.loop(b, deliver)
	return c, nil
}

type fakeConn struct {
	t    *fakeTarget
	user string
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

func (c *fakeConn) loop(b *fakeBox, deliver func(Delivery)) {
	defer close(c.done)
	for {
		c.t.mu.Lock()
		var batch [][]byte
		from := b.cursor
		if b.cursor < len(b.msgs) {
			batch = b.msgs[b.cursor:]
			b.cursor = len(b.msgs)
		}
		c.t.mu.Unlock()
		for i, m := range batch {
			seq := uint64(from + i + 1)
			deliver(Delivery{Seq: seq, Body: m})
			if c.t.fault == faultSeqDup && seq == faultAt {
				deliver(Delivery{Seq: seq, Body: m})
			}
		}
		select {
		case <-b.wake:
		case <-c.quit:
			return
		}
	}
}

func (c *fakeConn) Close() error {
	c.once.Do(func() {
		close(c.quit)
		<-c.done
		c.t.mu.Lock()
		c.t.boxes[c.user].conn = nil
		c.t.mu.Unlock()
	})
	return nil
}

func (c *fakeConn) Send(ctx context.Context, to string, body []byte) error {
	t := c.t
	body = append([]byte(nil), body...)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sends++
	b := t.box(to)
	st, _ := DecodeBody(body)
	key := [2]int{st.Sender, st.Receiver}
	switch {
	case t.sends == faultAt && t.fault == faultLose:
		return nil // acknowledged, never stored
	case t.sends == faultAt && t.fault == faultDup:
		b.msgs = append(b.msgs, body)
	case t.sends == faultAt && t.fault == faultReorder:
		t.held[key] = &heldMsg{to, body}
		return nil
	}
	b.msgs = append(b.msgs, body)
	if h := t.held[key]; h != nil {
		delete(t.held, key)
		b.msgs = append(b.msgs, h.body)
	}
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}
