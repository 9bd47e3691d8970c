package bench

import (
	"encoding/binary"
	"errors"
	"time"
)

// Stamp is what every benchmark message carries in its body, so that the
// deliveries of any Target can be checked the same way: which run sent it,
// from which sender to which receiver, the per-pair counter (1, 2, 3... in
// the order the pair's sends were issued) and when it was sent (the
// scheduled time in open-loop scenarios).
type Stamp struct {
	Run      uint64
	Sender   int
	Receiver int
	N        uint64
	At       time.Time
}

// Body layout: "TB" magic, version 1, run (8 bytes big-endian), sender,
// receiver and counter as uvarints, the send time in Unix nanoseconds (8
// bytes), then zero padding up to the requested size.
const (
	bodyMagic0, bodyMagic1 = 'T', 'B'
	bodyVersion            = 1
	// MinBodySize is the largest encoded stamp; smaller sizes are raised to it.
	MinBodySize = 3 + 8 + 3*binary.MaxVarintLen64 + 8
)

// ErrNotBench is returned by DecodeBody for a body that does not hold a stamp.
var ErrNotBench = errors.New("bench: not a benchmark message")

// AppendBody appends the encoding of s, padded to size bytes, to b.
func AppendBody(b []byte, s Stamp, size int) []byte {
	start := len(b)
	b = append(b, bodyMagic0, bodyMagic1, bodyVersion)
	b = binary.BigEndian.AppendUint64(b, s.Run)
	b = binary.AppendUvarint(b, uint64(s.Sender))
	b = binary.AppendUvarint(b, uint64(s.Receiver))
	b = binary.AppendUvarint(b, s.N)
	b = binary.BigEndian.AppendUint64(b, uint64(s.At.UnixNano()))
	for len(b)-start < size {
		b = append(b, 0)
	}
	return b
}

// DecodeBody reads the stamp at the start of body.
func DecodeBody(body []byte) (Stamp, error) {
	var s Stamp
	if len(body) < 3+8 || body[0] != bodyMagic0 || body[1] != bodyMagic1 || body[2] != bodyVersion {
		return s, ErrNotBench
	}
	s.Run = binary.BigEndian.Uint64(body[3:])
	rest := body[11:]
	var v [3]uint64
	for i := range v {
		x, n := binary.Uvarint(rest)
		if n <= 0 {
			return s, ErrNotBench
		}
		v[i], rest = x, rest[n:]
	}
	if len(rest) < 8 || v[0] > 1<<31 || v[1] > 1<<31 {
		return s, ErrNotBench
	}
	s.Sender, s.Receiver, s.N = int(v[0]), int(v[1]), v[2]
	s.At = time.Unix(0, int64(binary.BigEndian.Uint64(rest)))
	return s, nil
}
