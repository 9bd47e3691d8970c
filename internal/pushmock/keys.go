package pushmock

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// APNsKey is a provider signing key like the .p8 that Apple issues: an
// ECDSA P-256 key in PKCS #8 PEM. Give Path, KeyID and TeamID to
// push.APNsConfig and the key to APNsOptions.Key.
type APNsKey struct {
	Path   string // the .p8 file
	KeyID  string // 10 characters, like Apple's
	TeamID string // 10 characters
	Public *ecdsa.PublicKey
}

// NewAPNsKey generates a key and writes it to dir as AuthKey_<KeyID>.p8.
func NewAPNsKey(dir string) (*APNsKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	k := &APNsKey{KeyID: randomID(), TeamID: randomID(), Public: &priv.PublicKey}
	k.Path = filepath.Join(dir, "AuthKey_"+k.KeyID+".p8")
	if err := os.WriteFile(k.Path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// randomID returns 10 upper-case hex characters.
func randomID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// APNsCert is a client certificate for APNs certificate authentication:
// Path holds the certificate and its key in one PEM file (what
// push.APNsConfig.CertFile takes), CA verifies it (APNsOptions.ClientCAs).
type APNsCert struct {
	Path string
	CA   *x509.CertPool
}

// NewAPNsCert generates a CA and a client certificate signed by it for
// topic, and writes the certificate and key to dir/apns-cert.pem.
func NewAPNsCert(dir, topic string) (*APNsCert, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pushmock APNs CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "Apple Push Services: " + topic, OrganizationalUnit: []string{randomID()}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	path := filepath.Join(dir, "apns-cert.pem")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return nil, fmt.Errorf("pushmock: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &APNsCert{Path: path, CA: pool}, nil
}
