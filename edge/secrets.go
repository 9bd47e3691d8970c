package edge

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/quic-go/quic-go"
)

// Secrets are the keys that let connections outlive a restart of the edge:
// with the same stateless-reset key a restarted edge resets the connections
// of its previous life at once (instead of clients waiting for an idle
// timeout); with the same address-token and session-ticket keys returning
// clients skip address validation and resume TLS, with 0-RTT. All edges
// behind one load balancer should share them.
type Secrets struct {
	StatelessReset quic.StatelessResetKey
	TokenGenerator quic.TokenGeneratorKey
	SessionTicket  [32]byte
}

// LoadOrCreateSecrets reads the 32-byte master secret at path (hex), creating
// it (mode 0600) when it does not exist, and derives the Secrets from it.
func LoadOrCreateSecrets(path string) (*Secrets, error) {
	var master []byte
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		master = make([]byte, 32)
		if _, err := rand.Read(master); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(path, []byte(hex.EncodeToString(master)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("secrets: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("secrets: %w", err)
	default:
		master, err = hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(master) != 32 {
			return nil, fmt.Errorf("secrets %s: want 64 hex digits", path)
		}
	}
	return DeriveSecrets(master)
}

// DeriveSecrets derives the Secrets from a master secret with HKDF-SHA256.
func DeriveSecrets(master []byte) (*Secrets, error) {
	var s Secrets
	for _, k := range []struct {
		info string
		dst  []byte
	}{
		{"tern stateless reset", s.StatelessReset[:]},
		{"tern address token", s.TokenGenerator[:]},
		{"tern session ticket", s.SessionTicket[:]},
	} {
		key, err := hkdf.Key(sha256.New, master, nil, k.info, len(k.dst))
		if err != nil {
			return nil, err
		}
		copy(k.dst, key)
	}
	return &s, nil
}

// apply sets the session ticket key on a TLS configuration.
func (s *Secrets) apply(c *tls.Config) {
	c.SetSessionTicketKeys([][32]byte{s.SessionTicket})
}
