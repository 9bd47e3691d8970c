package quicconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ternhq/tern/bench/peers/internal/targettest"
)

func TestEchoOverStream(t *testing.T) {
	targettest.NoLeaks(t)
	srvTLS, cliTLS, err := LoopbackTLS("test")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", srvTLS, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	// The server echoes every connection until EOF, then closes it.
	served := make(chan error, 2)
	go func() {
		for range 2 {
			c, err := l.Accept()
			if err != nil {
				served <- err
				return
			}
			_, err = io.Copy(c, c)
			c.Close()
			served <- err
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 2 {
		c, err := Dial(ctx, l.Addr().String(), cliTLS, Options{})
		if err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte{byte('a' + i)}, 100_000) // more than one packet
		go func() { c.Write(msg) }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("conn %d: read: %v", i, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("conn %d: echo differs", i)
		}
		if c.LocalAddr() == nil || c.RemoteAddr().String() != l.Addr().String() {
			t.Fatalf("conn %d: addresses %v -> %v, listener %v", i, c.LocalAddr(), c.RemoteAddr(), l.Addr())
		}
		start := time.Now()
		c.Close() // FIN; the server's copy ends and it closes first
		if d := time.Since(start); d >= DefaultCloseWait {
			t.Fatalf("conn %d: Close waited %v: the server did not close after FIN", i, d)
		}
		if err := <-served; err != nil {
			t.Fatalf("conn %d: server: %v", i, err)
		}
	}
}

func TestCloseStopsAccept(t *testing.T) {
	srvTLS, _, err := LoopbackTLS("test")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", srvTLS, Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

func TestReadAfterPeerCloseIsClosed(t *testing.T) {
	srvTLS, cliTLS, err := LoopbackTLS("test")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", srvTLS, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, l.Addr().String(), cliTLS, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc.Close() // the server hangs up at once
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		t.Fatalf("read after the server closed: %v, want net.ErrClosed or EOF", err)
	}
}
