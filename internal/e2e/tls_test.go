package e2e

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/ternhq/tern/wire"
)

type rawTLS struct{ pool *x509.CertPool }

func (r *rawTLS) config() *tls.Config {
	return &tls.Config{RootCAs: r.pool, ServerName: "localhost", NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13}
}
