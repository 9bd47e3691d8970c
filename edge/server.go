package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/wire"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("edge: server closed")

// ConnListener is what Serve accepts connections from. Closing it must stop
// accepting without closing established connections (Listener does that).
type ConnListener interface {
	Accept(context.Context) (*quic.Conn, error)
	Close() error
	Addr() net.Addr
}

// Server terminates client connections: it authenticates the session
// stream's Hello, attaches the session to the backend, writes notifies, and
// serves one request per stream. It takes connections (ServeConn) or
// listeners (Serve); it never opens sockets itself.
type Server struct {
	cfg     Config
	backend Backend
	log     *slog.Logger
	m       core.Metrics

	inflight atomic.Int64 // requests being served, across connections
	nextID   atomic.Uint64

	mu        sync.Mutex
	listeners map[ConnListener]struct{} // guarded by mu
	conns     map[*conn]struct{}        // guarded by mu
	draining  bool                      // guarded by mu; set once by Shutdown or Close
	connWG    sync.WaitGroup            // one per ServeConn; Add only under mu while !draining
}

// NewServer returns a Server over backend.
func NewServer(cfg Config, backend Backend) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Server{
		cfg:       cfg,
		backend:   backend,
		log:       cfg.Logger,
		m:         cfg.Metrics,
		listeners: make(map[ConnListener]struct{}),
		conns:     make(map[*conn]struct{}),
	}, nil
}

// Serve accepts connections from ln and serves each in its own goroutine
// until ln fails or the server shuts down; then it returns ErrServerClosed.
func (s *Server) Serve(ln ConnListener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	// quic-go refuses a connection whose handshake is done while its accept
	// queue (32) is full. Under a reconnect storm one accepting goroutine
	// waits too long for the CPU between two accepts; several wait at once,
	// and a handshake done is handed straight to one of them.
	errs := make(chan error, acceptors)
	for range acceptors {
		go func() { errs <- s.accept(ln) }()
	}
	err := <-errs
	for range acceptors - 1 {
		<-errs
	}
	return err
}

// acceptors is how many goroutines accept from each listener.
const acceptors = 16

// accept accepts connections from ln until it fails.
func (s *Server) accept(ln ConnListener) error {
	for {
		qc, err := ln.Accept(context.Background())
		if err != nil {
			if s.isDraining() || errors.Is(err, quic.ErrServerClosed) {
				return ErrServerClosed
			}
			return fmt.Errorf("edge: accept: %w", err)
		}
		go s.ServeConn(qc)
	}
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// ServeConn serves one connection until it ends.
func (s *Server) ServeConn(qc *quic.Conn) {
	c := newConn(s, qc)
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		c.close(wire.CodeShuttingDown, "server is shutting down")
		return
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	n := len(s.conns)
	s.mu.Unlock()
	s.m.Set(MetricConnections, float64(n))
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		n := len(s.conns)
		s.mu.Unlock()
		s.m.Set(MetricConnections, float64(n))
		s.connWG.Done()
	}()
	c.run()
}

// goAwayWait bounds how long Shutdown waits for the GoAways to be written.
const goAwayWait = time.Second

// Shutdown drains the server: it stops accepting, sends every session a
// GoAway(SHUTTING_DOWN) with a reconnect delay jittered over
// Config.GoAwayJitter, waits until the GoAways are written and the requests
// in flight have finished (bounded by ctx), lets the clients read them for
// a moment, then closes every connection and waits for their goroutines.
// It returns ctx's error when the drain was cut short.
func (s *Server) Shutdown(ctx context.Context) error {
	conns := s.beginDrain()
	for _, c := range conns {
		c.goAway(wire.CodeShuttingDown, "server is shutting down", time.Duration(rand.Int64N(int64(s.cfg.GoAwayJitter)+1)))
	}
	// Every session gets its GoAway on the wire before its connection is
	// closed (connections still without a session are not waited for
	// beyond goAwayWait).
	var err error
	wait := time.NewTimer(goAwayWait)
	defer wait.Stop()
	for _, c := range conns {
		select {
		case <-c.goAwayOut:
		case <-c.ctx.Done():
		case <-wait.C:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.inflight.Load() > 0 && err == nil {
		select {
		case <-t.C:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	// Give the clients a moment to read the GoAway and leave by themselves.
	if len(conns) > 0 {
		linger := time.NewTimer(failLinger)
		defer linger.Stop()
		select {
		case <-linger.C:
		case <-ctx.Done():
		}
	}
	s.closeAll(wire.CodeShuttingDown, "server shut down")
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("edge: shutdown: %w", err)
	}
	return nil
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.beginDrain()
	s.closeAll(wire.CodeShuttingDown, "server closed")
	s.connWG.Wait()
	return nil
}

// beginDrain stops accepting and returns the open connections.
func (s *Server) beginDrain() []*conn {
	s.mu.Lock()
	s.draining = true
	lns := make([]ConnListener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, ln)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	return conns
}

func (s *Server) closeAll(code wire.Code, msg string) {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(code, msg)
	}
}

// Sessions returns the number of open connections.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
