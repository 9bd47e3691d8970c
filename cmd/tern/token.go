package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/gateway"
)

// signingKeyPath is where serve and token keep the token signing key.
func signingKeyPath(data string) string {
	return filepath.Join(data, gateway.SigningKey)
}

func cmdToken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./tern-data", "data directory of the server (holds the signing key)")
	user := fs.String("user", "", "user id (required)")
	device := fs.String("device", "", "device id (required)")
	ttl := fs.Duration("ttl", 30*24*time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" || *device == "" {
		return usageError{"token: --user and --device are required"}
	}
	key, err := edge.LoadOrCreateSigningKey(signingKeyPath(*data))
	if err != nil {
		return err
	}
	tok, err := edge.TokenSigner{Key: key}.Sign(core.UserID(*user), core.DeviceID(*device), *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
