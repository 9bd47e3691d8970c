package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/rawclient"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/wire"
)

// bystanders are two well-behaved SDK clients that must keep exchanging
// messages whatever the hostile clients do.
type bystanders struct {
	t    *testing.T
	s    *testserver.Server
	in   *inbox
	sent int
	send func() error
}

func newBystanders(t *testing.T, s *testserver.Server) *bystanders {
	b := &bystanders{t: t, s: s, in: newInbox(0)}
	carol := sdk(t, s, "carol", "phone", 0, nil)
	sdk(t, s, "dave", "phone", 0, func(c *client.Config) { c.OnMessage = b.in.add })
	b.send = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := carol.Send(ctx, "dave", []byte("still here"))
		return err
	}
	return b
}

func (b *bystanders) check() {
	b.t.Helper()
	if err := b.send(); err != nil {
		b.t.Fatalf("bystander send: %v", err)
	}
	b.sent++
	b.in.wait(b.t, b.sent, 10*time.Second)
}

func wantCode(t *testing.T, resp *wire.Response, err error, code wire.Code) {
	t.Helper()
	if err != nil {
		t.Fatalf("want a response with %v, got error %v", code, err)
	}
	if e := resp.GetError(); e == nil || e.ErrorCode() != code {
		t.Fatalf("got %v, want %v", resp, code)
	}
}

// connCloseCode waits for the connection to close and returns its
// application error code.
func connCloseCode(t *testing.T, c *rawclient.Conn) wire.Code {
	t.Helper()
	select {
	case <-c.QC.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection still open")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(c.QC.Context()); !errors.As(err, &ae) {
		t.Fatalf("closed with %v, want an application error", err)
	}
	return wire.Code(ae.ErrorCode)
}

func frameHeader(n uint64) []byte { return binary.AppendUvarint(nil, n) }

// TestHostileRequests: bad requests get a clear code on their own stream;
// the connection and everyone else go on. Acceptance #7.
func TestHostileRequests(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Edge: edge.Config{MaxFrameSize: 4096}})
	by := newBystanders(t, s)
	by.check()
	bob := raw(t, s, "bob", "phone", 0)
	ctx := ctxT(t, 60*time.Second)

	valid, _ := wire.AppendFrame(nil, &wire.Request{Req: &wire.Request_Sync{Sync: &wire.SyncRequest{}}})
	unknown := []byte{0x03, 0xfa, 0x01, 0x00} // field 31, an empty message: no known oneof
	tests := []struct {
		name string
		raw  []byte
		want wire.Code
	}{
		{"oversized frame", append(frameHeader(1<<20), make([]byte, 8192)...), wire.CodeFrameTooLarge},
		{"oversized announced, nothing sent", frameHeader(1 << 40), wire.CodeFrameTooLarge},
		{"truncated frame", valid[:len(valid)-1], wire.CodeMalformed},
		{"truncated length prefix", []byte{0x80}, wire.CodeMalformed},
		{"garbage body", []byte{0x05, 0x0a, 0xff, 0xff, 0xff, 0xff}, wire.CodeMalformed},
		{"overlong varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, wire.CodeMalformed},
		{"empty stream", nil, wire.CodeMalformed},
		{"unknown request kind", unknown, wire.CodeUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := bob.DoRaw(ctx, tt.raw)
			wantCode(t, resp, err, tt.want)
			// The same connection still serves requests.
			if _, err := bob.Sync(ctx, 0, 0); err != nil {
				t.Fatalf("connection unusable after %s: %v", tt.name, err)
			}
		})
	}

	t.Run("another user's mailbox", func(t *testing.T) {
		resp, err := bob.Do(ctx, &wire.Request{Req: &wire.Request_Sync{Sync: &wire.SyncRequest{User: "carol"}}})
		wantCode(t, resp, err, wire.CodeForbidden)
	})
	t.Run("bad fields", func(t *testing.T) {
		resp, err := bob.Send(ctx, "", "alice", nil) // no client_msg_id
		wantCode(t, resp, err, wire.CodeBadRequest)
		resp, err = bob.Do(ctx, &wire.Request{Req: &wire.Request_Send{Send: &wire.SendRequest{ClientMsgId: "x"}}})
		wantCode(t, resp, err, wire.CodeBadRequest)
		resp, err = bob.Send(ctx, "big", "alice", make([]byte, 3000))
		if err != nil || resp.GetSend() == nil {
			t.Fatalf("a 3000-byte body within a 4096-byte frame: %v %v", resp, err)
		}
	})
	t.Run("stalled request", func(t *testing.T) {
		st, err := bob.QC.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{0x10, 0x01}) // 16 bytes announced, 1 sent, no FIN
		st.CancelWrite(0)            // then the client resets its side
		if _, err := bob.Sync(ctx, 0, 0); err != nil {
			t.Fatalf("connection unusable after a reset request: %v", err)
		}
	})
	by.check()
}

// TestHostileSessions: bad session streams and tokens close only their own
// connection, with a clear code. Acceptance #7.
func TestHostileSessions(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Edge: edge.Config{MaxFrameSize: 4096, HelloTimeout: 500 * time.Millisecond}})
	by := newBystanders(t, s)
	by.check()
	ctx := ctxT(t, 60*time.Second)

	past := edge.TokenSigner{Key: s.Signer.Key, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }}
	expired, err := past.Sign("bob", "phone", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, err := edge.TokenSigner{Key: otherKey}.Sign("bob", "phone", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The right claims with alg "none" and no signature.
	claims := strings.Split(s.Token("bob", "phone"), ".")[1]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + claims + "."

	tokens := []struct {
		name  string
		token string
		want  wire.Code
	}{
		{"expired token", expired, wire.CodeTokenExpired},
		{"forged token", forged, wire.CodeUnauthenticated},
		{"alg none", none, wire.CodeUnauthenticated},
		{"garbage token", "not-a-token", wire.CodeUnauthenticated},
		{"empty token", "", wire.CodeUnauthenticated},
	}
	for _, tt := range tokens {
		t.Run(tt.name, func(t *testing.T) {
			c, err := rawclient.Dial(ctx, s.Addr, s.ClientTLS())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A request pipelined behind the Hello must never be served.
			stalled := make(chan error, 1)
			go func() {
				_, err := c.Sync(ctx, 0, 0)
				stalled <- err
			}()
			wire.WriteFrame(c.Session, &wire.SessionUp{Msg: &wire.SessionUp_Hello{Hello: &wire.Hello{Token: tt.token, CapabilityVersion: 1}}})
			m, err := c.ReadSession()
			if err == nil {
				if e := m.GetError(); e == nil || e.ErrorCode() != tt.want {
					t.Fatalf("session frame %v, want Error %v", m, tt.want)
				}
			}
			if code := connCloseCode(t, c); code != tt.want {
				t.Fatalf("connection closed with %v, want %v", code, tt.want)
			}
			if err := <-stalled; err == nil {
				t.Fatal("a request behind a refused Hello was answered")
			}
		})
	}

	sessions := []struct {
		name  string
		write func(c *rawclient.Conn)
		want  wire.Code
	}{
		{"garbage instead of hello", func(c *rawclient.Conn) { c.Session.Write([]byte{0x04, 0xff, 0xff, 0xff, 0xff}) }, wire.CodeMalformed},
		{"oversized hello", func(c *rawclient.Conn) { c.Session.Write(append(frameHeader(1<<20), make([]byte, 100)...)) }, wire.CodeFrameTooLarge},
		{"not a hello first", func(c *rawclient.Conn) {
			wire.WriteFrame(c.Session, &wire.SessionUp{Msg: &wire.SessionUp_AppState{AppState: &wire.AppStateUpdate{}}})
		}, wire.CodeProtocolViolation},
		{"truncated hello", func(c *rawclient.Conn) { c.Session.Write([]byte{0x20, 0x0a}); c.Session.Close() }, wire.CodeMalformed},
		// Opening no stream at all: nothing reaches the server.
		{"no session stream", func(c *rawclient.Conn) {}, wire.CodeTimeout},
		{"half a hello, then silence", func(c *rawclient.Conn) { c.Session.Write([]byte{0x20, 0x0a}) }, wire.CodeTimeout},
	}
	for _, tt := range sessions {
		t.Run(tt.name, func(t *testing.T) {
			c, err := rawclient.Dial(ctx, s.Addr, s.ClientTLS())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tt.write(c)
			if code := connCloseCode(t, c); code != tt.want {
				t.Fatalf("connection closed with %v, want %v", code, tt.want)
			}
		})
	}

	t.Run("second hello", func(t *testing.T) {
		c := raw(t, s, "bob", "phone", 0)
		wire.WriteFrame(c.Session, &wire.SessionUp{Msg: &wire.SessionUp_Hello{Hello: &wire.Hello{Token: s.Token("bob", "phone")}}})
		if code := connCloseCode(t, c); code != wire.CodeProtocolViolation {
			t.Fatalf("closed with %v", code)
		}
	})
	t.Run("device mismatch", func(t *testing.T) {
		_, err := rawclient.Connect(ctx, s.Addr, s.ClientTLS(), &wire.Hello{Token: s.Token("bob", "phone"), Device: "tablet"})
		var we *wire.Error
		if !errors.As(err, &we) || we.ErrorCode() != wire.CodeForbidden {
			t.Fatalf("got %v, want FORBIDDEN", err)
		}
	})
	t.Run("oversized frame after hello", func(t *testing.T) {
		c := raw(t, s, "bob", "phone", 0)
		c.Session.Write(append(frameHeader(1<<20), make([]byte, 100)...))
		if code := connCloseCode(t, c); code != wire.CodeFrameTooLarge {
			t.Fatalf("closed with %v", code)
		}
	})
	by.check()
	if n := s.Core.Sessions(); n != 2 {
		t.Fatalf("%d sessions attached after the hostile ones left, want the 2 bystanders", n)
	}
}

// TestSendBatch: a send_batch through the real edge and core answers each
// send on its own (stored, duplicate, refused), stores each accepted send
// once, and refuses a batch that is empty or too large as a whole.
func TestSendBatch(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := ctxT(t, 30*time.Second)
	bob := raw(t, s, "bob", "phone", 0)
	carol := raw(t, s, "carol", "phone", 0)
	if resp, err := carol.Do(ctx, &wire.Request{Req: &wire.Request_Block{Block: &wire.BlockRequest{User: "bob"}}}); err != nil || resp.GetBlock() == nil {
		t.Fatalf("block: %v %v", resp, err)
	}
	send := func(id, to string) *wire.SendRequest {
		return &wire.SendRequest{ClientMsgId: id, To: &wire.SendRequest_User{User: to}, Body: []byte(id)}
	}
	batch := func(sends ...*wire.SendRequest) *wire.Request {
		return &wire.Request{Req: &wire.Request_SendBatch{SendBatch: &wire.SendBatchRequest{Sends: sends}}}
	}
	resp, err := bob.Do(ctx, batch(send("a", "alice"), send("b", "alice"), send("c", "carol"), send("", "alice"), send("a", "alice")))
	if err != nil {
		t.Fatal(err)
	}
	rs := resp.GetSendBatch().GetResults()
	if len(rs) != 5 {
		t.Fatalf("results %v", resp)
	}
	if rs[2].GetError().ErrorCode() != wire.CodeBlocked || rs[3].GetError().ErrorCode() != wire.CodeBadRequest {
		t.Fatalf("refused sends: %v, %v", rs[2], rs[3])
	}
	a1, a2, b := rs[0].GetOk(), rs[4].GetOk(), rs[1].GetOk()
	if a1 == nil || a2 == nil || b == nil || a1.GetSeq() == b.GetSeq() {
		t.Fatalf("stored sends: %v", rs)
	}
	// The same client_msg_id twice in one batch is one entry: whichever
	// ran second is the duplicate.
	if a1.GetSeq() != a2.GetSeq() || a1.GetDuplicate() == a2.GetDuplicate() || string(a1.GetId()) != string(a2.GetId()) {
		t.Fatalf("one client_msg_id twice: %v / %v", a1, a2)
	}
	alice := raw(t, s, "alice", "phone", 0)
	sync, err := alice.Sync(ctx, 0, 0)
	if err != nil || len(sync.GetSync().GetEntries()) != 2 {
		t.Fatalf("alice's mailbox: %v %v", sync, err)
	}

	resp, err = bob.Do(ctx, batch())
	wantCode(t, resp, err, wire.CodeBadRequest)
	many := make([]*wire.SendRequest, wire.MaxSendBatch+1)
	for i := range many {
		many[i] = send(fmt.Sprint("m", i), "alice")
	}
	resp, err = bob.Do(ctx, batch(many...))
	wantCode(t, resp, err, wire.CodeBadRequest)
	resp, err = bob.Do(ctx, batch(many[:wire.MaxSendBatch]...))
	if err != nil || len(resp.GetSendBatch().GetResults()) != wire.MaxSendBatch {
		t.Fatalf("a full batch: %v %v", resp, err)
	}
}
