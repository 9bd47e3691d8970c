package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// Framing errors. Readers wrap them with context; test with errors.Is.
var (
	// ErrFrameTooLarge: the length prefix announces more than the limit.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrTruncated: the stream ended inside a frame.
	ErrTruncated = errors.New("wire: truncated frame")
	// ErrMalformed: the length prefix or the message does not decode.
	ErrMalformed = errors.New("wire: malformed frame")
)

var marshalOpts = proto.MarshalOptions{}

// AppendFrame appends m as one frame (varint length, then message) to dst.
func AppendFrame(dst []byte, m proto.Message) ([]byte, error) {
	size := marshalOpts.Size(m)
	dst = binary.AppendUvarint(dst, uint64(size))
	out, err := marshalOpts.MarshalAppend(dst, m)
	if err != nil {
		return dst, fmt.Errorf("wire: encode %T: %w", m, err)
	}
	return out, nil
}

// WriteFrame writes m as one frame to w in a single Write call.
func WriteFrame(w io.Writer, m proto.Message) error {
	buf, err := AppendFrame(make([]byte, 0, 64), m)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// ReadFrame reads one frame from r and returns its message bytes, reusing
// buf's storage when it is large enough. It reads the length prefix one byte
// at a time, so it never consumes bytes past the frame. io.EOF before the
// first byte means a clean end of stream; an end anywhere else is
// ErrTruncated. A length above max (DefaultMaxFrameSize when max <= 0) is
// ErrFrameTooLarge and the body is not read.
func ReadFrame(r io.Reader, max int, buf []byte) ([]byte, error) {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	var (
		b      [1]byte
		length uint64
		shift  uint
	)
	for i := 0; ; i++ {
		if i == MaxVarintLen {
			return nil, fmt.Errorf("%w: length prefix longer than %d bytes", ErrMalformed, MaxVarintLen)
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if i == 0 && errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: in length prefix", ErrTruncated)
			}
			return nil, err
		}
		if i == MaxVarintLen-1 && b[0] > 1 {
			// The tenth byte holds bit 63 only: more would be lost in the
			// shift (an overflowing prefix read as a short length).
			return nil, fmt.Errorf("%w: length prefix overflows", ErrMalformed)
		}
		length |= uint64(b[0]&0x7f) << shift
		if b[0] < 0x80 {
			break
		}
		shift += 7
	}
	if length > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, length, max)
	}
	n := int(length)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: want %d bytes", ErrTruncated, n)
		}
		return nil, err
	}
	return buf, nil
}

// ReadMessage reads one frame from r and decodes it into m.
func ReadMessage(r io.Reader, max int, buf []byte, m proto.Message) ([]byte, error) {
	buf, err := ReadFrame(r, max, buf)
	if err != nil {
		return buf, err
	}
	return buf, Unmarshal(buf, m)
}

// Unmarshal decodes a frame body into m, mapping failures to ErrMalformed.
func Unmarshal(b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %T: %v", ErrMalformed, m, err)
	}
	return nil
}

// SplitFrame splits the first frame off b. It returns the message bytes and
// the rest, ErrTruncated when b ends inside the frame, ErrFrameTooLarge when
// the announced length exceeds max (DefaultMaxFrameSize when max <= 0).
func SplitFrame(b []byte, max int) (msg, rest []byte, err error) {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	length, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return nil, b, fmt.Errorf("%w: in length prefix", ErrTruncated)
	case n < 0:
		return nil, b, fmt.Errorf("%w: length prefix overflows", ErrMalformed)
	case length > uint64(max):
		return nil, b, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, length, max)
	case uint64(len(b)-n) < length:
		return nil, b, fmt.Errorf("%w: want %d bytes, have %d", ErrTruncated, length, len(b)-n)
	}
	end := n + int(length)
	return b[n:end], b[end:], nil
}

// Size is the encoded size of m in bytes, without a frame's length prefix.
func Size(m proto.Message) int { return proto.Size(m) }
