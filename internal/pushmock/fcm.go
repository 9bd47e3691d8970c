package pushmock

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/push"
)

// FCMScope is the OAuth scope the token endpoint requires.
const FCMScope = "https://www.googleapis.com/auth/firebase.messaging"

// FCMMaxData bounds a message's data (keys and values), in bytes.
const FCMMaxData = 4096

// FCMOptions configures an FCM mock.
type FCMOptions struct {
	// Project is the Firebase project id the mock serves; default
	// "tern-test".
	Project string
	// RequireAuth refuses sends without a bearer token that the mock's token
	// endpoint issued (see WriteServiceAccount) with 401 UNAUTHENTICATED.
	RequireAuth bool
	// NoRecord counts requests without keeping them (benchmarks).
	NoRecord bool
}

// FCMRequest is one send the mock received.
type FCMRequest struct {
	Time    time.Time
	Project string
	Header  http.Header
	Body    []byte
	// Message is the decoded message; zero when the body did not decode.
	Message      FCMMessage
	ValidateOnly bool
	// Status and ErrorCode are what the mock answered (ErrorCode is the
	// FcmError code or the google.rpc status, "" for 200).
	Status    int
	ErrorCode string
}

// FCMMessage is the part of an FCM v1 message the mock understands. Field
// names follow the API's JSON.
type FCMMessage struct {
	Token        string            `json:"token"`
	Topic        string            `json:"topic"`
	Condition    string            `json:"condition"`
	Data         map[string]string `json:"data"`
	Notification *FCMNotification  `json:"notification"`
	Android      *FCMAndroid       `json:"android"`
	APNS         json.RawMessage   `json:"apns"`
	Webpush      json.RawMessage   `json:"webpush"`
	FCMOptions   json.RawMessage   `json:"fcm_options"`
}

// FCMNotification is the message's notification.
type FCMNotification struct {
	Title string `json:"title"`
	Body  string `json:"body"`
	Image string `json:"image"`
}

// FCMAndroid is the message's android config.
type FCMAndroid struct {
	CollapseKey           string            `json:"collapse_key"`
	Priority              string            `json:"priority"`
	TTL                   string            `json:"ttl"` // "3600s"
	RestrictedPackageName string            `json:"restricted_package_name"`
	Data                  map[string]string `json:"data"`
	Notification          json.RawMessage   `json:"notification"`
	FCMOptions            json.RawMessage   `json:"fcm_options"`
	DirectBootOK          bool              `json:"direct_boot_ok"`
}

// FCMResponse is a scripted answer: 200, or an FCM v1 error.
type FCMResponse struct {
	// ErrorCode is the FcmError code (UNREGISTERED, INVALID_ARGUMENT,
	// SENDER_ID_MISMATCH, QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL,
	// THIRD_PARTY_AUTH_ERROR) or, without an FcmError detail, a
	// google.rpc status (PERMISSION_DENIED, UNAUTHENTICATED, NOT_FOUND).
	// "" answers 200.
	ErrorCode string
	// Status overrides the HTTP status that goes with ErrorCode.
	Status int
	// Message is the error's message; default a fitting text.
	Message string
	// TokenField adds a google.rpc.BadRequest field violation on
	// "message.token" (with INVALID_ARGUMENT).
	TokenField bool
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
	// Hold, when set, delays the answer until it is closed (or the mock
	// closes).
	Hold <-chan struct{}
}

// Common scripted answers.
var (
	FCMOK              = FCMResponse{}
	FCMUnregistered    = FCMResponse{ErrorCode: "UNREGISTERED"}
	FCMInvalidToken    = FCMResponse{ErrorCode: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token", TokenField: true}
	FCMInvalidArgument = FCMResponse{ErrorCode: "INVALID_ARGUMENT", Message: "Request contains an invalid argument."}
	FCMSenderMismatch  = FCMResponse{ErrorCode: "SENDER_ID_MISMATCH"}
	FCMQuotaExceeded   = FCMResponse{ErrorCode: "QUOTA_EXCEEDED"}
	FCMUnavailable     = FCMResponse{ErrorCode: "UNAVAILABLE"}
	FCMInternal        = FCMResponse{ErrorCode: "INTERNAL"}
	FCMThirdPartyAuth  = FCMResponse{ErrorCode: "THIRD_PARTY_AUTH_ERROR"}
	FCMPermission      = FCMResponse{ErrorCode: "PERMISSION_DENIED"}
)

// fcmCodes maps an error code to its HTTP status, google.rpc status, and
// whether it is an FcmError code (else only a google.rpc status).
var fcmCodes = map[string]struct {
	status int
	rpc    string
	fcm    bool
	msg    string
}{
	"UNREGISTERED":           {404, "NOT_FOUND", true, "Requested entity was not found."},
	"INVALID_ARGUMENT":       {400, "INVALID_ARGUMENT", true, "Request contains an invalid argument."},
	"SENDER_ID_MISMATCH":     {403, "PERMISSION_DENIED", true, "SenderId mismatch"},
	"QUOTA_EXCEEDED":         {429, "RESOURCE_EXHAUSTED", true, "Quota exceeded."},
	"UNAVAILABLE":            {503, "UNAVAILABLE", true, "The service is currently unavailable."},
	"INTERNAL":               {500, "INTERNAL", true, "Internal error encountered."},
	"THIRD_PARTY_AUTH_ERROR": {401, "UNAUTHENTICATED", true, "Auth error from APNS or Web Push Service"},
	"PERMISSION_DENIED":      {403, "PERMISSION_DENIED", false, "The caller does not have permission"},
	"UNAUTHENTICATED":        {401, "UNAUTHENTICATED", false, "Request had invalid authentication credentials."},
	"NOT_FOUND":              {404, "NOT_FOUND", false, "Requested entity was not found."},
}

// FCM is a mock of the FCM HTTP v1 API as the firebase Go SDK calls it
// with option.WithEndpoint: POST /v1/projects/{project}/messages:send with
// {"message": {...}}, over plain HTTP on 127.0.0.1. It also serves an
// OAuth token endpoint (/token) for service accounts it writes.
//
// Point a push.Service at it with PushConfig, which amounts to
//
//	&push.FCMConfig{ProjectID: m.Project(), Endpoint: m.Endpoint()}
//
// or, to exercise the service-account flow, with CredentialsFile set to
// the path WriteServiceAccount returns (and RequireAuth on the mock).
type FCM struct {
	// URL is the server's base URL, http://127.0.0.1:port.
	URL string

	opts    FCMOptions
	srv     *httptest.Server
	hist    *history[FCMRequest]
	script  *script[FCMResponse]
	closing chan struct{}
	once    sync.Once

	mu      sync.Mutex
	account *serviceAccount
	issued  map[string]bool // access tokens
	grants  int
}

type serviceAccount struct {
	email, keyID string
	key          *rsa.PublicKey
}

// NewFCM starts an FCM mock; it closes when tb's test ends.
func NewFCM(tb testing.TB, opts FCMOptions) *FCM {
	tb.Helper()
	if opts.Project == "" {
		opts.Project = "tern-test"
	}
	m := &FCM{
		opts:    opts,
		hist:    newHistory[FCMRequest](opts.NoRecord),
		script:  newScript[FCMResponse](),
		closing: make(chan struct{}),
		issued:  map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", m.serveToken)
	mux.HandleFunc("/v1/", m.serveSend)
	m.srv = httptest.NewServer(mux)
	m.URL = m.srv.URL
	tb.Cleanup(m.Close)
	return m
}

// Endpoint is the value for push.FCMConfig.Endpoint: URL + "/v1".
func (m *FCM) Endpoint() string { return m.URL + "/v1" }

// PushConfig returns an FCMConfig that sends to the mock without
// credentials. For the service-account flow set CredentialsFile to what
// WriteServiceAccount returns.
func (m *FCM) PushConfig() *push.FCMConfig {
	return &push.FCMConfig{ProjectID: m.opts.Project, Endpoint: m.Endpoint()}
}

// Project is the project id the mock serves.
func (m *FCM) Project() string { return m.opts.Project }

// Close releases held requests and stops the server.
func (m *FCM) Close() {
	m.once.Do(func() {
		close(m.closing)
		m.srv.Close()
	})
}

// Script queues answers for sends to token, in order; once they are used
// up the token is answered 200 again.
func (m *FCM) Script(token string, rs ...FCMResponse) { m.script.add(token, rs) }

// SetErrorRate answers the given fraction of otherwise successful sends
// with r, evenly spread (deterministic).
func (m *FCM) SetErrorRate(rate float64, r FCMResponse) { m.script.setRate(rate, r) }

// Requests returns the sends received so far.
func (m *FCM) Requests() []FCMRequest { return m.hist.all() }

// Count returns the number of sends received (recorded or not).
func (m *FCM) Count() int { return m.hist.len() }

// WaitRequests waits until n sends have arrived and returns them (as
// Requests); it reports an error after DefaultWait.
func (m *FCM) WaitRequests(n int) ([]FCMRequest, error) { return m.hist.wait(n, DefaultWait) }

// TokenGrants returns how many access tokens the token endpoint issued.
func (m *FCM) TokenGrants() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.grants
}

// WriteServiceAccount writes a service-account JSON key for the mock's
// project to dir and returns its path. Its token_uri is the mock's token
// endpoint, which accepts assertions signed with its key.
func (m *FCM) WriteServiceAccount(dir string) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	sa := &serviceAccount{
		email: "tern-push@" + m.opts.Project + ".iam.gserviceaccount.com",
		keyID: strings.ToLower(randomID()),
		key:   &key.PublicKey,
	}
	file := map[string]string{
		"type":           "service_account",
		"project_id":     m.opts.Project,
		"private_key_id": sa.keyID,
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   sa.email,
		"client_id":      "100000000000000000001",
		"auth_uri":       m.URL + "/auth",
		"token_uri":      m.URL + "/token",
	}
	b, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "service-account.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", err
	}
	m.mu.Lock()
	m.account = sa
	m.mu.Unlock()
	return path, nil
}

// serveToken is the OAuth 2.0 JWT-bearer grant (RFC 7523) as Google's
// token endpoint implements it for service accounts.
func (m *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	fail := func(desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": desc})
	}
	if r.Method != http.MethodPost {
		fail("POST required")
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(err.Error())
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail("unsupported grant_type")
		return
	}
	m.mu.Lock()
	sa := m.account
	m.mu.Unlock()
	if sa == nil {
		fail("no service account")
		return
	}
	if err := verifyAssertion(r.PostForm.Get("assertion"), sa, m.URL+"/token"); err != nil {
		fail("Invalid JWT: " + err.Error())
		return
	}
	tok := "ya29.mock-" + strings.ToLower(randomID())
	m.mu.Lock()
	m.issued[tok] = true
	m.grants++
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
}

func verifyAssertion(jwt string, sa *serviceAccount, aud string) error {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var claims struct {
		Iss   string `json:"iss"`
		Aud   string `json:"aud"`
		Scope string `json:"scope"`
		Exp   int64  `json:"exp"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return err
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return err
	}
	switch {
	case header.Alg != "RS256" || header.Kid != sa.keyID:
		return fmt.Errorf("header %+v", header)
	case claims.Iss != sa.email || claims.Aud != aud:
		return fmt.Errorf("iss %q aud %q", claims.Iss, claims.Aud)
	case !strings.Contains(" "+claims.Scope+" ", " "+FCMScope+" "):
		return fmt.Errorf("scope %q lacks %s", claims.Scope, FCMScope)
	case claims.Exp < time.Now().Unix():
		return errors.New("expired")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return err
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	return rsa.VerifyPKCS1v15(sa.key, crypto.SHA256, h[:], sig)
}

var (
	sendPath = regexp.MustCompile(`^/v1/projects/([^/]+)/messages:send$`)
	ttlRE    = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)
)

func (m *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	rec := FCMRequest{Time: time.Now(), Header: r.Header.Clone()}
	resp := m.check(r, &rec)
	if resp.ErrorCode == "" {
		if s, ok := m.script.next(rec.Message.Token); ok {
			resp = s
		}
	}
	code := fcmCodes[resp.ErrorCode]
	rec.Status, rec.ErrorCode = http.StatusOK, resp.ErrorCode
	if resp.ErrorCode != "" {
		rec.Status = code.status
		if resp.Status != 0 {
			rec.Status = resp.Status
		}
	}
	m.hist.add(rec)
	if resp.Hold != nil {
		select {
		case <-resp.Hold:
		case <-m.closing:
		case <-r.Context().Done():
		}
	}
	if resp.RetryAfter != "" {
		w.Header().Set("Retry-After", resp.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if resp.ErrorCode == "" {
		_ = json.NewEncoder(w).Encode(map[string]string{
			"name": "projects/" + rec.Project + "/messages/" + strings.ToLower(randomID()),
		})
		return
	}
	msg := resp.Message
	if msg == "" {
		msg = code.msg
	}
	rpc := code.rpc
	if rpc == "" {
		rpc = resp.ErrorCode
	}
	var details []any
	if code.fcm {
		details = append(details, map[string]string{
			"@type":     "type.googleapis.com/google.firebase.fcm.v1.FcmError",
			"errorCode": resp.ErrorCode,
		})
	}
	if resp.TokenField {
		details = append(details, map[string]any{
			"@type":           "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []map[string]string{{"field": "message.token", "description": msg}},
		})
	}
	body := map[string]any{"code": rec.Status, "message": msg, "status": rpc}
	if details != nil {
		body["details"] = details
	}
	w.WriteHeader(rec.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": body})
}

func bad(msg string) FCMResponse { return FCMResponse{ErrorCode: "INVALID_ARGUMENT", Message: msg} }

// check validates a send as the FCM v1 API does and fills rec; it returns
// the refusal, or a zero FCMResponse.
func (m *FCM) check(r *http.Request, rec *FCMRequest) FCMResponse {
	match := sendPath.FindStringSubmatch(r.URL.Path)
	if match == nil {
		return FCMResponse{ErrorCode: "NOT_FOUND", Message: "unknown path " + r.URL.Path}
	}
	rec.Project = match[1]
	if r.Method != http.MethodPost {
		return FCMResponse{ErrorCode: "NOT_FOUND", Status: http.StatusMethodNotAllowed, Message: "POST required"}
	}
	if rec.Project != m.opts.Project {
		return FCMResponse{ErrorCode: "NOT_FOUND", Message: "Requested entity was not found."}
	}
	if m.opts.RequireAuth {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		m.mu.Lock()
		ok = ok && m.issued[tok]
		m.mu.Unlock()
		if !ok {
			return FCMResponse{ErrorCode: "UNAUTHENTICATED"}
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return bad(err.Error())
	}
	rec.Body = body
	var req struct {
		ValidateOnly bool       `json:"validate_only"`
		Message      FCMMessage `json:"message"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return bad("Invalid JSON payload received. " + err.Error())
	}
	rec.Message, rec.ValidateOnly = req.Message, req.ValidateOnly
	msg := req.Message
	targets := 0
	for _, t := range []string{msg.Token, msg.Topic, msg.Condition} {
		if t != "" {
			targets++
		}
	}
	if targets != 1 {
		return bad("exactly one of token, topic or condition is required")
	}
	size := 0
	for k, v := range msg.Data {
		lk := strings.ToLower(k)
		if lk == "from" || lk == "notification" || lk == "message_type" ||
			strings.HasPrefix(lk, "google.") || strings.HasPrefix(lk, "gcm.") {
			return bad("Invalid data payload key: " + k)
		}
		size += len(k) + len(v)
	}
	if size > FCMMaxData {
		return bad("Message is too big")
	}
	if a := msg.Android; a != nil {
		switch strings.ToLower(a.Priority) {
		case "", "normal", "high":
		default:
			return bad("Invalid value at 'message.android.priority'")
		}
		if a.TTL != "" && !ttlRE.MatchString(a.TTL) {
			return bad("Invalid value at 'message.android.ttl'")
		}
	}
	return FCMResponse{}
}
