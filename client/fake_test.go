package client

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ternhq/tern/wire"
)

// fakeServer speaks the Tern protocol (docs/protocol.md) over in-memory
// mailboxes, with knobs to misbehave. It keeps device-mode cursors, so that
// what a client gets depends on the seq it reports, and tests can tell a
// client that forgot its seq from one that did not.
//
// Tokens are "user/device"; tokens listed in tokenErrs are refused with
// their error.
type fakeServer struct {
	t       testing.TB
	udp     *net.UDPConn
	tr      *quic.Transport
	tlsConf *tls.Config
	roots   *x509.CertPool
	addr    string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	ln        *quic.EarlyListener
	limit     int  // the largest page, in entries
	account   bool // account ack mode instead of device mode
	boxes     map[string]*fakeBox
	dedup     map[string]*wire.SendResponse // device + "\x00" + client_msg_id
	groups    map[string][]string           // group → members, the owner first
	blocks    map[[2]string]bool            // {blocker, blocked}
	sessions  map[*fakeSession]struct{}
	tokenErrs map[string]*wire.Error
	hellos    []*wire.Hello
	sendIDs   []string // client_msg_id of every SendRequest, in arrival order
	syncs     []*wire.SyncRequest
	syncs0RTT int // SyncRequests that arrived on 0-RTT connections
	conns0RTT int // sessions whose connection used 0-RTT
	appStates []wire.AppState
	remotes   map[string]string // user → remote address of the last request
	dropSends int               // reset this many send streams after storing
	failSends []*wire.Error     // answer the next sends with these, storing nothing
	nextID    int
	// capability is announced in Welcomes (0: wire.CapabilityVersion);
	// below 2 the server refuses send_batch.
	capability uint32
	batches    []int // sizes of the send_batch requests served
	// sendGate, when set, holds every send request until it is closed;
	// held counts the requests waiting at it.
	sendGate chan struct{}
	held     atomic.Int32
	// failBodies answers sends with these bodies with these errors, one
	// per send, storing nothing.
	failBodies map[string][]*wire.Error
	// answersOnly: like a capability-4 server, no Notify to the sending
	// session for the entry its send created (quietFor is that session
	// while the send appends).
	answersOnly bool
	quietFor    *fakeSession
}

type fakeBox struct {
	entries []*wire.Entry // entries[i].Seq == i+1
	floor   uint64        // lowest retained seq
	cursors map[string]uint64
	acked   uint64 // the account's acknowledged seq (account mode)
}

func (b *fakeBox) head() uint64 { return uint64(len(b.entries)) }

type fakeSession struct {
	f            *fakeServer
	conn         *quic.Conn
	str          *quic.Stream
	id           string
	user, device string
	wmu          sync.Mutex
	notifySeq    atomic.Uint64
	wake         chan struct{}
}

func newFakeServer(t testing.TB) *fakeServer {
	t.Helper()
	cert, roots := selfSignedCert(t)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{wire.ALPN},
		MinVersion:   tls.VersionTLS13,
	}
	var key [32]byte
	rand.Read(key[:])
	tlsConf.SetSessionTicketKeys([][32]byte{key})
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeServer{
		t:         t,
		udp:       udp,
		tr:        &quic.Transport{Conn: udp},
		tlsConf:   tlsConf,
		roots:     roots,
		addr:      udp.LocalAddr().String(),
		ctx:       ctx,
		cancel:    cancel,
		limit:     100,
		boxes:     map[string]*fakeBox{},
		dedup:     map[string]*wire.SendResponse{},
		groups:    map[string][]string{},
		blocks:    map[[2]string]bool{},
		sessions:  map[*fakeSession]struct{}{},
		tokenErrs: map[string]*wire.Error{},
		remotes:   map[string]string{},
	}
	f.listen(true)
	t.Cleanup(f.close)
	return f
}

func selfSignedCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tern test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// listen (re)starts the listener on the same socket and ticket keys.
func (f *fakeServer) listen(allow0RTT bool) {
	ln, err := f.tr.ListenEarly(f.tlsConf, &quic.Config{
		Allow0RTT:      allow0RTT,
		MaxIdleTimeout: 10 * time.Second,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Go(func() {
		for {
			conn, err := ln.Accept(f.ctx)
			if err != nil {
				return
			}
			f.wg.Go(func() { f.serveConn(conn) })
		}
	})
}

// restart replaces the listener; established connections go on.
func (f *fakeServer) restart(allow0RTT bool) {
	f.mu.Lock()
	ln := f.ln
	f.mu.Unlock()
	ln.Close()
	f.listen(allow0RTT)
}

func (f *fakeServer) close() {
	f.cancel()
	f.mu.Lock()
	ln := f.ln
	var conns []*quic.Conn
	for s := range f.sessions {
		conns = append(conns, s.conn)
	}
	f.mu.Unlock()
	ln.Close()
	for _, c := range conns {
		c.CloseWithError(0, "server closed")
	}
	f.tr.Close()
	f.wg.Wait()
	f.udp.Close()
}

func (f *fakeServer) serveConn(conn *quic.Conn) {
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	str, err := conn.AcceptStream(ctx)
	cancel()
	if err != nil {
		conn.CloseWithError(quic.ApplicationErrorCode(wire.CodeProtocolViolation), "no session stream")
		return
	}
	var up wire.SessionUp
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := wire.ReadMessage(str, 0, nil, &up); err != nil || up.GetHello() == nil {
		f.fail(conn, str, wire.NewError(wire.CodeProtocolViolation, "no hello"))
		return
	}
	str.SetReadDeadline(time.Time{})
	h := up.GetHello()
	f.mu.Lock()
	f.hellos = append(f.hellos, h)
	herr := f.tokenErrs[h.GetToken()]
	f.mu.Unlock()
	user, device, ok := strings.Cut(h.GetToken(), "/")
	if u, d, jwt := tokenIdentity(h.GetToken()); jwt {
		user, device, ok = u, d, true // the fake trusts JWT-shaped tokens unsigned
	}
	if herr == nil && (!ok || user == "" || device == "" || (h.GetDevice() != "" && h.GetDevice() != device)) {
		herr = wire.NewError(wire.CodeUnauthenticated, "bad token")
	}
	if herr != nil {
		f.fail(conn, str, herr)
		return
	}

	f.mu.Lock()
	f.nextID++
	s := &fakeSession{f: f, conn: conn, str: str, id: fmt.Sprintf("s%d", f.nextID), user: user, device: device, wake: make(chan struct{}, 1)}
	var replaced []*fakeSession
	for o := range f.sessions {
		if o.user == user && o.device == device {
			replaced = append(replaced, o)
			delete(f.sessions, o)
		}
	}
	f.sessions[s] = struct{}{}
	if conn.ConnectionState().Used0RTT {
		f.conns0RTT++
	}
	f.appStates = append(f.appStates, h.GetAppState())
	b := f.box(user)
	if h.GetSeqCli() > b.cursors[device] && h.GetSeqCli() <= b.head() {
		b.cursors[device] = h.GetSeqCli()
	}
	w := &wire.Welcome{
		SessionId:         s.id,
		SeqSvr:            b.head(),
		AckedSeq:          b.cursors[device],
		ServerTimeMs:      time.Now().UnixMilli(),
		CapabilityVersion: cmp.Or(f.capability, wire.CapabilityVersion),
		MaxFrameSize:      wire.DefaultMaxFrameSize,
		AckMode:           wire.AckMode_ACK_MODE_DEVICE,
		User:              user,
		Device:            device,
		Floor:             b.floor,
	}
	f.mu.Unlock()
	for _, o := range replaced {
		o.write(&wire.SessionDown{Msg: &wire.SessionDown_GoAway{GoAway: &wire.GoAway{Code: uint32(wire.CodeSessionReplaced), Message: "replaced"}}})
	}
	if !s.write(&wire.SessionDown{Msg: &wire.SessionDown_Welcome{Welcome: w}}) {
		return
	}
	defer func() {
		f.mu.Lock()
		delete(f.sessions, s)
		f.mu.Unlock()
	}()
	f.wg.Go(s.notifier)
	f.wg.Go(s.readUps)
	for {
		rs, err := conn.AcceptStream(f.ctx)
		if err != nil {
			return
		}
		f.wg.Go(func() { s.serveRequest(rs) })
	}
}

// fail writes e on the session stream and closes the connection with its
// code. A Hello that came in 0-RTT data is answered before the handshake
// completes, and QUIC sends an application close made then as a bare
// APPLICATION_ERROR without the code (RFC 9000 §10.2.3), so fail waits for
// the handshake, and then for the client to close after reading the frame.
func (f *fakeServer) fail(conn *quic.Conn, str *quic.Stream, e *wire.Error) {
	select {
	case <-conn.HandshakeComplete():
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
	}
	str.SetWriteDeadline(time.Now().Add(time.Second))
	wire.WriteFrame(str, &wire.SessionDown{Msg: &wire.SessionDown_Error{Error: e}})
	str.Close()
	select {
	case <-conn.Context().Done():
	case <-time.After(time.Second):
	}
	conn.CloseWithError(quic.ApplicationErrorCode(e.GetCode()), e.GetMessage())
}

// box returns user's mailbox; f.mu is held.
func (f *fakeServer) box(user string) *fakeBox {
	b := f.boxes[user]
	if b == nil {
		b = &fakeBox{floor: 1, cursors: map[string]uint64{}}
		f.boxes[user] = b
	}
	return b
}

func (s *fakeSession) write(m *wire.SessionDown) bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.str.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return wire.WriteFrame(s.str, m) == nil
}

func (s *fakeSession) notify(seq uint64) {
	for {
		old := s.notifySeq.Load()
		if seq <= old || s.notifySeq.CompareAndSwap(old, seq) {
			break
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// notifier writes coalesced Notify frames until the connection ends.
func (s *fakeSession) notifier() {
	var sent uint64
	for {
		select {
		case <-s.conn.Context().Done():
			return
		case <-s.wake:
		}
		if seq := s.notifySeq.Load(); seq > sent {
			sent = seq
			if !s.write(&wire.SessionDown{Msg: &wire.SessionDown_Notify{Notify: &wire.Notify{Seq: seq}}}) {
				return
			}
		}
	}
}

// readUps reads SessionUp frames after the Hello.
func (s *fakeSession) readUps() {
	for {
		var up wire.SessionUp
		if _, err := wire.ReadMessage(s.str, 0, nil, &up); err != nil {
			return
		}
		if as := up.GetAppState(); as != nil {
			s.f.mu.Lock()
			s.f.appStates = append(s.f.appStates, as.GetAppState())
			s.f.mu.Unlock()
		}
	}
}

func (s *fakeSession) serveRequest(str *quic.Stream) {
	var req wire.Request
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := wire.ReadMessage(str, 0, nil, &req); err != nil {
		str.CancelRead(quic.StreamErrorCode(wire.CodeMalformed))
		str.CancelWrite(quic.StreamErrorCode(wire.CodeMalformed))
		return
	}
	s.f.mu.Lock()
	s.f.remotes[s.user] = s.conn.RemoteAddr().String()
	gate := s.f.sendGate
	s.f.mu.Unlock()
	if gate != nil && (req.GetSend() != nil || req.GetSendBatch() != nil) {
		s.f.held.Add(1)
		<-gate
	}
	resp, drop := s.f.handle(s, &req)
	if drop {
		str.CancelWrite(0)
		str.CancelRead(0)
		return
	}
	str.SetWriteDeadline(time.Now().Add(5 * time.Second))
	wire.WriteFrame(str, resp)
	str.Close()
}

func errResp(e *wire.Error) *wire.Response {
	return &wire.Response{Resp: &wire.Response_Error{Error: e}}
}

// handle runs one request; drop says to reset the stream instead of
// answering.
func (f *fakeServer) handle(s *fakeSession, req *wire.Request) (resp *wire.Response, drop bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r := req.GetReq().(type) {
	case *wire.Request_Send:
		return f.send(s, r.Send)
	case *wire.Request_SendBatch:
		if f.capability == 1 {
			break
		}
		f.batches = append(f.batches, len(r.SendBatch.GetSends()))
		out := &wire.SendBatchResponse{}
		for _, sr := range r.SendBatch.GetSends() {
			resp, d := f.send(s, sr)
			drop = drop || d
			if e := resp.GetError(); e != nil {
				out.Results = append(out.Results, &wire.SendResult{Result: &wire.SendResult_Error{Error: e}})
			} else {
				out.Results = append(out.Results, &wire.SendResult{Result: &wire.SendResult_Ok{Ok: resp.GetSend()}})
			}
		}
		return &wire.Response{Resp: &wire.Response_SendBatch{SendBatch: out}}, drop
	case *wire.Request_Sync:
		return f.sync(s, r.Sync), false
	case *wire.Request_Ack:
		b := f.box(s.user)
		seq := min(r.Ack.GetSeq(), b.head())
		b.cursors[s.device] = max(b.cursors[s.device], seq)
		b.acked = max(b.acked, seq)
		if f.account {
			return &wire.Response{Resp: &wire.Response_Ack{Ack: &wire.AckResponse{Acked: b.acked}}}, false
		}
		return &wire.Response{Resp: &wire.Response_Ack{Ack: &wire.AckResponse{Acked: b.cursors[s.device]}}}, false
	case *wire.Request_Group:
		return f.group(s, r.Group), false
	case *wire.Request_Block:
		key := [2]string{s.user, r.Block.GetUser()}
		if r.Block.GetUnblock() {
			delete(f.blocks, key)
		} else {
			f.blocks[key] = true
		}
		return &wire.Response{Resp: &wire.Response_Block{Block: &wire.BlockResponse{}}}, false
	}
	return errResp(wire.NewError(wire.CodeUnsupported, "unknown request")), false
}

// send stores a message; f.mu is held.
func (f *fakeServer) send(s *fakeSession, r *wire.SendRequest) (*wire.Response, bool) {
	f.sendIDs = append(f.sendIDs, r.GetClientMsgId())
	if len(f.failSends) > 0 {
		e := f.failSends[0]
		f.failSends = f.failSends[1:]
		return errResp(e), false
	}
	if errs := f.failBodies[string(r.GetBody())]; len(errs) > 0 {
		f.failBodies[string(r.GetBody())] = errs[1:]
		return errResp(errs[0]), false
	}
	key := s.device + "\x00" + r.GetClientMsgId()
	if prev := f.dedup[key]; prev != nil {
		dup := &wire.SendResponse{Id: prev.GetId(), Seq: prev.GetSeq(), SentAtMs: prev.GetSentAtMs(), Duplicate: true}
		return &wire.Response{Resp: &wire.Response_Send{Send: dup}}, f.drop()
	}
	var to []string
	switch {
	case r.GetUser() != "":
		if f.blocks[[2]string{r.GetUser(), s.user}] {
			return errResp(wire.NewError(wire.CodeBlocked, "blocked")), false
		}
		to = []string{r.GetUser()}
	case r.GetGroup() != "":
		members, ok := f.groups[r.GetGroup()]
		if !ok {
			return errResp(wire.NewError(wire.CodeNotFound, "no such group")), false
		}
		to = members
	default:
		return errResp(wire.NewError(wire.CodeBadRequest, "no recipient")), false
	}
	id := make([]byte, 16)
	rand.Read(id)
	now := time.Now().UnixMilli()
	e := &wire.Entry{Id: id, From: s.user, FromDevice: s.device, To: r.GetUser(), Group: r.GetGroup(), Body: r.GetBody(), SentAtMs: now}
	if f.answersOnly {
		f.quietFor = s
	}
	seq := f.appendLocked(s.user, e, r.GetClientMsgId())
	f.quietFor = nil
	for _, u := range to {
		if u != s.user {
			f.appendLocked(u, e, "")
		}
	}
	res := &wire.SendResponse{Id: id, Seq: seq, SentAtMs: now}
	f.dedup[key] = res
	return &wire.Response{Resp: &wire.Response_Send{Send: res}}, f.drop()
}

// drop reports whether to reset this send's stream instead of answering;
// f.mu is held.
func (f *fakeServer) drop() bool {
	if f.dropSends > 0 {
		f.dropSends--
		return true
	}
	return false
}

// appendLocked appends a copy of e to user's mailbox and notifies the
// user's sessions; f.mu is held.
func (f *fakeServer) appendLocked(user string, e *wire.Entry, clientMsgID string) uint64 {
	b := f.box(user)
	c := &wire.Entry{
		Seq: b.head() + 1, Id: e.GetId(), From: e.GetFrom(), FromDevice: e.GetFromDevice(), To: e.GetTo(),
		Group: e.GetGroup(), Body: e.GetBody(), SentAtMs: e.GetSentAtMs(), ClientMsgId: clientMsgID,
	}
	b.entries = append(b.entries, c)
	for s := range f.sessions {
		if s.user == user && s != f.quietFor {
			s.notify(c.Seq)
		}
	}
	return c.Seq
}

func (f *fakeServer) sync(s *fakeSession, r *wire.SyncRequest) *wire.Response {
	f.syncs = append(f.syncs, r)
	if s.conn.ConnectionState().Used0RTT {
		f.syncs0RTT++
	}
	if r.GetUser() != "" && r.GetUser() != s.user {
		return errResp(wire.NewError(wire.CodeForbidden, "not your mailbox"))
	}
	b := f.box(s.user)
	after, head := r.GetAfter(), b.head()
	if after > head || after+1 < b.floor {
		return errResp(&wire.Error{Code: uint32(wire.CodeResyncNeeded), Message: "resync", Floor: b.floor, Head: head})
	}
	b.cursors[s.device] = max(b.cursors[s.device], after)
	from := after
	if f.account {
		b.acked = max(b.acked, after)
		from = b.acked
	}
	limit := f.limit
	if l := int(r.GetLimit()); l > 0 && l < limit {
		limit = l
	}
	end := min(from+uint64(limit), head)
	page := &wire.SyncResponse{Head: head, Floor: b.floor, From: from, HasMore: end < head}
	for seq := from + 1; seq <= end; seq++ {
		page.Entries = append(page.Entries, b.entries[seq-1])
	}
	return &wire.Response{Resp: &wire.Response_Sync{Sync: page}}
}

func (f *fakeServer) group(s *fakeSession, r *wire.GroupRequest) *wire.Response {
	members, exists := f.groups[r.GetGroup()]
	switch r.GetOp() {
	case wire.GroupRequest_OP_CREATE:
		if exists {
			return errResp(wire.NewError(wire.CodeAlreadyExists, "group exists"))
		}
		members = append([]string{s.user}, r.GetMembers()...)
	case wire.GroupRequest_OP_ADD:
		if !exists {
			return errResp(wire.NewError(wire.CodeNotFound, "no such group"))
		}
		members = append(members, r.GetMembers()...)
	case wire.GroupRequest_OP_REMOVE:
		if !exists {
			return errResp(wire.NewError(wire.CodeNotFound, "no such group"))
		}
		var kept []string
		for _, m := range members {
			drop := false
			for _, x := range r.GetMembers() {
				drop = drop || m == x
			}
			if !drop {
				kept = append(kept, m)
			}
		}
		members = kept
	case wire.GroupRequest_OP_MEMBERS:
		if !exists {
			return errResp(wire.NewError(wire.CodeNotFound, "no such group"))
		}
	default:
		return errResp(wire.NewError(wire.CodeBadRequest, "bad op"))
	}
	f.groups[r.GetGroup()] = members
	return &wire.Response{Resp: &wire.Response_Group{Group: &wire.GroupResponse{Members: members}}}
}

// Test controls.

// appendN appends n messages from "server/admin" to user's mailbox.
func (f *fakeServer) appendN(user string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		id := make([]byte, 16)
		rand.Read(id)
		var body [8]byte
		binary.BigEndian.PutUint64(body[:], f.box(user).head()+1)
		f.appendLocked(user, &wire.Entry{Id: id, From: "server", FromDevice: "admin", To: user, Body: body[:], SentAtMs: time.Now().UnixMilli()}, "")
	}
}

// trim drops user's entries below floor.
func (f *fakeServer) trim(user string, floor uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.box(user)
	b.floor = floor
	for i := range b.entries[:min(int(floor-1), len(b.entries))] {
		b.entries[i] = nil
	}
}

func (f *fakeServer) sessionsOf(user string) []*fakeSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*fakeSession
	for s := range f.sessions {
		if s.user == user {
			out = append(out, s)
		}
	}
	return out
}

// kick closes user's connections with code.
func (f *fakeServer) kick(user string, code wire.Code) {
	for _, s := range f.sessionsOf(user) {
		s.conn.CloseWithError(quic.ApplicationErrorCode(code), "kicked")
	}
}

// goAway sends user's sessions a GoAway.
func (f *fakeServer) goAway(user string, code wire.Code, after time.Duration) {
	for _, s := range f.sessionsOf(user) {
		s.write(&wire.SessionDown{Msg: &wire.SessionDown_GoAway{GoAway: &wire.GoAway{Code: uint32(code), Message: "go away", ReconnectAfterMs: wire.Millis(after)}}})
	}
}

func (f *fakeServer) do(fn func(f *fakeServer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeServer) cursor(user, device string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.box(user).cursors[device]
}

func (f *fakeServer) head(user string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.box(user).head()
}

// errCode is the Tern code in err's chain, CodeOK when there is none.
func errCode(err error) wire.Code {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.ErrorCode()
	}
	return wire.CodeOK
}
