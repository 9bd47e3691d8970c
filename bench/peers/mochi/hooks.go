package mochi

import (
	"log/slog"
	"net"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// storeBeforeAck makes mochi store a QoS 1/2 message in its subscribers'
// sessions before it acknowledges it to the publisher. mochi calls OnPublish
// before it writes the PUBACK; the hook hands the message to the subscribers
// right there through the server's inline client (which stores it in each
// subscriber's session with the storage hook), then answers
// CodeSuccessIgnore, on which mochi sends the PUBACK and skips its own
// hand-over. Messages published by the inline client itself pass through.
type storeBeforeAck struct {
	mqtt.HookBase
	srv *mqtt.Server
}

func (h *storeBeforeAck) ID() string { return "store-before-ack" }

func (h *storeBeforeAck) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *storeBeforeAck) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	if err := h.srv.Publish(pk.TopicName, pk.Payload, pk.FixedHeader.Retain, pk.FixedHeader.Qos); err != nil {
		// mochi answers a v5 publisher with this code in the PUBACK.
		return pk, packets.ErrImplementationSpecificError
	}
	return pk, packets.CodeSuccessIgnore
}

// netListener serves mochi clients from any net.Listener (TCP, or QUIC
// through quicconn). mochi's own listeners.Net does the same but shares one
// error variable between its connection goroutines (a data race under
// -race); this one also closes the connections it accepted and waits for
// their goroutines on Close.
type netListener struct {
	id string
	l  net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // accepted and not yet finished
	closed bool
	wg     sync.WaitGroup // Serve and the connection goroutines
}

var _ listeners.Listener = (*netListener)(nil)

func newNetListener(id string, l net.Listener) *netListener {
	return &netListener{id: id, l: l, conns: make(map[net.Conn]struct{})}
}

func (n *netListener) ID() string                { return n.id }
func (n *netListener) Address() string           { return n.l.Addr().String() }
func (n *netListener) Protocol() string          { return n.l.Addr().Network() }
func (n *netListener) Init(_ *slog.Logger) error { return nil }

// Serve accepts until the listener is closed; mochi runs it on its own
// goroutine.
func (n *netListener) Serve(establish listeners.EstablishFn) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	defer n.wg.Done()
	for {
		c, err := n.l.Accept()
		if err != nil {
			return
		}
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			c.Close()
			return
		}
		n.conns[c] = struct{}{}
		n.wg.Add(1)
		n.mu.Unlock()
		go func() {
			defer n.wg.Done()
			_ = establish(n.id, c) // a client's end is not the listener's error
			c.Close()
			n.mu.Lock()
			delete(n.conns, c)
			n.mu.Unlock()
		}()
	}
}

// Close disconnects the listener's clients, stops accepting, and waits for
// every goroutine the listener started.
func (n *netListener) Close(closeClients listeners.CloseFn) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.mu.Unlock()
	closeClients(n.id)
	n.l.Close()
	n.mu.Lock()
	for c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
}
