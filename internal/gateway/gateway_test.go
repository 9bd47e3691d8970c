package gateway

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestOpenFailsCleanly: when the QUIC address is taken, Open returns an
// error (it used to panic closing a nil gateway) and releases the data
// directory, so that the next Open of it succeeds.
func TestOpenFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if g, err := Open(Config{Dir: dir, Listen: taken.LocalAddr().String()}); err == nil {
		g.Close()
		t.Fatal("Open on a taken address succeeded")
	}
	g, err := Open(Config{Dir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("Open after a failed Open: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
