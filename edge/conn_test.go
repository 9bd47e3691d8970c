package edge

import (
	"fmt"
	"io"
	"testing"

	"github.com/quic-go/quic-go"
)

func TestConnGone(t *testing.T) {
	for _, c := range []struct {
		err  error
		gone bool
	}{
		{&quic.ApplicationError{Remote: true, ErrorMessage: "client closed"}, true},
		{fmt.Errorf("read: %w", &quic.ApplicationError{ErrorCode: 0x7db}), true},
		{&quic.IdleTimeoutError{}, true},
		{&quic.TransportError{Remote: true, ErrorCode: quic.ProtocolViolation}, true},
		{&quic.StatelessResetError{}, true},
		{&quic.StreamError{Remote: true}, false}, // the stream, not the connection
		{io.EOF, false},
		{io.ErrUnexpectedEOF, false},
	} {
		if got := connGone(c.err); got != c.gone {
			t.Errorf("connGone(%v) = %v, want %v", c.err, got, c.gone)
		}
	}
}
