package netsim_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ternhq/tern/internal/netsim"
)

const quicALPN = "netsim-test"

// tlsConfigs returns a server config with a fresh self-signed certificate
// for 127.0.0.1 and a client config that trusts it.
func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "netsim test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{quicALPN},
	}
	client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{quicALPN}}
	return server, client
}

func localUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) // quic-go leaves sockets it was given open
	return conn
}

// quicEchoServer accepts connections and echoes every bidirectional stream.
// It hands each accepted connection to conns, and closes them all at cleanup
// (closing the listener leaves them open).
func quicEchoServer(t *testing.T, ln *quic.Listener) <-chan *quic.Conn {
	conns := make(chan *quic.Conn, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted []*quic.Conn
	wg.Go(func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, conn)
			mu.Unlock()
			conns <- conn
			wg.Go(func() {
				for {
					str, err := conn.AcceptStream(context.Background())
					if err != nil {
						return
					}
					wg.Go(func() {
						defer str.Close()
						io.Copy(str, str)
					})
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, conn := range accepted {
			conn.CloseWithError(0, "")
		}
		mu.Unlock()
		wg.Wait()
	})
	return conns
}

// exchange sends n messages, each on its own stream, at most parallel at
// a time, and checks every echo.
func exchange(ctx context.Context, conn *quic.Conn, phase string, n, parallel int) error {
	sem := make(chan struct{}, parallel)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			msg := fmt.Appendf(nil, "%s message %d", phase, i)
			str, err := conn.OpenStreamSync(ctx)
			if err != nil {
				errs <- fmt.Errorf("%s: open stream %d: %w", phase, i, err)
				return
			}
			if deadline, ok := ctx.Deadline(); ok {
				str.SetDeadline(deadline)
			}
			if _, err := str.Write(msg); err != nil {
				errs <- fmt.Errorf("%s: write %d: %w", phase, i, err)
				return
			}
			str.Close()
			got, err := io.ReadAll(str)
			if err != nil {
				errs <- fmt.Errorf("%s: read %d: %w", phase, i, err)
				return
			}
			if !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("%s: echo %d = %q, want %q", phase, i, got, msg)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when every exchange succeeded
}

// TestQUIC runs real quic-go through a 50 ms RTT, 5% loss network, across a
// NAT rebinding and a client-initiated connection migration.
func TestQUIC(t *testing.T) {
	serverTLS, clientTLS := tlsConfigs(t)
	ln, err := quic.Listen(localUDP(t), serverTLS, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	serverConns := quicEchoServer(t, ln)

	// Lossless with 100 ms RTT while counting round trips: a stall of the
	// test shorter than one RTT cannot change the count.
	clean := netsim.Link{Delay: 50 * time.Millisecond}
	p := newProxy(t, netsim.Config{Target: ln.Addr().String(), Up: clean, Down: clean, Seed: 5})
	proxyAddr, err := net.ResolveUDPAddr("udp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Migration needs client connection IDs, which quic.Dial does not use.
	tr1 := &quic.Transport{Conn: localUDP(t), ConnectionIDLength: 8}
	defer tr1.Close()
	conn, err := tr1.Dial(ctx, proxyAddr, clientTLS, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	var sconn *quic.Conn
	select {
	case sconn = <-serverConns:
	case <-ctx.Done():
		t.Fatal("the server accepted no connection")
	}

	// Without loss the round trips are exact: the handshake is one, a
	// request sent when Dial returns is answered in the second.
	// (Dial returns on the server's first flight; nothing the server sends
	// in answer to the client's next flight is due for another RTT.)
	if n := p.RoundTrips(); n != 1 {
		t.Errorf("after the handshake RoundTrips() = %d, want 1", n)
	}
	if err := exchange(ctx, conn, "first", 1, 1); err != nil {
		t.Fatal(err)
	}
	if n := p.RoundTrips(); n != 2 {
		t.Errorf("after handshake and one request RoundTrips() = %d, want 2", n)
	}

	// 50 ms RTT, 5% loss each way.
	lossy := netsim.Link{Delay: 25 * time.Millisecond, Loss: 0.05}
	p.SetLinks(lossy, lossy)
	if err := exchange(ctx, conn, "lossy", 300, 30); err != nil {
		t.Fatal(err)
	}

	// NAT rebinding: the server sees the client's packets from a new port
	// and moves the connection there.
	before := sconn.RemoteAddr().String()
	if err := p.Rebind(); err != nil {
		t.Fatal(err)
	}
	if err := exchange(ctx, conn, "rebound", 100, 30); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to follow the rebinding", func() bool { return sconn.RemoteAddr().String() != before })
	rebound := sconn.RemoteAddr().String()

	// Connection migration: the client probes a path from a new socket and
	// switches to it; the proxy sees a new flow.
	tr2 := &quic.Transport{Conn: localUDP(t), ConnectionIDLength: 8}
	defer tr2.Close()
	path, err := conn.AddPath(tr2)
	if err != nil {
		t.Fatal(err)
	}
	if err := path.Probe(ctx); err != nil {
		t.Fatalf("probing the new path: %v", err)
	}
	if err := path.Switch(); err != nil {
		t.Fatalf("switching to the new path: %v", err)
	}
	if err := exchange(ctx, conn, "migrated", 100, 30); err != nil {
		t.Fatal(err)
	}
	if conn.LocalAddr().String() != tr2.Conn.LocalAddr().String() {
		t.Errorf("client still on %v after the switch", conn.LocalAddr())
	}
	waitFor(t, "the server to follow the migration", func() bool { return sconn.RemoteAddr().String() != rebound })
	if n := p.Flows(); n != 2 {
		t.Errorf("Flows() = %d after migration, want 2", n)
	}

	s := p.Stats()
	if s.Up.Dropped.Loss == 0 || s.Down.Dropped.Loss == 0 {
		t.Errorf("5%% loss dropped nothing: %+v", s)
	}
	t.Logf("up: %d packets, %d lost; down: %d packets, %d lost, %d to a rebound port",
		s.Up.Packets, s.Up.Dropped.Loss, s.Down.Packets, s.Down.Dropped.Loss, s.Down.Dropped.Rebound)
}
