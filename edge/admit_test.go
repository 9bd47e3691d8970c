package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/ternhq/tern/wire"
)

// countMetrics records counter adds and histogram observations.
type countMetrics struct {
	mu       sync.Mutex
	added    map[string]float64
	observed map[string]int
}

func (m *countMetrics) Add(name, label string, d float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.added == nil {
		m.added = map[string]float64{}
	}
	m.added[name+"/"+label] += d
}

func (m *countMetrics) Observe(name string, _ float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.observed == nil {
		m.observed = map[string]int{}
	}
	m.observed[name]++
}

func (m *countMetrics) Set(string, float64) {}

func admitCtx(g *handshakeGate) (context.Context, context.CancelFunc, *admission) {
	a := &admission{gate: g}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), admitKey{}, a))
	return ctx, cancel, a
}

func TestHandshakeGate(t *testing.T) {
	m := &countMetrics{}
	g := &handshakeGate{slots: make(chan struct{}, 1), maxWait: time.Minute, m: m}
	ctx1, cancel1, a1 := admitCtx(g)
	defer cancel1()
	if err := g.enter(ctx1); err != nil {
		t.Fatal(err)
	}
	if err := g.enter(ctx1); err != nil || len(g.slots) != 1 {
		t.Fatalf("second enter of one handshake: err %v, %d slots taken; want nil, 1", err, len(g.slots))
	}
	if err := g.enter(context.Background()); err != nil {
		t.Fatalf("a context without admission must pass: %v", err)
	}

	// The second handshake waits until the first gives its slot back.
	ctx2, cancel2, a2 := admitCtx(g)
	defer cancel2()
	entered := make(chan error, 1)
	go func() { entered <- g.enter(ctx2) }()
	select {
	case err := <-entered:
		t.Fatalf("entered while the only slot was taken: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	a1.release()
	a1.release() // idempotent: must not free a second slot
	if err := <-entered; err != nil {
		t.Fatal(err)
	}
	if len(g.slots) != 1 {
		t.Fatalf("%d slots taken, want 1", len(g.slots))
	}

	// A waiter whose connection ends gives up.
	ctx3, cancel3, _ := admitCtx(g)
	go func() { entered <- g.enter(ctx3) }()
	cancel3()
	if err := <-entered; !errors.Is(err, context.Canceled) {
		t.Fatalf("enter after the connection ended: %v, want context.Canceled", err)
	}

	// A connection that ends while it holds a slot gives it back.
	cancel2()
	deadline := time.Now().Add(10 * time.Second)
	for len(g.slots) != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(g.slots) != 0 || !a2.held.Load() {
		t.Fatalf("slot not given back when its connection ended (%d taken)", len(g.slots))
	}

	// A waiter is refused after maxWait.
	g.maxWait = 10 * time.Millisecond
	ctx4, cancel4, _ := admitCtx(g)
	defer cancel4()
	if err := g.enter(ctx4); err != nil {
		t.Fatal(err)
	}
	ctx5, cancel5, _ := admitCtx(g)
	defer cancel5()
	if err := g.enter(ctx5); !errors.Is(err, errHandshakeQueue) {
		t.Fatalf("enter past maxWait: %v, want errHandshakeQueue", err)
	}
	if got := m.added[MetricHandshakesShed+"/queue_timeout"]; got != 1 {
		t.Fatalf("%s{queue_timeout} = %v, want 1", MetricHandshakesShed, got)
	}
	if got := m.observed[MetricHandshakeWait]; got != 3 {
		t.Fatalf("%d handshake waits observed, want 3 (the admitted ones)", got)
	}
}

// testListener listens on 127.0.0.1:0 with a development certificate and
// returns a client TLS config that trusts it.
func testListener(t *testing.T, o QUICOptions) (*Listener, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	cert, certFile, err := LoadOrCreateDevCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := CertPool(certFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", ServerTLSConfig(cert), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.CloseTransport() })
	return l, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13}
}

// TestListenerHandshakeSlots runs real handshakes through a listener that
// works on one at a time: each handshake needs the slot of the one before
// back, from Accept or from the connection's end.
func TestListenerHandshakeSlots(t *testing.T) {
	l, ctls := testListener(t, QUICOptions{Handshakes: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Handshakes finish one after another as the server accepts them.
	const n = 5
	dialed := make(chan error, n)
	for range n {
		go func() {
			c, err := quic.DialAddr(ctx, l.Addr().String(), ctls, nil)
			if err == nil {
				defer c.CloseWithError(0, "")
				<-c.HandshakeComplete()
			}
			dialed <- err
		}()
	}
	for range n {
		qc, err := l.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer qc.CloseWithError(0, "")
	}
	for range n {
		if err := <-dialed; err != nil {
			t.Fatal(err)
		}
	}
	if len(l.gate.slots) != 0 {
		t.Fatalf("%d slots still taken after every connection was accepted", len(l.gate.slots))
	}

	// A connection that ends before it is accepted gives its slot back:
	// the next handshake can run.
	first, err := quic.DialAddr(ctx, l.Addr().String(), ctls, nil)
	if err != nil {
		t.Fatal(err)
	}
	first.CloseWithError(0, "gone before accept")
	second, err := quic.DialAddr(ctx, l.Addr().String(), ctls, nil)
	if err != nil {
		t.Fatalf("handshake after a connection that ended unaccepted: %v", err)
	}
	second.CloseWithError(0, "")
}

// TestListenReceiveBuffer: Listen asks for QUICOptions.ReceiveBuffer; the
// kernel grants it (doubled) to a process with CAP_NET_ADMIN, and up to
// net.core.rmem_max to others.
func TestListenReceiveBuffer(t *testing.T) {
	const want = 32 << 20 // above quic-go's own 7 MiB
	l, _ := testListener(t, QUICOptions{ReceiveBuffer: want})
	uc, ok := l.socket.(*net.UDPConn)
	if !ok {
		t.Fatalf("socket is %T", l.socket)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		got, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || gerr != nil {
		t.Skipf("cannot read SO_RCVBUF: %v %v", err, gerr)
	}
	floor := want
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err == nil && os.Geteuid() != 0 {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && 2*max < floor {
			floor = 2 * max // SO_RCVBUF is capped, then doubled
		}
	}
	if got < floor {
		t.Fatalf("receive buffer %d bytes, want at least %d", got, floor)
	}
}

// TestListenCountsDrops: a datagram quic-go cannot parse is dropped by the
// transport before any connection, and the listener counts it by reason.
func TestListenCountsDrops(t *testing.T) {
	m := &countMetrics{}
	l, _ := testListener(t, QUICOptions{Metrics: m})
	c, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const want = 3
	for range want {
		// A short header (fixed bit set) too short to hold a connection ID.
		if _, err := c.Write([]byte{0x40, 0x01}); err != nil {
			t.Fatal(err)
		}
	}
	key := MetricPacketsDropped + "/header_parse_error"
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		got := m.added[key]
		m.mu.Unlock()
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %d", key, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
