// Package testserver runs an embedded Tern gateway (edge + core + storage) in
// process on 127.0.0.1 port 0, for tests and benchmarks: real QUIC, real
// TLS, real tokens, and a Badger store in a temporary directory (or memory).
// It is internal/gateway with test conveniences.
package testserver

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/gateway"
	"github.com/ternhq/tern/push"
	"github.com/ternhq/tern/storage"
)

// Options configure a Server. Zero values are defaults.
type Options struct {
	// Dir holds the store, keys and certificate; "" means a temporary
	// directory. Memory keeps state in memory instead of Badger.
	Dir    string
	Memory bool
	// Core defaults to no send rate limit (tests send in bursts).
	Core  core.Config
	Edge  edge.Config
	QUIC  edge.QUICOptions
	Store storage.Options
	// Listen is the UDP address; default 127.0.0.1:0.
	Listen string
	// Push, when set, starts the push service (see gateway.Config.Push).
	Push   *push.Config
	Logger *slog.Logger
	// Metrics receives every tier's metrics.
	Metrics core.Metrics
}

// Server is a running embedded gateway.
type Server struct {
	*gateway.Gateway
	ownDir string // removed by Close when New made it
}

// Start starts a gateway and registers its Close with t.Cleanup.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// New starts a gateway; the caller must Close it.
func New(o Options) (*Server, error) {
	s := &Server{}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "tern-testserver-")
		if err != nil {
			return nil, err
		}
		o.Dir, s.ownDir = d, d
	}
	if o.Core.SendRate == 0 {
		o.Core.SendRate = -1
	}
	g, err := gateway.Open(gateway.Config{
		Dir: o.Dir, Memory: o.Memory, Listen: o.Listen,
		Core: o.Core, Store: o.Store, Edge: o.Edge, QUIC: o.QUIC, Push: o.Push, Logger: o.Logger, Metrics: o.Metrics,
	})
	if err != nil {
		s.removeDir()
		return nil, err
	}
	s.Gateway = g
	return s, nil
}

// Token mints a token for the device, valid for an hour.
func (s *Server) Token(user, device string) string {
	tok, err := s.Gateway.Token(user, device, time.Hour)
	if err != nil {
		panic(err)
	}
	return tok
}

// UDPAddr is Addr resolved.
func (s *Server) UDPAddr() *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", s.Addr)
	if err != nil {
		panic(err)
	}
	return a
}

// Shutdown drains gracefully; see gateway.Gateway.Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.removeDir()
	return s.Gateway.Shutdown(ctx)
}

// Close stops everything at once.
func (s *Server) Close() error {
	defer s.removeDir()
	return s.Gateway.Close()
}

func (s *Server) removeDir() {
	if s.ownDir != "" {
		os.RemoveAll(s.ownDir)
	}
}
