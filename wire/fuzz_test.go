package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzFrameDecoder feeds arbitrary bytes to the frame reader and to every
// message decoder the server and the client use. Nothing may panic; a decoded
// message must re-encode and decode to an equal message.
func FuzzFrameDecoder(f *testing.F) {
	for _, m := range sampleMessages() {
		frame, err := AppendFrame(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 4096
		r := bytes.NewReader(data)
		for {
			body, err := ReadFrame(r, max, nil)
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("unexpected error class: %v", err)
				}
				break
			}
			if len(body) > max {
				t.Fatalf("frame of %d bytes passed a %d limit", len(body), max)
			}
			for _, m := range []proto.Message{&SessionUp{}, &SessionDown{}, &Request{}, &Response{}} {
				if err := Unmarshal(body, m); err != nil {
					if !errors.Is(err, ErrMalformed) {
						t.Fatalf("Unmarshal error is not ErrMalformed: %v", err)
					}
					continue
				}
				again, err := proto.Marshal(m)
				if err != nil {
					t.Fatalf("re-encode %T: %v", m, err)
				}
				m2 := m.ProtoReflect().New().Interface()
				if err := proto.Unmarshal(again, m2); err != nil || !proto.Equal(m, m2) {
					t.Fatalf("%T does not survive a round trip: %v", m, err)
				}
			}
		}
		// SplitFrame must agree with ReadFrame on the first frame.
		_, _, errSplit := SplitFrame(data, max)
		_, errRead := ReadFrame(bytes.NewReader(data), max, nil)
		if (errSplit == nil) != (errRead == nil) && !(len(data) == 0) {
			t.Fatalf("SplitFrame err %v, ReadFrame err %v", errSplit, errRead)
		}
	})
}
