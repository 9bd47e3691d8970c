package e2e

import (
	"context"
	"errors"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/internal/rawclient"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/wire"
)

type quicConfig = quic.Config

func asWire(err error, target **wire.Error) bool { return errors.As(err, target) }

func rawDial(s *testserver.Server, user, device string) (*rawclient.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return rawclient.Connect(ctx, s.Addr, s.ClientTLS(), &wire.Hello{Token: s.Token(user, device)})
}
