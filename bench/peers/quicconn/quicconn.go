// Package quicconn carries a stream protocol (MQTT here) over QUIC: one QUIC
// connection per client connection, one bidirectional stream on it, seen by
// both ends as a net.Conn. It lets a TCP server such as mochi-mqtt accept
// QUIC clients through a net.Listener, and a TCP client dial over QUIC.
//
// Protocol flow: the client dials, opens one bidirectional stream and writes
// first (QUIC only announces a stream to the peer with its first bytes); the
// server's Accept returns once that stream arrives. Closing either net.Conn
// closes the whole QUIC connection; the dialing side first sends FIN and
// waits (at most CloseWait) for the server to close, so that its last bytes
// (an MQTT DISCONNECT, acknowledgements) are delivered.
//
// Concurrency: a Listener runs one goroutine that accepts QUIC connections
// and one short-lived goroutine per connection waiting for its stream; Close
// stops them and waits for them. Conn is safe for one reader and any number
// of writers at once (writes are serialised).
package quicconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Defaults, used where Options leave a zero value.
const (
	// DefaultStreamWait bounds how long an accepted QUIC connection may take
	// to open its stream.
	DefaultStreamWait = 10 * time.Second
	// DefaultCloseWait bounds how long the dialing side's Close waits for the
	// server to close the connection after FIN.
	DefaultCloseWait = 2 * time.Second
)

// Options configure both ends. Zero values mean the defaults above; QUIC nil
// means quic-go's defaults with a 30 s idle timeout and 10 s keepalive.
type Options struct {
	QUIC       *quic.Config
	StreamWait time.Duration
	CloseWait  time.Duration
}

func (o Options) quicConfig() *quic.Config {
	if o.QUIC != nil {
		return o.QUIC.Clone()
	}
	return &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 10 * time.Second}
}

func (o Options) streamWait() time.Duration {
	if o.StreamWait > 0 {
		return o.StreamWait
	}
	return DefaultStreamWait
}

func (o Options) closeWait() time.Duration {
	if o.CloseWait > 0 {
		return o.CloseWait
	}
	return DefaultCloseWait
}

// Listener accepts QUIC connections and returns each one's first
// bidirectional stream as a net.Conn.
type Listener struct {
	ql   *quic.Listener
	opts Options

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	conns  chan net.Conn
	wg     sync.WaitGroup // the accept loop and the stream waiters

	closeOnce sync.Once
}

var _ net.Listener = (*Listener)(nil)

// Listen listens on the UDP address addr ("127.0.0.1:0"). tlsConf must carry
// a certificate and the application's NextProtos (ALPN).
func Listen(addr string, tlsConf *tls.Config, opts Options) (*Listener, error) {
	ql, err := quic.ListenAddr(addr, tlsConf, opts.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("quicconn: listen %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{ql: ql, opts: opts, ctx: ctx, cancel: cancel, conns: make(chan net.Conn)}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		qc, err := l.ql.Accept(l.ctx)
		if err != nil {
			return // closed
		}
		l.wg.Add(1)
		go l.awaitStream(qc)
	}
}

// awaitStream waits for the connection's stream and hands it to Accept.
func (l *Listener) awaitStream(qc *quic.Conn) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.streamWait())
	defer cancel()
	s, err := qc.AcceptStream(ctx)
	if err != nil {
		_ = qc.CloseWithError(0, "no stream")
		return
	}
	c := &Conn{qc: qc, s: s}
	select {
	case l.conns <- c:
	case <-l.ctx.Done():
		_ = c.Close()
	}
}

// Accept returns the next client's stream.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and waits for the listener's goroutines. Accepted
// connections stay open; their owners close them.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.cancel()
		err = l.ql.Close()
		l.wg.Wait()
	})
	return err
}

// Addr is the UDP address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ql.Addr() }

// Dial connects to a Listener at addr and opens the stream.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, opts Options) (*Conn, error) {
	qc, err := quic.DialAddr(ctx, addr, tlsConf, opts.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("quicconn: dial %s: %w", addr, err)
	}
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		_ = qc.CloseWithError(0, "")
		return nil, fmt.Errorf("quicconn: open stream: %w", err)
	}
	return &Conn{qc: qc, s: s, client: true, closeWait: opts.closeWait()}, nil
}

// Conn is one QUIC connection's stream as a net.Conn.
type Conn struct {
	qc        *quic.Conn
	s         *quic.Stream
	client    bool          // the dialing side: Close waits for the server
	closeWait time.Duration // client only

	wmu       sync.Mutex // serialises Write
	closeOnce sync.Once
}

var _ net.Conn = (*Conn)(nil)

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.s.Read(p)
	return n, netError(err)
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.s.Write(p)
	return n, netError(err)
}

// Close closes the connection. On the dialing side it sends FIN first and
// waits, at most CloseWait, for the server to close the connection.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		_ = c.s.Close()
		c.wmu.Unlock()
		if c.client {
			t := time.NewTimer(c.closeWait)
			select {
			case <-c.qc.Context().Done():
			case <-t.C:
			}
			t.Stop()
		}
		_ = c.qc.CloseWithError(0, "")
	})
	return nil
}

func (c *Conn) LocalAddr() net.Addr                { return c.qc.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.qc.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.s.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.s.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }

// netError maps the end of the connection to what net.Conn users expect:
// io.EOF stays io.EOF; a closed or reset connection becomes net.ErrClosed
// wrapped with the QUIC cause; deadlines stay net.Error timeouts.
func netError(err error) error {
	if err == nil {
		return nil
	}
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) && appErr.ErrorCode == 0 {
		return fmt.Errorf("%w: %w", net.ErrClosed, err)
	}
	return err
}
