package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/wire"
)

// A phone app: connect with a token from the app's backend, print what
// arrives, send a message. Not run: it needs a server.
func ExampleDial() {
	pem, err := os.ReadFile("tls/dev-cert.pem") // tern serve's development certificate
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{
		Addr: "edge.example.com:4433",
		TLS:  &tls.Config{RootCAs: roots},
		TokenFunc: func(ctx context.Context) (string, error) {
			return fetchToken(ctx) // the app backend mints tokens
		},
		Platform: wire.Platform_PLATFORM_ANDROID,
		OnEvent: func(ev client.Event) {
			if ev.Kind == client.EventResync {
				log.Printf("messages %d..%d are gone", ev.OldSeq+1, ev.NewSeq)
			}
		},
		Logger: slog.Default(),
	})
	if err != nil {
		log.Fatal(err) // e.g. a *wire.Error with UNAUTHENTICATED
	}
	defer c.Close()

	go func() {
		for m := range c.Messages() { // closed by Close
			fmt.Printf("%d %s: %s\n", m.Seq, m.From, m.Body)
		}
	}()

	res, err := c.Send(ctx, "bob", []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored as", res.ID, "seq", res.Seq)
}

// fetchToken stands for the app's call to its backend.
func fetchToken(context.Context) (string, error) { return "eyJhbGciOiJFZERTQSJ9...", nil }
