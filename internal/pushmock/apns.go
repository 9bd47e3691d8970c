package pushmock

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/push"
)

// APNs limits the mock enforces, as Apple documents them.
const (
	APNsMaxPayload    = 4096 // bytes
	APNsMaxCollapseID = 64   // bytes
	// APNsTokenLifetime is how long a provider JWT is accepted after its iat.
	APNsTokenLifetime = time.Hour
)

// APNsOptions configures an APNs mock.
type APNsOptions struct {
	// Key verifies provider tokens (token authentication). Requests with an
	// authorization header are checked against it; with Key nil every
	// provider token is refused.
	Key *APNsKey
	// ClientCAs verifies client certificates (certificate authentication):
	// a request without a provider token is accepted when the connection
	// presented a certificate signed by one of them. See NewAPNsCert.
	ClientCAs *x509.CertPool
	// Topics are the accepted apns-topic values; empty accepts any.
	Topics []string
	// NoRecord counts requests without keeping them (benchmarks).
	NoRecord bool
}

// APNsRequest is one request the mock received.
type APNsRequest struct {
	Time  time.Time
	Host  string // the request's :authority
	Token string // the device token from the path
	// Auth is "token" or "certificate", "" when the request was refused
	// before authentication succeeded.
	Auth       string
	Topic      string
	PushType   string
	Priority   int // 0 when absent
	CollapseID string
	Expiration int64 // unix seconds; 0 when absent
	Header     http.Header
	Payload    []byte
	// JSON is Payload decoded, nil when it is not a JSON object.
	JSON map[string]any
	// Status and Reason are what the mock answered (Reason "" for 200).
	Status int
	Reason string
}

// APNsResponse is a scripted answer.
type APNsResponse struct {
	Status int
	Reason string
	// RetryAfter, when set, is sent as the Retry-After header (seconds or
	// an HTTP date).
	RetryAfter string
	// Hold, when set, delays the answer until it is closed (or the mock
	// closes). The request is recorded before the hold starts.
	Hold <-chan struct{}
}

// Common scripted answers.
var (
	APNsOK                   = APNsResponse{Status: http.StatusOK}
	APNsUnregistered         = APNsResponse{Status: http.StatusGone, Reason: "Unregistered"}
	APNsBadDeviceToken       = APNsResponse{Status: http.StatusBadRequest, Reason: "BadDeviceToken"}
	APNsTokenNotForTopic     = APNsResponse{Status: http.StatusBadRequest, Reason: "DeviceTokenNotForTopic"}
	APNsTooManyRequests      = APNsResponse{Status: http.StatusTooManyRequests, Reason: "TooManyRequests"}
	APNsInternalServerError  = APNsResponse{Status: http.StatusInternalServerError, Reason: "InternalServerError"}
	APNsServiceUnavailable   = APNsResponse{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"}
	APNsInvalidProviderToken = APNsResponse{Status: http.StatusForbidden, Reason: "InvalidProviderToken"}
)

// APNs is a mock of the APNs provider API (HTTP/2 over TLS on
// 127.0.0.1): POST /3/device/{token}, provider-token or certificate
// authentication, and Apple's header rules.
//
// Point a push.Service at it with PushConfig, which amounts to
//
//	&push.APNsConfig{KeyFile: key.Path, KeyID: key.KeyID, TeamID: key.TeamID,
//		Topic: "com.example.app", Endpoint: m.URL, RootCAs: m.RootCAs()}
type APNs struct {
	// URL is the mock's base URL, https://127.0.0.1:port.
	URL string

	opts    APNsOptions
	srv     *httptest.Server
	hist    *history[APNsRequest]
	script  *script[APNsResponse]
	closing chan struct{}
	once    sync.Once

	mu       sync.Mutex
	verified map[string]int64 // provider token → iat
}

// NewAPNs starts an APNs mock; it closes when tb's test ends.
func NewAPNs(tb testing.TB, opts APNsOptions) *APNs {
	tb.Helper()
	m := &APNs{
		opts:     opts,
		hist:     newHistory[APNsRequest](opts.NoRecord),
		script:   newScript[APNsResponse](),
		closing:  make(chan struct{}),
		verified: map[string]int64{},
	}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(m.serve))
	m.srv.EnableHTTP2 = true
	if opts.ClientCAs != nil {
		m.srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: opts.ClientCAs}
	}
	// Clients hanging up mid-handshake are not the test's concern.
	m.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	m.srv.StartTLS()
	m.URL = m.srv.URL
	tb.Cleanup(m.Close)
	return m
}

// RootCAs returns a pool that trusts the mock's certificate
// (push.APNsConfig.RootCAs).
func (m *APNs) RootCAs() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(m.srv.Certificate())
	return p
}

// PushConfig returns an APNsConfig that sends to the mock and signs with
// its Key (token authentication; the Key must be set), with the first of
// Topics as the default topic. Adjust the copy as needed.
func (m *APNs) PushConfig() *push.APNsConfig {
	c := &push.APNsConfig{Endpoint: m.URL, RootCAs: m.RootCAs()}
	if k := m.opts.Key; k != nil {
		c.KeyFile, c.KeyID, c.TeamID = k.Path, k.KeyID, k.TeamID
	}
	if len(m.opts.Topics) > 0 {
		c.Topic = m.opts.Topics[0]
	}
	return c
}

// Certificate returns the mock's server certificate.
func (m *APNs) Certificate() *x509.Certificate { return m.srv.Certificate() }

// Close releases held requests and stops the server.
func (m *APNs) Close() {
	m.once.Do(func() {
		close(m.closing)
		m.srv.Close()
	})
}

// Script queues answers for requests to token, in order; once they are
// used up the token is answered 200 again.
func (m *APNs) Script(token string, rs ...APNsResponse) { m.script.add(token, rs) }

// SetErrorRate answers the given fraction of otherwise successful requests
// with r, evenly spread (deterministic).
func (m *APNs) SetErrorRate(rate float64, r APNsResponse) { m.script.setRate(rate, r) }

// Requests returns the requests received so far.
func (m *APNs) Requests() []APNsRequest { return m.hist.all() }

// Count returns the number of requests received (recorded or not).
func (m *APNs) Count() int { return m.hist.len() }

// WaitRequests waits until n requests have arrived and returns them (as
// Requests); it reports an error after DefaultWait.
func (m *APNs) WaitRequests(n int) ([]APNsRequest, error) { return m.hist.wait(n, DefaultWait) }

func (m *APNs) serve(w http.ResponseWriter, r *http.Request) {
	rec := APNsRequest{Time: time.Now(), Host: r.Host, Header: r.Header.Clone()}
	resp := m.check(r, &rec)
	if resp.Status == 0 {
		if s, ok := m.script.next(rec.Token); ok {
			resp = s
		} else {
			resp = APNsOK
		}
	}
	rec.Status, rec.Reason = resp.Status, resp.Reason
	m.hist.add(rec)
	if resp.Hold != nil {
		select {
		case <-resp.Hold:
		case <-m.closing:
		case <-r.Context().Done():
		}
	}
	id := r.Header.Get("apns-id")
	if id == "" {
		id = newUUID()
	}
	w.Header().Set("apns-id", id)
	if resp.RetryAfter != "" {
		w.Header().Set("Retry-After", resp.RetryAfter)
	}
	if resp.Status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	body := map[string]any{"reason": resp.Reason}
	if resp.Status == http.StatusGone {
		body["timestamp"] = time.Now().UnixMilli()
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(resp.Status)
	_ = json.NewEncoder(w).Encode(body)
}

func refuse(status int, reason string) APNsResponse {
	return APNsResponse{Status: status, Reason: reason}
}

// check verifies a request as APNs does and fills rec; it returns the
// refusal, or a zero APNsResponse when the request is acceptable.
func (m *APNs) check(r *http.Request, rec *APNsRequest) APNsResponse {
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	rec.Token = token
	if r.ProtoMajor != 2 {
		return refuse(http.StatusBadRequest, "BadPath") // APNs accepts HTTP/2 only
	}
	if !ok || token == "" {
		return refuse(http.StatusNotFound, "BadPath")
	}
	if r.Method != http.MethodPost {
		return refuse(http.StatusMethodNotAllowed, "MethodNotAllowed")
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, APNsMaxPayload+1))
	if err != nil {
		return refuse(http.StatusBadRequest, "BadPayload")
	}
	rec.Payload = payload
	_ = json.Unmarshal(payload, &rec.JSON)
	rec.Topic = r.Header.Get("apns-topic")
	rec.PushType = r.Header.Get("apns-push-type")
	rec.CollapseID = r.Header.Get("apns-collapse-id")
	if !isHex(token) {
		return refuse(http.StatusBadRequest, "BadDeviceToken")
	}
	if auth := r.Header.Get("authorization"); auth != "" {
		if reason := m.verifyJWT(auth); reason != "" {
			return refuse(http.StatusForbidden, reason)
		}
		rec.Auth = "token"
	} else if m.opts.ClientCAs != nil && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		rec.Auth = "certificate"
	} else {
		return refuse(http.StatusForbidden, "MissingProviderToken")
	}
	if rec.Topic == "" {
		return refuse(http.StatusBadRequest, "MissingTopic")
	}
	if len(m.opts.Topics) > 0 && !slices.Contains(m.opts.Topics, rec.Topic) {
		return refuse(http.StatusBadRequest, "TopicDisallowed")
	}
	switch rec.PushType {
	case "background", "alert":
	default:
		return refuse(http.StatusBadRequest, "InvalidPushType")
	}
	rec.Priority = 10 // APNs's default
	if p := r.Header.Get("apns-priority"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || (n != 5 && n != 10 && n != 1) {
			return refuse(http.StatusBadRequest, "BadPriority")
		}
		rec.Priority = n
	}
	if rec.PushType == "background" && rec.Priority != 5 {
		return refuse(http.StatusBadRequest, "BadPriority") // background pushes must be priority 5
	}
	if len(rec.CollapseID) > APNsMaxCollapseID {
		return refuse(http.StatusBadRequest, "BadCollapseId")
	}
	if e := r.Header.Get("apns-expiration"); e != "" {
		n, err := strconv.ParseInt(e, 10, 64)
		if err != nil || n < 0 {
			return refuse(http.StatusBadRequest, "BadExpirationDate")
		}
		rec.Expiration = n
	}
	if len(payload) == 0 {
		return refuse(http.StatusBadRequest, "PayloadEmpty")
	}
	if len(payload) > APNsMaxPayload {
		return refuse(http.StatusRequestEntityTooLarge, "PayloadTooLarge")
	}
	return APNsResponse{}
}

// verifyJWT checks "bearer <jwt>" against the key: ES256, kid, iss, iat.
// It returns "" or the APNs reason for the refusal.
func (m *APNs) verifyJWT(auth string) string {
	jwt, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		return "MissingProviderToken"
	}
	now := time.Now().Unix()
	m.mu.Lock()
	iat, seen := m.verified[jwt]
	m.mu.Unlock()
	if !seen {
		var err error
		if iat, err = verifyES256(jwt, m.opts.Key); err != nil {
			return "InvalidProviderToken"
		}
		m.mu.Lock()
		m.verified[jwt] = iat
		m.mu.Unlock()
	}
	if now-iat > int64(APNsTokenLifetime/time.Second) {
		return "ExpiredProviderToken"
	}
	if iat > now+60 {
		return "InvalidProviderToken"
	}
	return ""
}

func verifyES256(jwt string, key *APNsKey) (iat int64, err error) {
	if key == nil {
		return 0, errors.New("no key")
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return 0, errors.New("not a JWT")
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var claims struct {
		Iss string `json:"iss"`
		Iat *int64 `json:"iat"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return 0, err
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return 0, err
	}
	if header.Alg != "ES256" || header.Kid != key.KeyID || claims.Iss != key.TeamID || claims.Iat == nil {
		return 0, fmt.Errorf("header %+v claims iss %q", header, claims.Iss)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return 0, errors.New("bad signature encoding")
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(key.Public, h[:], r, s) {
		return 0, errors.New("bad signature")
	}
	return *claims.Iat, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := strings.ToUpper(hex.EncodeToString(b[:]))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
