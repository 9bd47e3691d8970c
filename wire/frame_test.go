package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/proto"
)

func sampleMessages() []proto.Message {
	return []proto.Message{
		&SessionUp{Msg: &SessionUp_Hello{Hello: &Hello{Token: "tok", CapabilityVersion: 1, Device: "phone", Platform: Platform_PLATFORM_IOS, SeqCli: 120, AppState: AppState_APP_STATE_BACKGROUND, Push: &PushRegistration{Platform: Platform_PLATFORM_IOS, Token: "abcd", Topic: "com.example", Environment: PushEnvironment_PUSH_ENVIRONMENT_SANDBOX}}}},
		&SessionUp{Msg: &SessionUp_AppState{AppState: &AppStateUpdate{AppState: AppState_APP_STATE_FOREGROUND}}},
		&SessionDown{Msg: &SessionDown_Welcome{Welcome: &Welcome{SessionId: "s", SeqSvr: 200, AckedSeq: 150, KeepaliveMs: 15000, MaxFrameSize: DefaultMaxFrameSize, AckMode: AckMode_ACK_MODE_ACCOUNT, User: "alice", Device: "phone", Floor: 1}}},
		&SessionDown{Msg: &SessionDown_Notify{Notify: &Notify{Seq: 1 << 40}}},
		&SessionDown{Msg: &SessionDown_GoAway{GoAway: &GoAway{Code: uint32(CodeShuttingDown), ReconnectAfterMs: 1500}}},
		&Request{Req: &Request_Send{Send: &SendRequest{ClientMsgId: "c1", To: &SendRequest_User{User: "bob"}, Body: []byte("hello")}}},
		&Request{Req: &Request_Sync{Sync: &SyncRequest{After: 100, Limit: 50}}},
		&Request{Req: &Request_Group{Group: &GroupRequest{Op: GroupRequest_OP_CREATE, Group: "g", Members: []string{"a", "b"}}}},
		&Response{Resp: &Response_Sync{Sync: &SyncResponse{Entries: []*Entry{{Seq: 101, Id: make([]byte, 16), From: "bob", Body: []byte("hi"), SentAtMs: 1700000000000}}, Head: 150, HasMore: true}}},
		&Response{Resp: &Response_Error{Error: &Error{Code: uint32(CodeResyncNeeded), Message: "below floor", Floor: 50, Head: 90}}},
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		var buf bytes.Buffer
		if err := WriteFrame(&buf, m); err != nil {
			t.Fatalf("WriteFrame(%T): %v", m, err)
		}
		got := m.ProtoReflect().New().Interface()
		// One byte at a time, to exercise the length prefix reader.
		if _, err := ReadMessage(iotest.OneByteReader(&buf), 0, nil, got); err != nil {
			t.Fatalf("ReadMessage(%T): %v", m, err)
		}
		if !proto.Equal(m, got) {
			t.Fatalf("round trip of %T: got %v, want %v", m, got, m)
		}
		if _, err := ReadFrame(&buf, 0, nil); err != io.EOF {
			t.Fatalf("after the only frame: got %v, want io.EOF", err)
		}
	}
}

// Every strict prefix of a valid frame must fail cleanly: a clean EOF for the
// empty prefix, ErrTruncated otherwise; SplitFrame likewise.
func TestFrameTruncation(t *testing.T) {
	for _, m := range sampleMessages() {
		frame, err := AppendFrame(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(frame); i++ {
			_, err := ReadFrame(bytes.NewReader(frame[:i]), 0, nil)
			switch {
			case i == 0 && err != io.EOF:
				t.Fatalf("%T: empty input: got %v, want io.EOF", m, err)
			case i > 0 && !errors.Is(err, ErrTruncated):
				t.Fatalf("%T: prefix %d/%d: got %v, want ErrTruncated", m, i, len(frame), err)
			}
			if _, _, err := SplitFrame(frame[:i], 0); !errors.Is(err, ErrTruncated) {
				t.Fatalf("%T: SplitFrame prefix %d/%d: got %v, want ErrTruncated", m, i, len(frame), err)
			}
		}
		msg, rest, err := SplitFrame(frame, 0)
		if err != nil || len(rest) != 0 {
			t.Fatalf("%T: SplitFrame whole: %v, rest %d", m, err, len(rest))
		}
		if got := m.ProtoReflect().New().Interface(); Unmarshal(msg, got) != nil || !proto.Equal(got, m) {
			t.Fatalf("%T: SplitFrame body does not decode to the message", m)
		}
	}
}

func TestFrameLimits(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		max   int
		want  error
	}{
		{"announced length above limit", []byte{0x80, 0x80, 0x10}, 1024, ErrFrameTooLarge},
		{"length exactly at limit is read", append([]byte{0x04}, 1, 2, 3, 4), 4, nil},
		{"one above limit", append([]byte{0x05}, 1, 2, 3, 4, 5), 4, ErrFrameTooLarge},
		{"overlong varint", bytes.Repeat([]byte{0xff}, 11), 0, ErrMalformed},
		{"huge varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 0, ErrFrameTooLarge},
		// Found by FuzzFrameDecoder: a tenth byte above 1 overflows 64 bits;
		// it was read as length 0 (an empty frame).
		{"overflowing varint", append(bytes.Repeat([]byte{0x80}, 9), 0x30), 0, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tt.input), tt.max, nil)
			if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
				t.Fatalf("ReadFrame: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestFrameTooLargeDoesNotReadBody(t *testing.T) {
	// A reader that fails the test if more than the prefix is consumed.
	prefix := []byte{0x80, 0x80, 0x40} // 1 MiB
	r := &countingReader{data: append(prefix, make([]byte, 1<<20)...)}
	if _, err := ReadFrame(r, 1024, nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
	if r.n != len(prefix) {
		t.Fatalf("read %d bytes, want only the %d-byte prefix", r.n, len(prefix))
	}
}

type countingReader struct {
	data []byte
	n    int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n == len(r.data) {
		return 0, io.EOF
	}
	k := copy(p, r.data[r.n:])
	r.n += k
	return k, nil
}

func TestMalformedBody(t *testing.T) {
	// A frame whose body is not a valid protobuf (field 1, wire type 2, with
	// a length running past the end).
	frame := []byte{0x02, 0x0a, 0x7f}
	var m Request
	if _, err := ReadMessage(bytes.NewReader(frame), 0, nil, &m); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
}

func TestCodes(t *testing.T) {
	tests := []struct {
		code                    Code
		retry, terminal, resync bool
	}{
		{CodeOK, false, false, false},
		{CodeUnavailable, true, false, false},
		{CodeRateLimited, true, false, false},
		{CodeInternal, true, false, false},
		{CodeBadRequest, false, true, false},
		{CodeSessionReplaced, false, true, false},
		{CodeResyncNeeded, false, false, true},
		{Code(1999), true, false, false},
		{Code(3999), false, false, true},
		{Code(4242), false, true, false}, // unknown ranges are terminal
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			if tt.code.Retryable() != tt.retry || tt.code.Terminal() != tt.terminal || tt.code.NeedsResync() != tt.resync {
				t.Fatalf("%v: retry=%v terminal=%v resync=%v", tt.code, tt.code.Retryable(), tt.code.Terminal(), tt.code.NeedsResync())
			}
		})
	}
	for c, name := range codeNames {
		if c.String() != name {
			t.Errorf("%d: String() = %q, want %q", c, c.String(), name)
		}
	}
	err := error(NewError(CodeBlocked, "nope"))
	if CodeOf(err) != CodeBlocked || CodeOf(nil) != CodeOK || CodeOf(io.EOF) != CodeInternal {
		t.Fatal("CodeOf does not map as documented")
	}
}

func TestEntrySizeInSyncResponse(t *testing.T) {
	e := &Entry{Seq: 1, Id: make([]byte, 16), From: "a", Body: make([]byte, 300)}
	with, _ := proto.Marshal(&SyncResponse{Entries: []*Entry{e}, Head: 7})
	without, _ := proto.Marshal(&SyncResponse{Head: 7})
	if got, want := e.SizeInSyncResponse(), len(with)-len(without); got != want {
		t.Fatalf("SizeInSyncResponse = %d, want %d", got, want)
	}
}
