// Package rawclient is a bare Tern protocol client for tests: it speaks the
// wire protocol frame by frame, with none of the SDK's retries, so tests can
// control exactly what is reported and send what no well-behaved client
// would.
package rawclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/wire"
)

// Conn is one QUIC connection with its session stream.
type Conn struct {
	QC      *quic.Conn
	Session *quic.Stream
	Welcome *wire.Welcome
}

// Dial connects and opens the session stream without sending anything.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config) (*Conn, error) {
	qc, err := quic.DialAddr(ctx, addr, tlsConf, &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		qc.CloseWithError(0, "")
		return nil, err
	}
	return &Conn{QC: qc, Session: st}, nil
}

// Connect dials and completes Hello/Welcome with hello (its capability
// version defaulted).
func Connect(ctx context.Context, addr string, tlsConf *tls.Config, hello *wire.Hello) (*Conn, error) {
	c, err := Dial(ctx, addr, tlsConf)
	if err != nil {
		return nil, err
	}
	if hello.CapabilityVersion == 0 {
		hello.CapabilityVersion = wire.CapabilityVersion
	}
	if err := wire.WriteFrame(c.Session, &wire.SessionUp{Msg: &wire.SessionUp_Hello{Hello: hello}}); err != nil {
		c.Close()
		return nil, err
	}
	down, err := c.ReadSession()
	if err != nil {
		c.Close()
		return nil, AsWireError(err)
	}
	if e := down.GetError(); e != nil {
		c.Close()
		return nil, e
	}
	if c.Welcome = down.GetWelcome(); c.Welcome == nil {
		c.Close()
		return nil, fmt.Errorf("rawclient: first session frame is %T, want Welcome", down.Msg)
	}
	return c, nil
}

// AsWireError turns a connection closed with a QUIC application error into
// the *wire.Error it carries: the server writes an Error frame and closes
// with the same code, and the close can overtake the frame.
func AsWireError(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return wire.NewError(wire.Code(ae.ErrorCode), ae.ErrorMessage)
	}
	return err
}

// ReadSession reads the next session frame.
func (c *Conn) ReadSession() (*wire.SessionDown, error) {
	var m wire.SessionDown
	if _, err := wire.ReadMessage(c.Session, 1<<22, nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Do sends one request on its own stream and returns the response. A
// Response carrying an Error is returned as is (not as a Go error).
func (c *Conn) Do(ctx context.Context, req *wire.Request) (*wire.Response, error) {
	frame, err := wire.AppendFrame(nil, req)
	if err != nil {
		return nil, err
	}
	return c.DoRaw(ctx, frame)
}

// DoRaw writes raw bytes on a new request stream, closes the send side, and
// reads one response frame.
func (c *Conn) DoRaw(ctx context.Context, raw []byte) (*wire.Response, error) {
	st, err := c.QC.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if _, err := st.Write(raw); err != nil {
		return nil, err
	}
	st.Close()
	var resp wire.Response
	if _, err := wire.ReadMessage(st, 1<<22, nil, &resp); err != nil {
		return nil, err
	}
	// The server closes its side after the response.
	if _, err := st.Read(make([]byte, 1)); err != io.EOF {
		return &resp, fmt.Errorf("rawclient: data or error after the response: %v", err)
	}
	return &resp, nil
}

// Sync is a SyncRequest.
func (c *Conn) Sync(ctx context.Context, after uint64, limit uint32) (*wire.Response, error) {
	return c.Do(ctx, &wire.Request{Req: &wire.Request_Sync{Sync: &wire.SyncRequest{After: after, Limit: limit}}})
}

// Send is a SendRequest to a user.
func (c *Conn) Send(ctx context.Context, clientMsgID, to string, body []byte) (*wire.Response, error) {
	return c.Do(ctx, &wire.Request{Req: &wire.Request_Send{Send: &wire.SendRequest{ClientMsgId: clientMsgID, To: &wire.SendRequest_User{User: to}, Body: body}}})
}

// Ack is an AckRequest.
func (c *Conn) Ack(ctx context.Context, seq uint64) (*wire.Response, error) {
	return c.Do(ctx, &wire.Request{Req: &wire.Request_Ack{Ack: &wire.AckRequest{Seq: seq}}})
}

// Close closes the connection with code 0.
func (c *Conn) Close() error { return c.QC.CloseWithError(0, "") }
