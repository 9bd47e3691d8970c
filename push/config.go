package push

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ternhq/tern/core"
)

// Config configures a Service. The zero value of every field means the
// documented default; New validates it once.
type Config struct {
	// APNs configures Apple Push Notification service; nil disables it, and
	// pushes for iOS devices are dropped (counted, reason "disabled").
	APNs *APNsConfig
	// FCM configures Firebase Cloud Messaging; nil disables it, and pushes
	// for Android devices are dropped (counted, reason "disabled").
	FCM *FCMConfig

	// Workers is the number of sends in flight at once, across providers.
	// Default 16.
	Workers int
	// MaxQueued bounds the devices that have a push queued, waiting for a
	// retry or being sent. Beyond it new pushes are dropped (counted, reason
	// "queue_full"). Default 100,000.
	MaxQueued int
	// RetryMin and RetryMax bound the exponential backoff between attempts
	// (with jitter: each delay is drawn from [d/2, d]). Errors that point at
	// a misconfiguration (authentication, permission) wait RetryMax.
	// Defaults 1 s and 5 min.
	RetryMin, RetryMax time.Duration
	// MaxAttempts is how many times one push is tried before it is given up
	// (counted, reason "gave_up"). Default 8.
	MaxAttempts int
	// SendTimeout bounds one attempt (connection, request and response).
	// Default 30 s.
	SendTimeout time.Duration

	// OnInvalidToken is called when a provider says a token is dead
	// (unregistered, malformed, or not for this app), so that whoever owns
	// registrations can delete it (core.Core.DropPushToken). It is called on
	// a worker goroutine and should return promptly; ctx ends when Close
	// gives up waiting. nil: the token is only counted and logged.
	OnInvalidToken func(ctx context.Context, u core.UserID, d core.DeviceID, token, reason string)

	// Logger receives the package's log lines; nil discards them.
	Logger *slog.Logger
	// Metrics receives the metrics listed in MetricDescs; nil discards them.
	Metrics core.Metrics
	// Clock schedules retries and timestamps pushes; nil means real time.
	// Tests pass a fake (pushmock.Clock) to step through retry delays.
	Clock Clock
}

// APNsConfig configures the APNs sender (github.com/sideshow/apns2).
// Authentication is by token (KeyFile, KeyID, TeamID) unless CertFile is
// set; setting both is an error.
type APNsConfig struct {
	// KeyFile is the .p8 signing key downloaded from Apple; KeyID is its key
	// id and TeamID the developer team id. The provider JWT (ES256, kid,
	// iss, iat) is renewed every 50 minutes.
	KeyFile, KeyID, TeamID string
	// CertFile is a client certificate with its key, as .p12/.pfx or PEM
	// (certificate and key in one file); CertPassword decrypts it.
	CertFile, CertPassword string

	// Topic is the apns-topic used when a registration carries none,
	// usually the app's bundle id.
	Topic string
	// PushType is "background" (default: silent, content-available 1,
	// priority 5) or "alert" (a visible alert, priority 10).
	PushType string
	// AlertTitle and AlertBody are shown in alert mode when a push carries
	// no preview. Defaults "" and "New message".
	AlertTitle, AlertBody string
	// Expiration is how long APNs keeps trying to deliver a push to an
	// offline device (apns-expiration). Default 1 h.
	Expiration time.Duration

	// Endpoint replaces both the production and the development host
	// (e.g. "https://127.0.0.1:4443"), for tests.
	Endpoint string
	// DevelopmentEndpoint replaces the development host only (sandbox
	// registrations), for tests that check the routing; default Endpoint.
	DevelopmentEndpoint string
	// RootCAs verifies the server's certificate; nil means the system
	// roots. Tests pass the mock's (pushmock.APNs.RootCAs).
	RootCAs *x509.CertPool
}

// FCMConfig configures the FCM sender (firebase.google.com/go/v4/messaging,
// HTTP v1 API).
type FCMConfig struct {
	// CredentialsFile is the service-account JSON key of the Firebase
	// project. Required unless Endpoint is set.
	CredentialsFile string
	// ProjectID is the Firebase project; default: the project_id of
	// CredentialsFile. Required when there is no CredentialsFile.
	ProjectID string
	// Priority is the Android message priority, "high" (default) or
	// "normal".
	Priority string
	// TTL is how long FCM keeps a message for an offline device. Default 1 h.
	TTL time.Duration
	// Notification adds a visible notification to the data message
	// (NotificationTitle/Body, or the preview); false (default) sends
	// data-only messages that the app handles itself.
	Notification bool
	// NotificationTitle and NotificationBody are shown when Notification is
	// on and a push carries no preview. Defaults "" and "New message".
	NotificationTitle, NotificationBody string

	// Endpoint replaces the FCM v1 base URL, "https://fcm.googleapis.com/v1",
	// for tests: the SDK posts to Endpoint + "/projects/{project}/messages:send".
	// With Endpoint and no CredentialsFile, requests carry no credentials.
	Endpoint string
	// RootCAs verifies the server's (and the token endpoint's) certificate;
	// nil means the system roots.
	RootCAs *x509.CertPool
}

// Clock is the time source for retries. Implementations must be safe for
// concurrent use.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f on its own goroutine once d has elapsed, unless the
	// returned Timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call; it reports whether it did.
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Push types (APNsConfig.PushType).
const (
	PushTypeBackground = "background"
	PushTypeAlert      = "alert"
)

// Android priorities (FCMConfig.Priority).
const (
	PriorityHigh   = "high"
	PriorityNormal = "normal"
)

// Defaults.
const (
	DefaultWorkers     = 16
	DefaultMaxQueued   = 100_000
	DefaultRetryMin    = time.Second
	DefaultRetryMax    = 5 * time.Minute
	DefaultMaxAttempts = 8
	DefaultSendTimeout = 30 * time.Second
	DefaultExpiration  = time.Hour
	DefaultTTL         = time.Hour
	defaultAlertBody   = "New message"
)

// maxRetryAfter caps a provider's Retry-After.
const maxRetryAfter = time.Hour

func populateConfig(c Config) (Config, error) {
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = DefaultMaxQueued
	}
	if c.RetryMin == 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = DefaultSendTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = core.NopMetrics{}
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	switch {
	case c.Workers < 0:
		return c, errors.New("push: Workers must not be negative")
	case c.MaxQueued < 0:
		return c, errors.New("push: MaxQueued must not be negative")
	case c.RetryMin < 0 || c.RetryMax < c.RetryMin:
		return c, fmt.Errorf("push: want 0 < RetryMin (%v) <= RetryMax (%v)", c.RetryMin, c.RetryMax)
	case c.MaxAttempts < 0:
		return c, errors.New("push: MaxAttempts must not be negative")
	case c.SendTimeout < 0:
		return c, errors.New("push: SendTimeout must not be negative")
	}
	if c.APNs != nil {
		a := *c.APNs
		if a.PushType == "" {
			a.PushType = PushTypeBackground
		}
		if a.AlertBody == "" {
			a.AlertBody = defaultAlertBody
		}
		if a.Expiration == 0 {
			a.Expiration = DefaultExpiration
		}
		switch {
		case a.PushType != PushTypeBackground && a.PushType != PushTypeAlert:
			return c, fmt.Errorf("push: APNs PushType %q: want background or alert", a.PushType)
		case a.Expiration < 0:
			return c, errors.New("push: APNs Expiration must not be negative")
		case a.CertFile != "" && a.KeyFile != "":
			return c, errors.New("push: APNs: set KeyFile (token auth) or CertFile (certificate auth), not both")
		case a.CertFile == "" && a.KeyFile == "":
			return c, errors.New("push: APNs: KeyFile (with KeyID and TeamID) or CertFile is required")
		case a.KeyFile != "" && (a.KeyID == "" || a.TeamID == ""):
			return c, errors.New("push: APNs token auth needs KeyID and TeamID")
		}
		c.APNs = &a
	}
	if c.FCM != nil {
		f := *c.FCM
		if f.Priority == "" {
			f.Priority = PriorityHigh
		}
		if f.TTL == 0 {
			f.TTL = DefaultTTL
		}
		if f.NotificationBody == "" {
			f.NotificationBody = defaultAlertBody
		}
		switch {
		case f.Priority != PriorityHigh && f.Priority != PriorityNormal:
			return c, fmt.Errorf("push: FCM Priority %q: want high or normal", f.Priority)
		case f.TTL < 0:
			return c, errors.New("push: FCM TTL must not be negative")
		case f.CredentialsFile == "" && f.Endpoint == "":
			return c, errors.New("push: FCM CredentialsFile is required")
		case f.CredentialsFile == "" && f.ProjectID == "":
			return c, errors.New("push: FCM ProjectID is required without a CredentialsFile")
		}
		c.FCM = &f
	}
	return c, nil
}
