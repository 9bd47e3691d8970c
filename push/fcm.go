package push

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"

	"github.com/ternhq/tern/core"
)

// fcmScope is the OAuth scope of the FCM HTTP v1 API.
const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// fcmSender sends through a firebase messaging client. Its HTTP client is
// built here (option.WithHTTPClient) so that the recorder sits under the
// SDK: credentials come from the service-account file through
// golang.org/x/oauth2/google, which honours the file's token_uri.
type fcmSender struct {
	cfg       FCMConfig
	clock     Clock
	client    *messaging.Client
	transport *http.Transport
	dial      *dialer
}

func newFCMSender(cfg FCMConfig, workers int, clock Clock) (*fcmSender, error) {
	dial := newDialer()
	base := &http.Transport{
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs},
		ForceAttemptHTTP2:   true,
		DialContext:         dial.DialContext,
		TLSHandshakeTimeout: 20 * time.Second,
		MaxIdleConnsPerHost: max(workers, 2),
		IdleConnTimeout:     5 * time.Minute,
	}
	var rt http.RoundTripper = base
	project := cfg.ProjectID
	if cfg.CredentialsFile != "" {
		data, err := os.ReadFile(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("push: FCM credentials: %w", err)
		}
		jwtConf, err := google.JWTConfigFromJSON(data, fcmScope)
		if err != nil {
			return nil, fmt.Errorf("push: FCM credentials %s: %w", cfg.CredentialsFile, err)
		}
		if project == "" {
			var f struct {
				ProjectID string `json:"project_id"`
			}
			_ = json.Unmarshal(data, &f) // JWTConfigFromJSON parsed it already
			if project = f.ProjectID; project == "" {
				return nil, fmt.Errorf("push: FCM credentials %s have no project_id: set ProjectID", cfg.CredentialsFile)
			}
		}
		// Token fetches use their own client: they are not sends, so they
		// stay outside the recorder's one-round-trip rule.
		tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient,
			&http.Client{Transport: base, Timeout: 30 * time.Second})
		rt = &oauth2.Transport{Source: jwtConf.TokenSource(tokenCtx), Base: base}
	}
	opts := []option.ClientOption{option.WithHTTPClient(&http.Client{Transport: &recorder{next: rt}})}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(strings.TrimSuffix(cfg.Endpoint, "/")))
	}
	ctx := context.Background()
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: project}, opts...)
	if err != nil {
		return nil, fmt.Errorf("push: firebase app: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("push: firebase messaging: %w", err)
	}
	return &fcmSender{cfg: cfg, clock: clock, client: client, transport: base, dial: dial}, nil
}

func (s *fcmSender) close() {
	s.transport.CloseIdleConnections()
	s.dial.closeAll()
}

// FCM data keys. FCM reserves "from", "notification", "message_type" and
// the prefixes "google." and "gcm.".
const (
	fcmKeySeq   = "tern_seq"
	fcmKeyFrom  = "tern_from"
	fcmKeyGroup = "tern_group"
	fcmKeyText  = "tern_text"
)

func (s *fcmSender) message(req *core.PushRequest) *messaging.Message {
	data := map[string]string{fcmKeySeq: strconv.FormatUint(uint64(req.Head), 10)}
	pv := newPreview(req.Preview)
	if pv != nil {
		data[fcmKeyFrom] = pv.from
		if pv.group != "" {
			data[fcmKeyGroup] = pv.group
		}
		if pv.text != "" {
			data[fcmKeyText] = pv.text
		}
	}
	ttl := s.cfg.TTL
	m := &messaging.Message{
		Token: req.Reg.Token,
		Data:  data,
		Android: &messaging.AndroidConfig{
			CollapseKey: req.CollapseID,
			Priority:    s.cfg.Priority,
			TTL:         &ttl,
		},
	}
	if s.cfg.Notification {
		n := &messaging.Notification{Title: s.cfg.NotificationTitle, Body: s.cfg.NotificationBody}
		if pv != nil {
			n.Title = pv.from
			if pv.text != "" {
				n.Body = pv.text
			}
		}
		m.Notification = n
	}
	return m
}

func (s *fcmSender) send(ctx context.Context, req *core.PushRequest) outcome {
	if req.Reg.Token == "" {
		return outcome{class: classInvalidToken, reason: "malformed_token", err: errors.New("empty token")}
	}
	var a attempt
	actx, cancel := withAttempt(ctx, &a)
	defer cancel()
	_, err := s.client.Send(actx, s.message(req))
	return s.classify(&a, err)
}

// fcmError is the body of an FCM v1 error response.
type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

const (
	fcmErrorType      = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
	badRequestType    = "type.googleapis.com/google.rpc.BadRequest"
	fcmTokenField     = "message.token"
	fcmBadTokenPhrase = "registration token"
)

// classify reads the recorded exchange rather than the SDK's error: when
// the recorder ends the SDK's own retry of a 503 or a network error, the
// SDK returns only a context error.
func (s *fcmSender) classify(a *attempt, err error) outcome {
	switch {
	case err == nil:
		return outcome{class: classOK, reason: "ok"}
	case a.err != nil:
		if _, ok := errors.AsType[*oauth2.RetrieveError](a.err); ok {
			// The token endpoint refused the service account's assertion.
			return outcome{class: classAuth, reason: "access_token", err: a.err}
		}
		return networkOutcome(a.err)
	case !a.done:
		// The SDK refused the message before sending it.
		return outcome{class: classRejected, reason: "invalid_message", err: err}
	}
	var body fcmError
	_ = json.Unmarshal(a.body, &body) // a body that is not FCM's leaves the fields empty
	var code string
	tokenField := false
	for _, d := range body.Error.Details {
		switch d.Type {
		case fcmErrorType:
			code = d.ErrorCode
		case badRequestType:
			for _, v := range d.FieldViolations {
				tokenField = tokenField || v.Field == fcmTokenField
			}
		}
	}
	if code == "" {
		code = body.Error.Status
	}
	o := outcome{
		retryAfter: retryAfter(a.header, s.clock.Now()),
		err:        fmt.Errorf("fcm: %d %s: %s", a.status, code, body.Error.Message),
	}
	switch code {
	case "UNREGISTERED":
		o.class, o.reason = classInvalidToken, "unregistered"
	case "SENDER_ID_MISMATCH":
		o.class, o.reason = classInvalidToken, "sender_id_mismatch"
	case "INVALID_ARGUMENT":
		// FCM says which argument only in prose, and sometimes in a
		// BadRequest field violation: a malformed token must be deleted, a
		// malformed message must not delete anything.
		if tokenField || strings.Contains(body.Error.Message, fcmBadTokenPhrase) {
			o.class, o.reason = classInvalidToken, "invalid_token"
		} else {
			o.class, o.reason = classRejected, "invalid_argument"
		}
	case "QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED":
		o.class, o.reason = classRetry, "quota_exceeded"
	case "UNAVAILABLE":
		o.class, o.reason = classRetry, "unavailable"
	case "INTERNAL":
		o.class, o.reason = classRetry, "internal"
	case "THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR":
		o.class, o.reason = classAuth, "third_party_auth_error"
	case "PERMISSION_DENIED":
		o.class, o.reason = classAuth, "permission_denied"
	case "UNAUTHENTICATED":
		o.class, o.reason = classAuth, "unauthenticated"
	default:
		o.reason = fmt.Sprintf("http_%dxx", a.status/100)
		switch {
		case a.status == http.StatusTooManyRequests || a.status >= 500:
			o.class = classRetry
		case a.status == http.StatusUnauthorized || a.status == http.StatusForbidden || a.status == http.StatusNotFound:
			// 404 without UNREGISTERED: a wrong project or endpoint.
			o.class = classAuth
		default:
			o.class = classRejected
		}
	}
	return o
}
