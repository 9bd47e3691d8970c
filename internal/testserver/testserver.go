// Package testserver runs an embedded Tern gateway (edge + core + storage) in
// process on 127.0.0.1 port 0, for tests and benchmarks: real QUIC, real
// TLS, real tokens, and a Badger store in a temporary directory (or memory).
package testserver

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/storage"
	"github.com/ternhq/tern/wire"
)

// Options configure a Server. Zero values are defaults.
type Options struct {
	// Dir holds the Badger store and the TLS certificate; "" means
	// t.TempDir(). Memory keeps state in memory instead of Badger.
	Dir    string
	Memory bool
	Core   core.Config
	Edge   edge.Config
	QUIC   edge.QUICOptions
	Store  storage.Options
	// Listen is the UDP address; default 127.0.0.1:0.
	Listen string
	Logger *slog.Logger
}

// Server is a running embedded gateway.
type Server struct {
	Addr    string
	Core    *core.Core
	Store   *storage.Store
	Edge    *edge.Server
	Signer  edge.TokenSigner
	CAPool  *x509.CertPool
	CAFile  string
	ln      *edge.Listener
	serveCh chan error
	closed  bool
	ownDir  string // removed by Close when New made it
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
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	ownDir := ""
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "tern-testserver-")
		if err != nil {
			return nil, err
		}
		o.Dir, ownDir = d, d
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Core.SendRate == 0 {
		o.Core.SendRate = -1 // tests send in bursts
	}
	if o.Core.Logger == nil {
		o.Core.Logger = o.Logger
	}
	if o.Edge.Logger == nil {
		o.Edge.Logger = o.Logger
	}
	// The signing key lives in Dir, as with tern serve, so that a server
	// restarted on the same Dir accepts the tokens of its previous life.
	priv, err := edge.LoadOrCreateSigningKey(filepath.Join(o.Dir, "keys", "token-ed25519.pem"))
	if err != nil {
		return nil, err
	}
	s := &Server{Signer: edge.TokenSigner{Key: priv}, serveCh: make(chan error, 1), ownDir: ownDir}
	if o.Memory {
		s.Store = storage.NewMemory(o.Store)
	} else {
		if s.Store, err = storage.OpenBadger(filepath.Join(o.Dir, "db"), o.Store); err != nil {
			return nil, err
		}
	}
	if s.Core, err = core.New(o.Core, s.Store); err != nil {
		s.Store.Close()
		return nil, err
	}
	if o.Edge.Auth == nil {
		o.Edge.Auth = &edge.TokenVerifier{Keys: []ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}}
	}
	if s.Edge, err = edge.NewServer(o.Edge, s.Core); err != nil {
		s.closeCore()
		return nil, err
	}
	cert, caFile, err := edge.LoadOrCreateDevCert(filepath.Join(o.Dir, "tls"))
	if err != nil {
		s.closeCore()
		return nil, err
	}
	s.CAFile = caFile
	if s.CAPool, err = edge.CertPool(caFile); err != nil {
		s.closeCore()
		return nil, err
	}
	if s.ln, err = edge.Listen(o.Listen, edge.ServerTLSConfig(cert), o.QUIC); err != nil {
		s.closeCore()
		return nil, err
	}
	s.Addr = s.ln.Addr().String()
	go func() { s.serveCh <- s.Edge.Serve(s.ln) }()
	return s, nil
}

// Token mints a token for the device, valid for an hour.
func (s *Server) Token(user, device string) string {
	tok, err := s.Signer.Sign(core.UserID(user), core.DeviceID(device), time.Hour)
	if err != nil {
		panic(err)
	}
	return tok
}

// ClientTLS returns a TLS config that trusts the server's certificate.
func (s *Server) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.CAPool, ServerName: "localhost", NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13}
}

// UDPAddr is Addr resolved.
func (s *Server) UDPAddr() *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", s.Addr)
	if err != nil {
		panic(err)
	}
	return a
}

// Shutdown drains the edge gracefully (GoAway, in-flight requests), then
// stops core and the store.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.Edge.Shutdown(ctx)
	if e := <-s.serveCh; e != nil && e != edge.ErrServerClosed && err == nil {
		err = fmt.Errorf("serve: %w", e)
	}
	s.closeCore()
	s.ln.CloseTransport()
	return err
}

// Close stops everything at once.
func (s *Server) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.Edge.Close()
	<-s.serveCh
	s.closeCore()
	return s.ln.CloseTransport()
}

func (s *Server) closeCore() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.Core != nil {
		s.Core.Close(ctx)
	}
	s.Store.Close()
	if s.ownDir != "" {
		os.RemoveAll(s.ownDir)
	}
}
