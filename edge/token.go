package edge

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ternhq/tern/core"
)

// Token errors; Authenticate wraps them.
var (
	ErrTokenExpired = errors.New("token expired")
	ErrTokenInvalid = errors.New("token invalid")
)

// MaxTokenLen bounds a token, in bytes.
const MaxTokenLen = 4096

// Identity is who a valid token names.
type Identity struct {
	User   core.UserID
	Device core.DeviceID
	// Expires is the token's expiry.
	Expires time.Time
}

// Authenticator checks the token of a Hello.
type Authenticator interface {
	// Authenticate returns the identity a token names, or an error wrapping
	// ErrTokenExpired or ErrTokenInvalid.
	Authenticate(token string) (Identity, error)
}

// Tokens are JWTs (RFC 7519) signed with Ed25519 ("alg":"EdDSA"), so that an
// app's backend can mint them with any JWT library. Claims: sub (user), dev
// (device), exp (required), iat, nbf.
type claims struct {
	Sub string `json:"sub"`
	Dev string `json:"dev"`
	Exp int64  `json:"exp"`
	Iat int64  `json:"iat,omitempty"`
	Nbf int64  `json:"nbf,omitempty"`
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
	Kid string `json:"kid,omitempty"`
}

// b64 is strict: a signature or header has exactly one accepted encoding, so
// a token cannot be altered (its unused trailing bits) and still verify.
var b64 = base64.RawURLEncoding.Strict()

// TokenSigner mints tokens.
type TokenSigner struct {
	Key ed25519.PrivateKey
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Sign returns a token for the device, valid for ttl.
func (s TokenSigner) Sign(u core.UserID, d core.DeviceID, ttl time.Duration) (string, error) {
	if err := u.Validate(); err != nil {
		return "", err
	}
	if err := d.Validate(); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", fmt.Errorf("token ttl must be positive, got %s", ttl)
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := now()
	h, _ := json.Marshal(jwtHeader{Alg: "EdDSA", Typ: "JWT"})
	c, err := json.Marshal(claims{Sub: string(u), Dev: string(d), Iat: t.Unix(), Exp: t.Add(ttl).Unix()})
	if err != nil {
		return "", err
	}
	signing := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	sig := ed25519.Sign(s.Key, []byte(signing))
	return signing + "." + b64.EncodeToString(sig), nil
}

// TokenVerifier verifies tokens against one or more public keys (more than
// one during a key rotation).
type TokenVerifier struct {
	Keys []ed25519.PublicKey
	// Leeway tolerates clock skew on exp and nbf. Default 0.
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var _ Authenticator = (*TokenVerifier)(nil)

// Authenticate implements Authenticator.
func (v *TokenVerifier) Authenticate(token string) (Identity, error) {
	var id Identity
	c, err := v.parse(token)
	if err != nil {
		return id, err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now()
	exp := time.Unix(c.Exp, 0)
	if c.Exp == 0 {
		return id, fmt.Errorf("%w: no exp claim", ErrTokenInvalid)
	}
	if !t.Before(exp.Add(v.Leeway)) {
		return id, fmt.Errorf("%w: at %s", ErrTokenExpired, exp.UTC().Format(time.RFC3339))
	}
	if c.Nbf != 0 && t.Add(v.Leeway).Before(time.Unix(c.Nbf, 0)) {
		return id, fmt.Errorf("%w: not valid before %d", ErrTokenInvalid, c.Nbf)
	}
	id = Identity{User: core.UserID(c.Sub), Device: core.DeviceID(c.Dev), Expires: exp}
	if err := id.User.Validate(); err != nil {
		return Identity{}, fmt.Errorf("%w: sub: %v", ErrTokenInvalid, err)
	}
	if err := id.Device.Validate(); err != nil {
		return Identity{}, fmt.Errorf("%w: dev: %v", ErrTokenInvalid, err)
	}
	return id, nil
}

// parse checks the token's shape and signature and decodes its claims.
func (v *TokenVerifier) parse(token string) (claims, error) {
	var c claims
	if len(token) == 0 || len(token) > MaxTokenLen {
		return c, fmt.Errorf("%w: length %d", ErrTokenInvalid, len(token))
	}
	// Only the base64url alphabet and the dots: the decoder skips CR and
	// LF, so without this a line break inside the signature would give a
	// second spelling of a signed token that still verified.
	for i := 0; i < len(token); i++ {
		if !isTokenByte(token[i]) {
			return c, fmt.Errorf("%w: byte %#x at %d", ErrTokenInvalid, token[i], i)
		}
	}
	hdr, rest, ok := strings.Cut(token, ".")
	if !ok {
		return c, fmt.Errorf("%w: not a JWT", ErrTokenInvalid)
	}
	body, sigPart, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sigPart, ".") {
		return c, fmt.Errorf("%w: not a JWT", ErrTokenInvalid)
	}
	hb, err := b64.DecodeString(hdr)
	if err != nil {
		return c, fmt.Errorf("%w: header encoding", ErrTokenInvalid)
	}
	var h jwtHeader
	if err := strictJSON(hb, &h); err != nil {
		return c, fmt.Errorf("%w: header: %v", ErrTokenInvalid, err)
	}
	if h.Alg != "EdDSA" {
		return c, fmt.Errorf("%w: alg %q, want EdDSA", ErrTokenInvalid, h.Alg)
	}
	sig, err := b64.DecodeString(sigPart)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return c, fmt.Errorf("%w: signature encoding", ErrTokenInvalid)
	}
	signed := []byte(token[:len(hdr)+1+len(body)])
	verified := false
	for _, k := range v.Keys {
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, signed, sig) {
			verified = true
			break
		}
	}
	if !verified {
		return c, fmt.Errorf("%w: bad signature", ErrTokenInvalid)
	}
	cb, err := b64.DecodeString(body)
	if err != nil {
		return c, fmt.Errorf("%w: claims encoding", ErrTokenInvalid)
	}
	if err := strictJSON(cb, &c); err != nil {
		return c, fmt.Errorf("%w: claims: %v", ErrTokenInvalid, err)
	}
	return c, nil
}

// isTokenByte reports whether b may appear in a token: the base64url
// alphabet, or the dot between the parts.
func isTokenByte(b byte) bool {
	return 'A' <= b && b <= 'Z' || 'a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_' || b == '.'
}

// strictJSON decodes one JSON object, refusing trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// LoadOrCreateSigningKey reads the Ed25519 private key at path (PKCS#8 PEM),
// creating it (mode 0600, parent directories 0700) when it does not exist.
func LoadOrCreateSigningKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return parseSigningKey(path, b)
}

func parseSigningKey(path string, b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: %T is not Ed25519", path, k)
	}
	return priv, nil
}

// LoadPublicKey reads an Ed25519 public key (PKIX PEM) or derives it from a
// private key file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("public key %s: no PEM block", path)
	}
	if blk.Type == "PRIVATE KEY" {
		priv, err := parseSigningKey(path, b)
		if err != nil {
			return nil, err
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: %T is not Ed25519", path, k)
	}
	return pub, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
