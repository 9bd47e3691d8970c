package ternproc

import (
	"github.com/ternhq/tern/bench"
)

// Target is Tern as a bench.Target: package bench's Tern target (the SDK,
// one device per user, resuming across Connects; the copies of a user's
// own sends left out of its deliveries) pointed at the child server, whose
// life it ends on Close.
type Target struct {
	*bench.Tern
	srv *Server
}

var _ bench.Target = (*Target)(nil)

// NewTarget returns the Target for srv; closing it stops srv.
func NewTarget(srv *Server) (*Target, error) {
	t, err := bench.NewTern(bench.TernConfig{Addr: srv.Addr, TLS: srv.TLS, Token: srv.Token})
	if err != nil {
		return nil, err
	}
	return &Target{Tern: t, srv: srv}, nil
}

// Server is the child process.
func (t *Target) Server() *Server { return t.srv }

// Close stops the server.
func (t *Target) Close() error {
	terr := t.Tern.Close()
	if err := t.srv.Close(); err != nil {
		return err
	}
	return terr
}
