package push

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"

	"github.com/ternhq/tern/core"
)

// apnsSender sends through apns2 clients, one per environment, that share
// one HTTP/2 connection pool.
type apnsSender struct {
	cfg       APNsConfig
	clock     Clock
	prod, dev *apns2.Client
	transport *http.Transport
	dial      *dialer
}

// APNs limits.
const (
	maxAPNsCollapseID = 64  // bytes, apns-collapse-id
	maxAPNsTokenLen   = 200 // hex digits; tokens are 64 today
)

func newAPNsSender(cfg APNsConfig, workers int, clock Clock) (*apnsSender, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
	var (
		tok  *token.Token
		cert tls.Certificate
	)
	if cfg.CertFile != "" {
		var err error
		switch strings.ToLower(filepath.Ext(cfg.CertFile)) {
		case ".p12", ".pfx":
			cert, err = certificate.FromP12File(cfg.CertFile, cfg.CertPassword)
		default:
			cert, err = certificate.FromPemFile(cfg.CertFile, cfg.CertPassword)
		}
		if err != nil {
			return nil, fmt.Errorf("push: APNs certificate %s: %w", cfg.CertFile, err)
		}
		tlsConf.Certificates = []tls.Certificate{cert}
	} else {
		key, err := token.AuthKeyFromFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("push: APNs key %s: %w", cfg.KeyFile, err)
		}
		tok = &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
		if _, err := tok.Generate(); err != nil {
			return nil, fmt.Errorf("push: APNs provider token: %w", err)
		}
	}
	dial := newDialer()
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true) // APNs speaks HTTP/2 only
	tr := &http.Transport{
		TLSClientConfig:     tlsConf,
		Protocols:           protocols,
		DialContext:         dial.DialContext,
		TLSHandshakeTimeout: 20 * time.Second,
		MaxIdleConnsPerHost: max(workers, 2),
		IdleConnTimeout:     30 * time.Minute,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 15 * time.Second},
	}
	hc := &http.Client{Transport: &recorder{next: tr}}
	client := func(host string, overrides ...string) *apns2.Client {
		for _, o := range overrides {
			if o != "" {
				host = strings.TrimSuffix(o, "/")
				break
			}
		}
		return &apns2.Client{Host: host, Token: tok, Certificate: cert, HTTPClient: hc}
	}
	return &apnsSender{
		cfg:       cfg,
		clock:     clock,
		prod:      client(apns2.HostProduction, cfg.Endpoint),
		dev:       client(apns2.HostDevelopment, cfg.DevelopmentEndpoint, cfg.Endpoint),
		transport: tr,
		dial:      dial,
	}, nil
}

func (s *apnsSender) close() {
	s.transport.CloseIdleConnections()
	s.dial.closeAll()
}

func (s *apnsSender) send(ctx context.Context, req *core.PushRequest) outcome {
	if !validAPNsToken(req.Reg.Token) {
		return outcome{class: classInvalidToken, reason: "malformed_token", err: errors.New("token is not hex")}
	}
	n := &apns2.Notification{
		DeviceToken: req.Reg.Token,
		Topic:       req.Reg.Topic,
		CollapseID:  apnsCollapseID(req.CollapseID),
		Expiration:  s.clock.Now().Add(s.cfg.Expiration),
		Payload:     s.payload(req),
	}
	if n.Topic == "" {
		n.Topic = s.cfg.Topic
	}
	if s.cfg.PushType == PushTypeAlert {
		n.PushType, n.Priority = apns2.PushTypeAlert, apns2.PriorityHigh
	} else {
		n.PushType, n.Priority = apns2.PushTypeBackground, apns2.PriorityLow
	}
	client := s.prod
	if req.Reg.Sandbox {
		client = s.dev
	}
	var a attempt
	actx, cancel := withAttempt(ctx, &a)
	defer cancel()
	resp, err := client.PushWithContext(actx, n)
	return s.classify(&a, resp, err)
}

// payload is {"aps":{...},"tern":{"seq":N[,"from","group","text"]}}.
func (s *apnsSender) payload(req *core.PushRequest) *payload.Payload {
	tern := map[string]any{"seq": uint64(req.Head)}
	pv := newPreview(req.Preview)
	if pv != nil {
		tern["from"] = pv.from
		if pv.group != "" {
			tern["group"] = pv.group
		}
		if pv.text != "" {
			tern["text"] = pv.text
		}
	}
	p := payload.NewPayload().Custom("tern", tern)
	if s.cfg.PushType != PushTypeAlert {
		return p.ContentAvailable()
	}
	title, body := s.cfg.AlertTitle, s.cfg.AlertBody
	if pv != nil {
		title = pv.from
		if pv.text != "" {
			body = pv.text
		}
		if pv.group != "" {
			p.AlertSubtitle(pv.group)
		}
	}
	if title != "" {
		p.AlertTitle(title)
	}
	return p.AlertBody(body)
}

func (s *apnsSender) classify(a *attempt, resp *apns2.Response, err error) outcome {
	switch {
	case a.err != nil:
		return networkOutcome(a.err)
	case err != nil && !a.done:
		return outcome{class: classRejected, reason: "request", err: err}
	case err != nil:
		// The response body was not the JSON APNs sends.
		return outcome{class: classRetry, reason: "bad_response", err: fmt.Errorf("status %d: %w", a.status, err)}
	case resp.StatusCode == http.StatusOK:
		return outcome{class: classOK, reason: "ok"}
	}
	o := outcome{
		reason:     apnsReasonLabel(resp.StatusCode, resp.Reason),
		retryAfter: retryAfter(a.header, s.clock.Now()),
		err:        fmt.Errorf("apns: %d %s", resp.StatusCode, resp.Reason),
	}
	switch resp.Reason {
	case apns2.ReasonUnregistered, apns2.ReasonExpiredToken, apns2.ReasonBadDeviceToken, apns2.ReasonDeviceTokenNotForTopic:
		o.class = classInvalidToken
	case apns2.ReasonTooManyRequests, apns2.ReasonInternalServerError, apns2.ReasonServiceUnavailable,
		apns2.ReasonShutdown, apns2.ReasonIdleTimeout:
		o.class = classRetry
	case apns2.ReasonInvalidProviderToken, apns2.ReasonExpiredProviderToken, apns2.ReasonMissingProviderToken,
		apns2.ReasonBadCertificate, apns2.ReasonBadCertificateEnvironment, apns2.ReasonForbidden,
		apns2.ReasonTooManyProviderTokenUpdates, apns2.ReasonTopicDisallowed, apns2.ReasonBadTopic,
		apns2.ReasonMissingTopic:
		o.class = classAuth
	default:
		switch {
		case resp.StatusCode == http.StatusGone:
			o.class = classInvalidToken
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			o.class = classRetry
		case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
			o.class = classAuth
		default:
			o.class = classRejected
		}
	}
	return o
}

// apnsReasons maps APNs reasons to metric labels; anything else is counted
// by status class, so that the label set stays bounded.
var apnsReasons = map[string]string{
	apns2.ReasonBadCollapseID:               "bad_collapse_id",
	apns2.ReasonBadDeviceToken:              "bad_device_token",
	apns2.ReasonBadExpirationDate:           "bad_expiration_date",
	apns2.ReasonBadMessageID:                "bad_message_id",
	apns2.ReasonBadPriority:                 "bad_priority",
	apns2.ReasonBadTopic:                    "bad_topic",
	apns2.ReasonDeviceTokenNotForTopic:      "device_token_not_for_topic",
	apns2.ReasonDuplicateHeaders:            "duplicate_headers",
	apns2.ReasonIdleTimeout:                 "idle_timeout",
	apns2.ReasonInvalidPushType:             "invalid_push_type",
	apns2.ReasonMissingDeviceToken:          "missing_device_token",
	apns2.ReasonMissingTopic:                "missing_topic",
	apns2.ReasonPayloadEmpty:                "payload_empty",
	apns2.ReasonTopicDisallowed:             "topic_disallowed",
	apns2.ReasonBadCertificate:              "bad_certificate",
	apns2.ReasonBadCertificateEnvironment:   "bad_certificate_environment",
	apns2.ReasonExpiredProviderToken:        "expired_provider_token",
	apns2.ReasonForbidden:                   "forbidden",
	apns2.ReasonInvalidProviderToken:        "invalid_provider_token",
	apns2.ReasonMissingProviderToken:        "missing_provider_token",
	apns2.ReasonBadPath:                     "bad_path",
	apns2.ReasonMethodNotAllowed:            "method_not_allowed",
	apns2.ReasonExpiredToken:                "expired_token",
	apns2.ReasonUnregistered:                "unregistered",
	apns2.ReasonPayloadTooLarge:             "payload_too_large",
	apns2.ReasonTooManyProviderTokenUpdates: "too_many_provider_token_updates",
	apns2.ReasonTooManyRequests:             "too_many_requests",
	apns2.ReasonInternalServerError:         "internal_server_error",
	apns2.ReasonServiceUnavailable:          "service_unavailable",
	apns2.ReasonShutdown:                    "shutdown",
}

func apnsReasonLabel(status int, reason string) string {
	if l, ok := apnsReasons[reason]; ok {
		return l
	}
	return fmt.Sprintf("http_%dxx", status/100)
}

func validAPNsToken(t string) bool {
	if t == "" || len(t) > maxAPNsTokenLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// apnsCollapseID returns id when APNs accepts it as apns-collapse-id, else
// the hex SHA-256 of id (64 bytes): still one collapse id per input.
func apnsCollapseID(id string) string {
	ok := len(id) <= maxAPNsCollapseID
	for i := 0; ok && i < len(id); i++ {
		ok = id[i] >= 0x20 && id[i] < 0x7f
	}
	if ok {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}
