package push_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/internal/pushmock"
	"github.com/ternhq/tern/push"
)

func TestAPNsBackgroundPush(t *testing.T) {
	f := newFixture(t, nil)
	start := f.clock.Now()
	f.svc.Push(iosPush("a", 41))
	f.svc.Push(iosPush("b", 7))
	reqs := f.apnsRequests(2)
	f.metrics.wait(t, push.MetricAPNsResults, "ok", 2)
	byToken := map[string]pushmock.APNsRequest{}
	for _, r := range reqs {
		byToken[r.Token] = r
	}
	for dev, head := range map[string]float64{"a": 41, "b": 7} {
		r, ok := byToken[iosToken(dev)]
		if !ok {
			t.Fatalf("no request for device %s; got %v", dev, tokens(reqs, apnsToken))
		}
		if r.Status != 200 || r.Auth != "token" {
			t.Errorf("%s: answered %d %s, auth %q", dev, r.Status, r.Reason, r.Auth)
		}
		if r.Topic != topic || r.PushType != "background" || r.Priority != 5 || r.CollapseID != "tern-"+dev {
			t.Errorf("%s: topic %q push-type %q priority %d collapse-id %q", dev, r.Topic, r.PushType, r.Priority, r.CollapseID)
		}
		if want := start.Add(push.DefaultExpiration).Unix(); r.Expiration != want {
			t.Errorf("%s: apns-expiration %d, want %d", dev, r.Expiration, want)
		}
		a := aps(t, r)
		if a["content-available"] != float64(1) || a["alert"] != nil || a["sound"] != nil {
			t.Errorf("%s: aps %v, want only content-available 1", dev, a)
		}
		if got := tern(t, r); got["seq"] != head || len(got) != 1 {
			t.Errorf("%s: tern %v, want {seq: %v} and no preview", dev, got, head)
		}
	}
}

func TestAPNsAlertPush(t *testing.T) {
	f := newFixture(t, func(c *push.Config) {
		c.APNs.PushType = push.PushTypeAlert
		c.APNs.AlertTitle = "Tern"
	})
	f.svc.Push(iosPush("plain", 3))
	withPreview := iosPush("preview", 4)
	withPreview.Preview = &core.Entry{Seq: 4, From: "alice", Group: "climbers", Body: []byte("on the ridge")}
	f.svc.Push(withPreview)
	binary := iosPush("binary", 5)
	binary.Preview = &core.Entry{Seq: 5, From: "bob", Body: []byte{0xff, 0xfe, 0x00}}
	f.svc.Push(binary)
	reqs := f.apnsRequests(3)
	for _, r := range reqs {
		if r.Status != 200 || r.PushType != "alert" || r.Priority != 10 {
			t.Errorf("%s: %d %s push-type %q priority %d", r.Token, r.Status, r.Reason, r.PushType, r.Priority)
		}
		a, tr := aps(t, r), tern(t, r)
		alert, _ := a["alert"].(map[string]any)
		if a["content-available"] != nil {
			t.Errorf("%s: alert push has content-available", r.Token)
		}
		switch r.Token {
		case iosToken("plain"):
			if alert["title"] != "Tern" || alert["body"] != "New message" || len(tr) != 1 || tr["seq"] != float64(3) {
				t.Errorf("plain: alert %v tern %v", alert, tr)
			}
		case iosToken("preview"):
			if alert["title"] != "alice" || alert["subtitle"] != "climbers" || alert["body"] != "on the ridge" {
				t.Errorf("preview: alert %v", alert)
			}
			if tr["seq"] != float64(4) || tr["from"] != "alice" || tr["group"] != "climbers" || tr["text"] != "on the ridge" {
				t.Errorf("preview: tern %v", tr)
			}
		case iosToken("binary"):
			if alert["title"] != "bob" || alert["body"] != "New message" || tr["text"] != nil {
				t.Errorf("binary body: alert %v tern %v, want no text", alert, tr)
			}
		}
	}
}

func TestAPNsPreviewInBackgroundPayload(t *testing.T) {
	f := newFixture(t, nil)
	req := iosPush("a", 9)
	req.Preview = &core.Entry{Seq: 9, From: "carol", Body: []byte(strings.Repeat("é", 1000))}
	f.svc.Push(req)
	r := f.apnsRequests(1)[0]
	if a := aps(t, r); a["alert"] != nil {
		t.Errorf("background push has an alert: %v", a)
	}
	tr := tern(t, r)
	text, _ := tr["text"].(string)
	if tr["from"] != "carol" || len(text) != 1024 || text != strings.Repeat("é", 512) {
		t.Errorf("tern from %v, text of %d bytes; want carol and the text cut at 1024 bytes on a rune boundary", tr["from"], len(text))
	}
}

func TestAPNsSandboxRouting(t *testing.T) {
	key, err := pushmock.NewAPNsKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	prod := pushmock.NewAPNs(t, pushmock.APNsOptions{Key: key, Topics: []string{topic}})
	dev := pushmock.NewAPNs(t, pushmock.APNsOptions{Key: key, Topics: []string{topic}})
	roots := prod.RootCAs()
	roots.AddCert(dev.Certificate())
	svc, err := push.New(push.Config{APNs: &push.APNsConfig{
		KeyFile: key.Path, KeyID: key.KeyID, TeamID: key.TeamID,
		Endpoint: prod.URL, DevelopmentEndpoint: dev.URL, RootCAs: roots,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	sandboxed := iosPush("sandboxed", 1)
	sandboxed.Reg.Sandbox = true
	svc.Push(sandboxed)
	svc.Push(iosPush("production", 1))
	if r, err := dev.WaitRequests(1); err != nil || r[0].Token != iosToken("sandboxed") || r[0].Status != 200 {
		t.Errorf("development server got %v, %v; want the sandbox registration", r, err)
	}
	if r, err := prod.WaitRequests(1); err != nil || r[0].Token != iosToken("production") || r[0].Status != 200 {
		t.Errorf("production server got %v, %v; want the production registration", r, err)
	}
}

func TestAPNsCertificateAuth(t *testing.T) {
	dir := t.TempDir()
	cert, err := pushmock.NewAPNsCert(dir, topic)
	if err != nil {
		t.Fatal(err)
	}
	m := pushmock.NewAPNs(t, pushmock.APNsOptions{ClientCAs: cert.CA, Topics: []string{topic}})
	svc, err := push.New(push.Config{APNs: &push.APNsConfig{
		CertFile: cert.Path, Topic: topic, Endpoint: m.URL, RootCAs: m.RootCAs(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	req := iosPush("a", 2)
	req.Reg.Topic = "" // the configured topic applies
	svc.Push(req)
	r, err := m.WaitRequests(1)
	if err != nil {
		t.Fatal(err)
	}
	if r[0].Auth != "certificate" || r[0].Status != 200 || r[0].Topic != topic || r[0].Header.Get("authorization") != "" {
		t.Errorf("got auth %q status %d topic %q authorization %q", r[0].Auth, r[0].Status, r[0].Topic, r[0].Header.Get("authorization"))
	}
}

func TestAPNsLongCollapseIDIsHashed(t *testing.T) {
	f := newFixture(t, nil)
	req := iosPush("a", 1)
	req.CollapseID = strings.Repeat("x", 100)
	f.svc.Push(req)
	r := f.apnsRequests(1)[0]
	if r.Status != 200 || len(r.CollapseID) != 64 {
		t.Errorf("status %d %s, collapse id %q; want 200 and 64 bytes", r.Status, r.Reason, r.CollapseID)
	}
}

func TestAPNsMalformedTokenIsInvalid(t *testing.T) {
	f := newFixture(t, nil)
	req := iosPush("a", 1)
	req.Reg.Token = "not/hex?x=1"
	f.svc.Push(req)
	if c := f.invalidCall(); c.token != req.Reg.Token || c.reason != "malformed_token" {
		t.Errorf("OnInvalidToken(%+v), want the token with reason malformed_token", c)
	}
	f.svc.Push(iosPush("b", 1))
	if r := f.apnsRequests(1); r[0].Token != iosToken("b") {
		t.Errorf("the malformed token reached the server: %v", tokens(r, apnsToken))
	}
}

// TestAPNsErrors runs each APNs answer through the Service and checks what
// follows: a dead token is reported, a transient failure is retried, a
// rejected push is dropped.
func TestAPNsErrors(t *testing.T) {
	cases := []struct {
		name    string
		resp    pushmock.APNsResponse
		reason  string // results label
		invalid bool   // OnInvalidToken is called
		retry   bool
	}{
		{"unregistered", pushmock.APNsUnregistered, "unregistered", true, false},
		{"bad device token", pushmock.APNsBadDeviceToken, "bad_device_token", true, false},
		{"not for topic", pushmock.APNsTokenNotForTopic, "device_token_not_for_topic", true, false},
		{"too many requests", pushmock.APNsTooManyRequests, "too_many_requests", false, true},
		{"internal", pushmock.APNsInternalServerError, "internal_server_error", false, true},
		{"unavailable", pushmock.APNsServiceUnavailable, "service_unavailable", false, true},
		{"payload too large", pushmock.APNsResponse{Status: 413, Reason: "PayloadTooLarge"}, "payload_too_large", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			req := iosPush("a", 5)
			f.apns.Script(req.Reg.Token, tc.resp)
			f.svc.Push(req)
			f.metrics.wait(t, push.MetricAPNsResults, tc.reason, 1)
			if tc.invalid {
				if c := f.invalidCall(); c.user != req.User || c.device != req.Device || c.token != req.Reg.Token || c.reason != tc.reason {
					t.Errorf("OnInvalidToken(%+v)", c)
				}
			}
			if tc.retry {
				f.pending(1)
				if got := f.metrics.get(push.MetricAPNsRetries, tc.reason); got != 1 {
					t.Errorf("retries{%s} = %v, want 1", tc.reason, got)
				}
				f.clock.Advance(push.DefaultRetryMin)
				if r := f.apnsRequests(2); r[1].Status != 200 {
					t.Errorf("retry answered %d", r[1].Status)
				}
				f.metrics.wait(t, push.MetricAPNsResults, "ok", 1)
				return
			}
			// No retry: a second device's push goes through, and nothing
			// was scheduled for the first.
			f.svc.Push(iosPush("b", 1))
			r := f.apnsRequests(2)
			f.metrics.wait(t, push.MetricAPNsResults, "ok", 1)
			if len(f.clock.Pending()) != 0 || f.apns.Count() != 2 || r[1].Token != iosToken("b") {
				t.Errorf("pending %v, requests %v: want no retry of a", f.clock.Pending(), tokens(f.apns.Requests(), apnsToken))
			}
		})
	}
}

func TestAPNsRetryAfter(t *testing.T) {
	f := newFixture(t, nil)
	req := iosPush("a", 1)
	f.apns.Script(req.Reg.Token, pushmock.APNsResponse{Status: 429, Reason: "TooManyRequests", RetryAfter: "30"})
	f.svc.Push(req)
	if d := f.pending(1); d[0] != 30*time.Second {
		t.Fatalf("retry in %v, want 30s (Retry-After)", d[0])
	}
	f.clock.Advance(29*time.Second + 999*time.Millisecond)
	if n := len(f.clock.Pending()); n != 1 || f.apns.Count() != 1 {
		t.Fatalf("before 30 s: %d timers pending, %d requests; want the retry still waiting", n, f.apns.Count())
	}
	f.clock.Advance(time.Millisecond)
	if r := f.apnsRequests(2); r[1].Token != req.Reg.Token || r[1].Status != 200 {
		t.Errorf("retry: %v", r[1])
	}
}

func TestAPNsBackoffThenSuccess(t *testing.T) {
	f := newFixture(t, nil)
	req := iosPush("a", 1)
	f.apns.Script(req.Reg.Token, pushmock.APNsInternalServerError, pushmock.APNsInternalServerError)
	f.svc.Push(req)
	for i, max := range []time.Duration{time.Second, 2 * time.Second} {
		d := f.pending(1)[0]
		if d < max/2 || d > max {
			t.Fatalf("retry %d in %v, want [%v, %v]", i+1, d, max/2, max)
		}
		f.clock.Advance(d - time.Millisecond)
		if f.apns.Count() != i+1 {
			t.Fatalf("retry %d sent before its delay", i+1)
		}
		f.clock.Advance(time.Millisecond)
		f.apnsRequests(i + 2)
	}
	f.metrics.wait(t, push.MetricAPNsResults, "ok", 1)
	if got := f.metrics.get(push.MetricAPNsResults, "internal_server_error"); got != 2 {
		t.Errorf("internal_server_error results = %v, want 2", got)
	}
	if len(f.clock.Pending()) != 0 || f.apns.Count() != 3 {
		t.Errorf("after success: pending %v, %d requests; want nothing more", f.clock.Pending(), f.apns.Count())
	}
}

func TestGiveUpAfterMaxAttempts(t *testing.T) {
	f := newFixture(t, func(c *push.Config) { c.MaxAttempts = 3 })
	req := iosPush("a", 1)
	f.apns.Script(req.Reg.Token, pushmock.APNsInternalServerError, pushmock.APNsInternalServerError, pushmock.APNsInternalServerError)
	f.svc.Push(req)
	for i := range 2 {
		f.clock.Advance(f.pending(1)[0])
		f.apnsRequests(i + 2)
	}
	f.metrics.wait(t, push.MetricDropped, "gave_up", 1)
	if len(f.clock.Pending()) != 0 || f.apns.Count() != 3 {
		t.Errorf("pending %v, %d requests; want 3 attempts and no more", f.clock.Pending(), f.apns.Count())
	}
}

// TestAPNsAuthError uses a key the server does not know: APNs answers 403
// InvalidProviderToken. It is logged at Error once per cause per minute,
// counted, and retried only after the long backoff.
func TestAPNsAuthError(t *testing.T) {
	f := newFixture(t, nil)
	other, err := pushmock.NewAPNsKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := push.New(push.Config{
		APNs: &push.APNsConfig{
			KeyFile: other.Path, KeyID: other.KeyID, TeamID: other.TeamID,
			Endpoint: f.apns.URL, RootCAs: f.apns.RootCAs(),
		},
		Clock: f.clock, Metrics: f.metrics, Logger: slog.New(f.logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	svc.Push(iosPush("a", 1))
	svc.Push(iosPush("b", 1))
	f.metrics.wait(t, push.MetricAPNsResults, "invalid_provider_token", 2)
	for _, r := range f.apnsRequests(2) {
		if r.Status != 403 || r.Reason != "InvalidProviderToken" {
			t.Errorf("mock answered %d %s, want 403 InvalidProviderToken", r.Status, r.Reason)
		}
	}
	for _, d := range f.pending(2) {
		if d < push.DefaultRetryMax/2 {
			t.Errorf("auth failure retried in %v, want the long backoff (>= %v)", d, push.DefaultRetryMax/2)
		}
	}
	if n := f.logs.count(slog.LevelError, "credentials"); n != 1 {
		t.Errorf("%d Error lines for two refusals with the same cause, want 1", n)
	}
	// A minute later the same cause is logged again.
	f.clock.Advance(push.DefaultRetryMax)
	f.metrics.wait(t, push.MetricAPNsResults, "invalid_provider_token", 4)
	if n := f.logs.count(slog.LevelError, "credentials"); n != 2 {
		t.Errorf("%d Error lines after the minute, want 2", n)
	}
}

func TestAPNsBadTopicIsLoud(t *testing.T) {
	f := newFixture(t, nil)
	req := iosPush("a", 1)
	req.Reg.Topic = "com.example.other"
	f.svc.Push(req)
	f.metrics.wait(t, push.MetricAPNsResults, "topic_disallowed", 1)
	if d := f.pending(1)[0]; d < push.DefaultRetryMax/2 {
		t.Errorf("retry in %v, want the long backoff", d)
	}
	if n := f.logs.count(slog.LevelError, "credentials or configuration"); n != 1 {
		t.Errorf("%d Error lines, want 1", n)
	}
}

func TestExpirationFollowsConfig(t *testing.T) {
	f := newFixture(t, func(c *push.Config) { c.APNs.Expiration = 10 * time.Minute })
	f.svc.Push(iosPush("a", 1))
	r := f.apnsRequests(1)[0]
	if want := f.clock.Now().Add(10 * time.Minute).Unix(); r.Expiration != want {
		t.Errorf("apns-expiration %s, want %d", strconv.FormatInt(r.Expiration, 10), want)
	}
}
