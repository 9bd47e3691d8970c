package ternproc

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/wire"
)

// Target is Tern as a bench.Target: the child server and clients of Tern's
// SDK, one device per user. A user's seq (what it was handed) and TLS
// session cache stay in the Target across Connects, so a user that
// connects again resumes where it stopped. Deliveries are the messages
// sent to the user; the copies of its own sends (Message.Mine) are left
// out.
type Target struct {
	srv *Server

	mu    sync.Mutex
	users map[string]*user
}

type user struct {
	seq     *client.MemorySeqStore
	tickets tls.ClientSessionCache
}

var _ bench.Target = (*Target)(nil)

// NewTarget returns the Target for srv; closing it stops srv.
func NewTarget(srv *Server) *Target { return &Target{srv: srv, users: make(map[string]*user)} }

// Name is "tern".
func (t *Target) Name() string { return "tern" }

// Server is the child process.
func (t *Target) Server() *Server { return t.srv }

// Close stops the server.
func (t *Target) Close() error { return t.srv.Close() }

func (t *Target) user(name string) *user {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.users[name]
	if u == nil {
		u = &user{seq: client.NewMemorySeqStore(0), tickets: tls.NewLRUClientSessionCache(2)}
		t.users[name] = u
	}
	return u
}

// Connect dials user's device and waits for its session.
func (t *Target) Connect(ctx context.Context, name string, deliver func(bench.Delivery)) (bench.Conn, error) {
	u := t.user(name)
	tc := t.srv.TLS.Clone()
	tc.ClientSessionCache = u.tickets
	c, err := client.Dial(ctx, client.Config{
		Addr:      t.srv.Addr,
		TLS:       tc,
		Platform:  wire.Platform_PLATFORM_DESKTOP,
		SeqStore:  u.seq,
		TokenFunc: func(context.Context) (string, error) { return t.srv.Token(name) },
		OnMessage: func(m client.Message) {
			if m.Mine || deliver == nil {
				return
			}
			deliver(bench.Delivery{Seq: m.Seq, ID: m.ID.String(), Body: m.Body, At: time.Now()})
		},
	})
	if err != nil {
		return nil, fmt.Errorf("tern: connect %s: %w", name, err)
	}
	return conn{c}, nil
}

type conn struct{ c *client.Client }

func (c conn) Send(ctx context.Context, to string, body []byte) error {
	_, err := c.c.Send(ctx, to, body)
	return err
}

func (c conn) Close() error { return c.c.Close() }
