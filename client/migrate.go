package client

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// SwitchNetwork moves the connection to a new local UDP address (e.g. the
// address of the new interface after a Wi-Fi to cellular change; ":0" for
// any): it opens a new socket, probes the path to the server from it and
// switches the connection over (QUIC connection migration), keeping the
// session and the requests in flight. Later connections use the new socket.
//
// When the server refuses the migration or the probe fails within ctx (or
// RequestTimeout), the client closes the connection and reconnects from the
// new socket; SwitchNetwork then returns the error that caused the
// fallback. With Config.DisableMigration it reconnects from the new socket
// straight away. While disconnected it only makes the next connection use the
// new socket.
func (c *Client) SwitchNetwork(ctx context.Context, localAddr string) error {
	c.migrateMu.Lock()
	defer c.migrateMu.Unlock()
	tr, err := newTransport(localAddr, &c.stats)
	if err != nil {
		return fmt.Errorf("client: switch network: %w", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		closeTransport(tr)
		return ErrClosed
	}
	s := c.sess
	c.mu.Unlock()
	addr := tr.Conn.LocalAddr().String()
	if s == nil {
		c.useTransport(tr)
		return nil
	}

	if c.cfg.DisableMigration {
		if !c.useTransport(tr) {
			return ErrClosed
		}
		c.log.Info("network switched; reconnecting (migration disabled)", "local_addr", addr)
		s.conn.CloseWithError(0, "network switched")
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	path, err := s.conn.AddPath(tr)
	if err == nil {
		if err = path.Probe(pctx); err == nil {
			err = path.Switch()
		}
		if err != nil {
			path.Close()
		}
	}
	if !c.useTransport(tr) {
		return ErrClosed
	}
	if err != nil {
		c.stats.migrationFailed.Add(1)
		c.log.Warn("migration failed; reconnecting", "local_addr", addr, "err", err)
		c.emit(Event{Kind: EventMigrationFailed, Addr: addr, Err: err})
		s.conn.CloseWithError(0, "migration failed")
		return fmt.Errorf("client: switch network to %s: %w (reconnecting from there)", addr, err)
	}
	c.stats.migrations.Add(1)
	// What went out on the old network may be lost with it, and quic-go
	// only applies the switch when the connection next has something to
	// do: repeat the requests in flight on new streams, and pull (a Notify
	// may have been lost too).
	s.pathChanged()
	c.wakePull()
	c.log.Info("migrated", "local_addr", addr, "session", s.welcome.GetSessionId())
	c.emit(Event{Kind: EventMigrated, Addr: addr})
	return nil
}

// useTransport makes tr the transport of later dials and retires the old
// one: it stays open while a connection may still be registered with it
// (closing a quic.Transport destroys its connections) and run closes it
// between sessions. It reports false, closing tr, when the client is
// closed.
func (c *Client) useTransport(tr *quic.Transport) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.tr == nil {
		closeTransport(tr)
		return false
	}
	c.retired = append(c.retired, c.tr)
	c.tr = tr
	return true
}

// pathWatch tells how long the connection has gone without receiving
// anything since it sent something that is owed an answer.
type pathWatch struct {
	received uint64    // packets received at the last observation
	sent     uint64    // packets sent at the last observation
	owedAt   time.Time // first observation that saw packets sent since the last receipt; zero: none owed
}

// observe takes the connection's counters at now and returns how long the
// path has been silent although packets went out: from the first
// observation that saw a packet sent after the last one received (not from
// the last receipt: an idle connection's keepalive, sent after a long quiet
// spell, is owed its answer only from when it went out) until now; 0 while
// packets arrive or nothing is owed.
func (w *pathWatch) observe(st quic.ConnectionStats, now time.Time) time.Duration {
	received, sent := st.PacketsReceived, st.PacketsSent
	defer func() { w.received, w.sent = received, sent }()
	if received != w.received {
		w.owedAt = time.Time{}
		return 0
	}
	if w.owedAt.IsZero() {
		if sent != w.sent {
			w.owedAt = now
		}
		return 0
	}
	return now.Sub(w.owedAt)
}

// recoverPath handles a path that stopped answering: it moves the connection
// to a fresh socket on the same local address (a new NAT mapping, which is
// what a rebinding NAT that dropped the old one needs). When the new path
// cannot be validated either, SwitchNetwork closes the connection and run
// reconnects.
func (c *Client) recoverPath(s *session) {
	local := "0.0.0.0:0"
	if ua, ok := s.conn.LocalAddr().(*net.UDPAddr); ok {
		local = net.JoinHostPort(ua.IP.String(), "0")
	}
	c.stats.deadPaths.Add(1)
	c.log.Warn("path silent; moving to a fresh socket", "session", s.welcome.GetSessionId(), "local", local)
	ctx, cancel := context.WithTimeout(c.ctx, min(c.cfg.RequestTimeout, c.cfg.DeadPathTimeout))
	defer cancel()
	if err := c.SwitchNetwork(ctx, local); err != nil {
		c.log.Info("fresh socket did not help; reconnecting", "err", err)
	}
}
