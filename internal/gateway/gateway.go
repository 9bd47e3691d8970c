// Package gateway assembles Tern's embedded gateway — storage, core and the
// edge on a QUIC listener — with its keys and certificate kept in a data
// directory, exactly as `tern serve` runs it. cmd/tern, the test server and
// the benchmarks all start it through Open.
package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/push"
	"github.com/ternhq/tern/storage"
	"github.com/ternhq/tern/wire"
)

// Paths of the data directory, relative to Config.Dir.
const (
	DBDir         = "db"
	SigningKey    = "keys/token-ed25519.pem"
	TransportKey  = "keys/transport-secret"
	DevCertSubdir = "tls"
)

// Config configures a gateway. Zero values mean defaults.
type Config struct {
	// Dir is the data directory (required): the Badger store, the token
	// signing key, the transport secret and the development certificate.
	Dir string
	// Memory keeps state in memory instead of Badger (development, tests).
	Memory bool
	// Listen is the QUIC (UDP) address; default 127.0.0.1:0.
	Listen string
	Core   core.Config
	Store  storage.Options
	// Edge configures the edge; Auth defaults to a verifier accepting the
	// signing key in Dir and TokenKeys.
	Edge edge.Config
	// QUIC configures the listener; Secrets default to the transport secret
	// in Dir, so that resets, address tokens and tickets survive restarts.
	QUIC edge.QUICOptions
	// TLS is the listener's certificate configuration; nil means the
	// development certificate in Dir/tls.
	TLS *tls.Config
	// TokenKeys are extra public keys whose tokens are accepted.
	TokenKeys []ed25519.PublicKey
	// Push, when set, wakes devices through APNs and FCM (package push);
	// its OnInvalidToken, Logger and Metrics are filled in. nil: no pushes
	// (registrations are still stored).
	Push *push.Config
	// Logger and Metrics are handed to every tier unless set there.
	Logger  *slog.Logger
	Metrics core.Metrics
}

// Gateway is a running embedded gateway.
type Gateway struct {
	Addr     string
	Core     *core.Core
	Store    *storage.Store
	Edge     *edge.Server
	Listener *edge.Listener
	// Signer mints tokens with the gateway's own key.
	Signer edge.TokenSigner
	// CAFile is the development certificate clients pin ("" with Config.TLS).
	CAFile string
	// CAPool holds CAFile's certificate.
	CAPool *x509.CertPool
	// Pusher is the push service, nil without Config.Push.
	Pusher *push.Service

	serveErr chan error
	stopped  bool
}

// Open starts a gateway and returns once it accepts connections.
func Open(cfg Config) (g *Gateway, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("gateway: Config.Dir is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	setLogger := func(l **slog.Logger, component string) {
		if *l == nil {
			*l = cfg.Logger.With("component", component)
		}
	}
	setLogger(&cfg.Core.Logger, "core")
	setLogger(&cfg.Store.Logger, "storage")
	setLogger(&cfg.Edge.Logger, "edge")
	if cfg.Metrics != nil {
		for _, m := range []*core.Metrics{&cfg.Core.Metrics, &cfg.Store.Metrics, &cfg.Edge.Metrics, &cfg.QUIC.Metrics} {
			if *m == nil {
				*m = cfg.Metrics
			}
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: data directory: %w", err)
	}
	priv, err := edge.LoadOrCreateSigningKey(filepath.Join(cfg.Dir, SigningKey))
	if err != nil {
		return nil, err
	}
	g = &Gateway{Signer: edge.TokenSigner{Key: priv}, serveErr: make(chan error, 1)}
	if cfg.Edge.Auth == nil {
		keys := append([]ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}, cfg.TokenKeys...)
		cfg.Edge.Auth = &edge.TokenVerifier{Keys: keys}
	}
	if cfg.QUIC.Secrets == nil {
		if cfg.QUIC.Secrets, err = edge.LoadOrCreateSecrets(filepath.Join(cfg.Dir, TransportKey)); err != nil {
			return nil, err
		}
	}
	tlsConf := cfg.TLS
	if tlsConf == nil {
		cert, caFile, err := edge.LoadOrCreateDevCert(filepath.Join(cfg.Dir, DevCertSubdir))
		if err != nil {
			return nil, err
		}
		if g.CAPool, err = edge.CertPool(caFile); err != nil {
			return nil, err
		}
		g.CAFile, tlsConf = caFile, edge.ServerTLSConfig(cert)
	}

	if cfg.Memory {
		g.Store = storage.NewMemory(cfg.Store)
	} else if g.Store, err = storage.OpenBadger(filepath.Join(cfg.Dir, DBDir), cfg.Store); err != nil {
		return nil, err
	}
	// The failure paths below return a nil *Gateway, which sets g to nil
	// before this runs: close what was opened through its own pointer.
	opened := g
	defer func() {
		if err != nil {
			opened.closeCore()
		}
	}()
	if cfg.Push != nil {
		pc := *cfg.Push
		if pc.Logger == nil {
			pc.Logger = cfg.Logger.With("component", "push")
		}
		if pc.Metrics == nil {
			pc.Metrics = cfg.Metrics
		}
		if pc.OnInvalidToken == nil {
			// Core does not exist yet; the service reports dead tokens only
			// once pushes flow, after Open returned.
			pc.OnInvalidToken = func(ctx context.Context, u core.UserID, d core.DeviceID, token, reason string) {
				g.Core.DropPushToken(ctx, u, d, token, reason)
			}
		}
		if g.Pusher, err = push.New(pc); err != nil {
			return nil, err
		}
		cfg.Core.Pusher = g.Pusher
	}
	if g.Core, err = core.New(cfg.Core, g.Store); err != nil {
		return nil, err
	}
	if g.Edge, err = edge.NewServer(cfg.Edge, g.Core); err != nil {
		return nil, err
	}
	if g.Listener, err = edge.Listen(cfg.Listen, tlsConf, cfg.QUIC); err != nil {
		return nil, err
	}
	g.Addr = g.Listener.Addr().String()
	go func() { g.serveErr <- g.Edge.Serve(g.Listener) }()
	return g, nil
}

// Token mints a token for the device with the gateway's key.
func (g *Gateway) Token(user, device string, ttl time.Duration) (string, error) {
	return g.Signer.Sign(core.UserID(user), core.DeviceID(device), ttl)
}

// ClientTLS returns a client TLS configuration that trusts the development
// certificate.
func (g *Gateway) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: g.CAPool, ServerName: "localhost", NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13}
}

// Serving returns a channel that receives Serve's error if the listener
// fails while the gateway runs.
func (g *Gateway) Serving() <-chan error { return g.serveErr }

// Shutdown drains the edge (GoAway, requests in flight, bounded by ctx),
// then stops core (the outbox stays for the next start), the store and the
// socket. It returns the first error.
func (g *Gateway) Shutdown(ctx context.Context) error {
	if g.stopped {
		return nil
	}
	g.stopped = true
	err := g.Edge.Shutdown(ctx)
	select {
	case e := <-g.serveErr:
		if e != nil && !errors.Is(e, edge.ErrServerClosed) && err == nil {
			err = fmt.Errorf("gateway: serve: %w", e)
		}
	default:
	}
	if e := g.Core.Close(ctx); e != nil && err == nil {
		err = e
	}
	if g.Pusher != nil {
		if e := g.Pusher.Close(ctx); e != nil && err == nil {
			err = e
		}
	}
	if e := g.Store.Close(); e != nil && err == nil {
		err = e
	}
	g.Listener.CloseTransport()
	return err
}

// Close stops everything at once.
func (g *Gateway) Close() error {
	if g.stopped {
		return nil
	}
	g.stopped = true
	g.Edge.Close()
	err := g.closeCore()
	g.Listener.CloseTransport()
	return err
}

func (g *Gateway) closeCore() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if g.Core != nil {
		g.Core.Close(ctx)
	}
	if g.Pusher != nil {
		g.Pusher.Close(ctx)
	}
	if g.Store != nil {
		return g.Store.Close()
	}
	return nil
}
