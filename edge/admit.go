package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/core"
)

// handshakeGate bounds the TLS handshakes a listener works on at once and
// serves the rest in arrival order.
//
// Why: after an edge restart or a network outage every client comes back
// within a second. quic-go starts a handshake for every Initial at once, so
// ten thousand handshakes share the cores evenly and all of them finish late:
// clients give up (and start over, which costs the server a second
// handshake), and the goroutines that read the socket and create
// connections wait behind thousands of runnable handshakes, so packets are
// dropped and clients back off exponentially. With the gate, a handshake
// waits (parked, costing no CPU) until one of the few that run finishes its
// first flight; the server works at full speed on the oldest ones.
//
// A slot is taken in the TLS GetConfigForClient callback (the first thing
// the server's handshake does, before any key exchange) and given back when
// the listener hands the connection out (its first flight is written then:
// ClientHello processed, keys agreed, certificate signed) or when the
// connection ends first. A handshake that has waited maxWait is refused:
// quic-go's own handshake timeout keeps running while it waits, so one that
// waited longer could not finish anyway.
type handshakeGate struct {
	slots   chan struct{}
	maxWait time.Duration
	m       core.Metrics
}

// admitKey is the context key of a connection's *admission.
type admitKey struct{}

// admission is one connection's slot, given back once.
type admission struct {
	once sync.Once
	gate *handshakeGate
	held atomic.Bool // a slot was taken
}

func (a *admission) release() {
	a.once.Do(func() {
		if a.held.Load() {
			<-a.gate.slots
		}
	})
}

// errHandshakeQueue refuses a handshake that waited too long for a slot.
var errHandshakeQueue = errors.New("edge: server busy: handshake waited too long")

// install makes tlsConf and tr (a transport of the listener's own, so its
// ConnContext is free) take and give back slots.
func (g *handshakeGate) install(tlsConf *tls.Config, tr *quic.Transport) {
	tr.ConnContext = func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
		return context.WithValue(ctx, admitKey{}, &admission{gate: g}), nil
	}
	prev := tlsConf.GetConfigForClient
	tlsConf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if err := g.enter(hello.Context()); err != nil {
			return nil, err
		}
		if prev != nil {
			return prev(hello)
		}
		return nil, nil
	}
}

// enter waits for a slot for the connection whose handshake context is
// ctx, in arrival order. Contexts without an admission (not from this
// listener's transport) pass.
func (g *handshakeGate) enter(ctx context.Context) error {
	a, ok := ctx.Value(admitKey{}).(*admission)
	if !ok || a.held.Load() {
		return nil
	}
	start := time.Now()
	select {
	case g.slots <- struct{}{}:
	default:
		t := time.NewTimer(g.maxWait)
		defer t.Stop()
		select {
		case g.slots <- struct{}{}:
		case <-t.C:
			g.m.Add(MetricHandshakesShed, "queue_timeout", 1)
			return errHandshakeQueue
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	g.m.Observe(MetricHandshakeWait, time.Since(start).Seconds())
	a.held.Store(true)
	// A connection that ends before the listener hands it out gives its
	// slot back here; release is idempotent.
	context.AfterFunc(ctx, a.release)
	return nil
}

// admitted gives back the slot of a connection the listener hands out.
func admitted(qc *quic.Conn) {
	if a, ok := qc.Context().Value(admitKey{}).(*admission); ok {
		a.release()
	}
}
