package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ternhq/tern/wire"
)

// minReadFrame is the smallest limit on frames the client reads, whatever
// the server announces.
const minReadFrame = 1 << 20

func maxReadFrame(announced uint32) int { return max(int(announced), minReadFrame) }

// finWait bounds the wait for a request stream's FIN after its Response.
const finWait = 100 * time.Millisecond

// cancelCode is the stream error code of requests the client abandons
// (context done, attempt timed out). The protocol has no CANCELLED code; 0
// says "no error, not interested any more".
const cancelCode quic.StreamErrorCode = 0

// session is one connection that got a Welcome.
type session struct {
	conn     *quic.Conn
	str      *quic.Stream // the session stream
	welcome  *wire.Welcome
	maxWrite int // bound on the frames the client writes
	maxRead  int // bound on the frames the client reads
	started  time.Time

	wmu     sync.Mutex                  // serialises writes on str after the Hello
	pending atomic.Pointer[pendingSync] // the Sync pipelined with the Hello, until read

	// Owned by the reader goroutine: it writes goAway and readErr, and
	// closes readerDone when it returns.
	goAway     chan *wire.GoAway // cap 1
	readErr    error
	readerDone chan struct{}

	gone     chan struct{} // closed when the session is unpublished
	goneOnce sync.Once

	// pathCtx is cancelled with errPathChanged when the connection moves
	// to a new path, and replaced; request attempts are bound to it.
	pathMu     sync.Mutex
	pathCtx    context.Context
	pathCancel context.CancelCauseFunc
}

// errPathChanged cancels the request attempts in flight when the connection
// moved to a new network path: their packets went out on the old one, and
// repeating them on new streams gets them (and, through the new stream
// data, quic-go's switch to the new path) moving at once instead of after a
// retransmission timeout.
var errPathChanged = errors.New("client: network path changed")

// attemptContext bounds one request attempt: by ctx, by timeout, and by the
// current network path.
func (s *session) attemptContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	s.pathMu.Lock()
	pctx := s.pathCtx
	s.pathMu.Unlock()
	cctx, cancelCause := context.WithCancelCause(ctx)
	stop := context.AfterFunc(pctx, func() { cancelCause(context.Cause(pctx)) })
	actx, cancelTimeout := context.WithTimeout(cctx, timeout)
	return actx, func() {
		stop()
		cancelTimeout()
		cancelCause(nil)
	}
}

// pathChanged cancels the attempts bound to the old path.
func (s *session) pathChanged() {
	s.pathMu.Lock()
	defer s.pathMu.Unlock()
	s.pathCancel(errPathChanged)
	s.pathCtx, s.pathCancel = context.WithCancelCause(context.Background())
}

// pendingSync is a Sync request sent with the Hello whose response has not
// been read.
type pendingSync struct {
	str   *quic.Stream
	after uint64
}

func newSession(conn *quic.Conn, str *quic.Stream) *session {
	pctx, pcancel := context.WithCancelCause(context.Background())
	return &session{
		pathCtx:    pctx,
		pathCancel: pcancel,
		conn:       conn,
		str:        str,
		maxWrite:   wire.DefaultMaxFrameSize,
		maxRead:    maxReadFrame(0),
		goAway:     make(chan *wire.GoAway, 1),
		readerDone: make(chan struct{}),
		gone:       make(chan struct{}),
	}
}

func (s *session) setWelcome(w *wire.Welcome) {
	s.welcome = w
	if n := int(w.GetMaxFrameSize()); n > 0 {
		s.maxWrite = n
	}
	s.maxRead = maxReadFrame(w.GetMaxFrameSize())
}

// close closes the connection with code 0 and waits for the reader.
func (s *session) close(reason string) {
	s.conn.CloseWithError(0, reason)
	<-s.readerDone
}

// endErr is why the session ended: what the reader saw, else the
// connection's cause.
func (s *session) endErr() error {
	<-s.readerDone
	if we := remoteError(context.Cause(s.conn.Context())); we != nil {
		return we
	}
	var we *wire.Error
	if errors.As(s.readErr, &we) {
		return we
	}
	if err := context.Cause(s.conn.Context()); err != nil {
		return err
	}
	return s.readErr
}

// writeSession writes one frame on the session stream.
func (s *session) writeSession(ctx context.Context, m *wire.SessionUp) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		s.str.SetWriteDeadline(dl)
		defer s.str.SetWriteDeadline(time.Time{})
	}
	return wire.WriteFrame(s.str, m)
}

// errRequestTooLarge builds the error for a request the server would refuse
// for its size; it is returned without sending anything.
func errRequestTooLarge(n, limit int) error {
	return &wire.Error{
		Code:    uint32(wire.CodeFrameTooLarge),
		Message: fmt.Sprintf("request of %d bytes exceeds the server's frame limit of %d (checked by the client)", n, limit),
	}
}

// startRequest opens a stream, writes req and closes the send side.
func (s *session) startRequest(ctx context.Context, req *wire.Request) (*quic.Stream, error) {
	str, buf, err := s.openRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { abortStream(str) })
	defer stop()
	if err := writeRequest(ctx, str, buf); err != nil {
		return nil, err
	}
	return str, nil
}

// openRequest encodes req and opens its stream.
func (s *session) openRequest(ctx context.Context, req *wire.Request) (*quic.Stream, []byte, error) {
	buf, err := wire.AppendFrame(nil, req)
	if err != nil {
		return nil, nil, err
	}
	if n, _ := binary.Uvarint(buf); n > uint64(s.maxWrite) {
		return nil, nil, errRequestTooLarge(int(n), s.maxWrite)
	}
	str, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, err
	}
	return str, buf, nil
}

// writeRequest writes the encoded request and closes the send side; ctx
// must abort str when it ends.
func writeRequest(ctx context.Context, str *quic.Stream, buf []byte) error {
	if _, err := str.Write(buf); err != nil {
		abortStream(str)
		return ctxOr(ctx, err)
	}
	if err := str.Close(); err != nil {
		abortStream(str)
		return ctxOr(ctx, err)
	}
	return nil
}

// readResponse reads the one Response of a request stream.
func (s *session) readResponse(ctx context.Context, str *quic.Stream) (*wire.Response, error) {
	stop := context.AfterFunc(ctx, func() { abortStream(str) })
	defer stop()
	return s.awaitResponse(ctx, str)
}

// awaitResponse reads the one Response of a request stream; ctx must abort
// str when it ends.
func (s *session) awaitResponse(ctx context.Context, str *quic.Stream) (*wire.Response, error) {
	var resp wire.Response
	if _, err := wire.ReadMessage(str, s.maxRead, nil, &resp); err != nil {
		abortStream(str)
		return nil, ctxOr(ctx, err)
	}
	// Read the FIN (it normally came with the frame), so that quic-go can
	// forget the stream; a server that holds it back is not waited for.
	str.SetReadDeadline(time.Now().Add(finWait))
	var one [1]byte
	if n, err := str.Read(one[:]); n > 0 || !errors.Is(err, io.EOF) {
		str.CancelRead(cancelCode)
	}
	return &resp, nil
}

// roundTrip runs one request on its own stream, with one watch of ctx for
// the whole exchange. A request that is not safe to replay waits for the
// handshake, so that it never goes in 0-RTT data.
func (s *session) roundTrip(ctx context.Context, req *wire.Request, replaySafe bool) (*wire.Response, error) {
	if !replaySafe {
		select {
		case <-s.conn.HandshakeComplete():
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	str, buf, err := s.openRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { abortStream(str) })
	defer stop()
	if err := writeRequest(ctx, str, buf); err != nil {
		return nil, err
	}
	return s.awaitResponse(ctx, str)
}

func abortStream(str *quic.Stream) {
	str.CancelWrite(cancelCode)
	str.CancelRead(cancelCode)
}

// ctxOr returns ctx's cause when ctx is done (the stream error is then ours),
// err otherwise.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}
