package push_test

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/internal/pushmock"
	"github.com/ternhq/tern/push"
)

func TestFCMDataMessage(t *testing.T) {
	f := newFixture(t, nil)
	f.svc.Push(androidPush("a", 12))
	withPreview := androidPush("b", 13)
	withPreview.Preview = &core.Entry{Seq: 13, From: "alice", Group: "climbers", Body: []byte("summit at noon")}
	f.svc.Push(withPreview)
	reqs := f.fcmRequests(2)
	f.metrics.wait(t, push.MetricFCMResults, "ok", 2)
	for _, r := range reqs {
		m := r.Message
		if r.Status != 200 || r.Project != f.fcm.Project() || r.ValidateOnly {
			t.Errorf("%s: status %d %s project %q validate_only %v", m.Token, r.Status, r.ErrorCode, r.Project, r.ValidateOnly)
		}
		if r.Header.Get("Authorization") != "" {
			t.Errorf("%s: credentials sent to a test endpoint: %q", m.Token, r.Header.Get("Authorization"))
		}
		if m.Notification != nil {
			t.Errorf("%s: notification %+v in a data-only message", m.Token, m.Notification)
		}
		a := m.Android
		dev := strings.TrimPrefix(m.Token, "fcm:")
		if a == nil || a.CollapseKey != "tern-"+dev || a.Priority != "high" || a.TTL != "3600s" {
			t.Errorf("%s: android %+v, want collapse_key tern-%s, priority high, ttl 3600s", m.Token, a, dev)
		}
		want := map[string]string{"tern_seq": "12"}
		if dev == "b" {
			want = map[string]string{"tern_seq": "13", "tern_from": "alice", "tern_group": "climbers", "tern_text": "summit at noon"}
		}
		if !maps.Equal(m.Data, want) {
			t.Errorf("%s: data %v, want %v", m.Token, m.Data, want)
		}
	}
}

func TestFCMNotificationMode(t *testing.T) {
	f := newFixture(t, func(c *push.Config) {
		c.FCM.Notification = true
		c.FCM.NotificationTitle = "Tern"
		c.FCM.Priority = push.PriorityNormal
		c.FCM.TTL = 10 * time.Minute
	})
	f.svc.Push(androidPush("a", 1))
	withPreview := androidPush("b", 2)
	withPreview.Preview = &core.Entry{Seq: 2, From: "alice", Body: []byte("hi")}
	f.svc.Push(withPreview)
	for _, r := range f.fcmRequests(2) {
		m := r.Message
		if m.Android == nil || m.Android.Priority != "normal" || m.Android.TTL != "600s" {
			t.Errorf("%s: android %+v", m.Token, m.Android)
		}
		want := pushmock.FCMNotification{Title: "Tern", Body: "New message"}
		if m.Token == "fcm:b" {
			want = pushmock.FCMNotification{Title: "alice", Body: "hi"}
		}
		if m.Notification == nil || *m.Notification != want {
			t.Errorf("%s: notification %+v, want %+v", m.Token, m.Notification, want)
		}
		if m.Data["tern_seq"] == "" {
			t.Errorf("%s: no tern_seq in %v", m.Token, m.Data)
		}
	}
}

// TestFCMServiceAccount runs the production credential path: a
// service-account file whose token_uri is the mock's, a JWT-bearer grant,
// and sends that carry the access token.
func TestFCMServiceAccount(t *testing.T) {
	m := pushmock.NewFCM(t, pushmock.FCMOptions{Project: "tern-prod", RequireAuth: true})
	path, err := m.WriteServiceAccount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := push.New(push.Config{FCM: &push.FCMConfig{CredentialsFile: path, Endpoint: m.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	for _, d := range []string{"a", "b", "c"} {
		svc.Push(androidPush(d, 1))
	}
	reqs, err := m.WaitRequests(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if r.Status != 200 || r.Project != "tern-prod" || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ya29.mock-") {
			t.Errorf("status %d %s project %q authorization %q", r.Status, r.ErrorCode, r.Project, r.Header.Get("Authorization"))
		}
	}
	if n := m.TokenGrants(); n < 1 || n > 3 {
		t.Errorf("%d token grants for 3 sends", n)
	}
}

// TestFCMTokenEndpointRefusal: the token endpoint refuses the service
// account's assertion (a revoked key): loud, long backoff, nothing sent.
func TestFCMTokenEndpointRefusal(t *testing.T) {
	f := newFixture(t, nil)
	m := pushmock.NewFCM(t, pushmock.FCMOptions{RequireAuth: true})
	revoked, err := m.WriteServiceAccount(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriteServiceAccount(t.TempDir()); err != nil { // the mock now knows only the new key
		t.Fatal(err)
	}
	svc, err := push.New(push.Config{
		FCM:   &push.FCMConfig{CredentialsFile: revoked, Endpoint: m.Endpoint()},
		Clock: f.clock, Metrics: f.metrics, Logger: slog.New(f.logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	svc.Push(androidPush("a", 1))
	f.metrics.wait(t, push.MetricFCMResults, "access_token", 1)
	if d := f.pending(1)[0]; d < push.DefaultRetryMax/2 {
		t.Errorf("retry in %v, want the long backoff", d)
	}
	if n := f.logs.count(slog.LevelError, "credentials"); n != 1 || m.Count() != 0 {
		t.Errorf("%d Error lines, %d sends; want 1 and 0", n, m.Count())
	}
}

func TestFCMErrors(t *testing.T) {
	cases := []struct {
		name    string
		resp    pushmock.FCMResponse
		reason  string
		invalid bool
		retry   bool
	}{
		{"unregistered", pushmock.FCMUnregistered, "unregistered", true, false},
		{"sender id mismatch", pushmock.FCMSenderMismatch, "sender_id_mismatch", true, false},
		{"invalid token with field violation", pushmock.FCMInvalidToken, "invalid_token", true, false},
		{"invalid token in prose only", pushmock.FCMResponse{ErrorCode: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token"}, "invalid_token", true, false},
		{"invalid argument about the message", pushmock.FCMInvalidArgument, "invalid_argument", false, false},
		{"quota exceeded", pushmock.FCMQuotaExceeded, "quota_exceeded", false, true},
		{"unavailable", pushmock.FCMUnavailable, "unavailable", false, true},
		{"internal", pushmock.FCMInternal, "internal", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			req := androidPush("a", 5)
			f.fcm.Script(req.Reg.Token, tc.resp)
			f.svc.Push(req)
			f.metrics.wait(t, push.MetricFCMResults, tc.reason, 1)
			if tc.invalid {
				if c := f.invalidCall(); c.token != req.Reg.Token || c.reason != tc.reason {
					t.Errorf("OnInvalidToken(%+v)", c)
				}
			}
			if tc.retry {
				f.pending(1)
				if f.fcm.Count() != 1 {
					t.Fatalf("%d requests before the retry: the SDK retried on its own", f.fcm.Count())
				}
				f.clock.Advance(push.DefaultRetryMin)
				f.fcmRequests(2)
				f.metrics.wait(t, push.MetricFCMResults, "ok", 1)
				return
			}
			f.svc.Push(androidPush("b", 1))
			f.fcmRequests(2)
			f.metrics.wait(t, push.MetricFCMResults, "ok", 1)
			if len(f.clock.Pending()) != 0 || f.fcm.Count() != 2 {
				t.Errorf("pending %v, %d requests: want no retry", f.clock.Pending(), f.fcm.Count())
			}
		})
	}
}

// TestFCMRetryAfter: FCM's 503 may carry Retry-After. The firebase SDK
// would sleep and retry by itself; the Service must wait on its own clock.
func TestFCMRetryAfter(t *testing.T) {
	for _, resp := range []pushmock.FCMResponse{
		{ErrorCode: "UNAVAILABLE", RetryAfter: "30"},
		{ErrorCode: "QUOTA_EXCEEDED", RetryAfter: "30"},
	} {
		t.Run(resp.ErrorCode, func(t *testing.T) {
			f := newFixture(t, nil)
			req := androidPush("a", 1)
			f.fcm.Script(req.Reg.Token, resp)
			f.svc.Push(req)
			if d := f.pending(1)[0]; d != 30*time.Second {
				t.Fatalf("retry in %v, want 30s", d)
			}
			f.clock.Advance(29 * time.Second)
			if f.fcm.Count() != 1 {
				t.Fatalf("%d requests before Retry-After passed", f.fcm.Count())
			}
			f.clock.Advance(time.Second)
			if r := f.fcmRequests(2); r[1].Status != 200 {
				t.Errorf("retry answered %d", r[1].Status)
			}
		})
	}
}

func TestFCMAuthErrors(t *testing.T) {
	for _, tc := range []struct {
		resp   pushmock.FCMResponse
		reason string
	}{
		{pushmock.FCMThirdPartyAuth, "third_party_auth_error"},
		{pushmock.FCMPermission, "permission_denied"},
		{pushmock.FCMResponse{ErrorCode: "UNAUTHENTICATED"}, "unauthenticated"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			f := newFixture(t, nil)
			req := androidPush("a", 1)
			f.fcm.Script(req.Reg.Token, tc.resp)
			f.svc.Push(req)
			f.metrics.wait(t, push.MetricFCMResults, tc.reason, 1)
			if d := f.pending(1)[0]; d < push.DefaultRetryMax/2 {
				t.Errorf("retry in %v, want the long backoff", d)
			}
			if n := f.logs.count(slog.LevelError, "credentials"); n != 1 {
				t.Errorf("%d Error lines, want 1", n)
			}
		})
	}
}

func TestFCMWrongProjectIsLoud(t *testing.T) {
	f := newFixture(t, func(c *push.Config) { c.FCM.ProjectID = "someone-else" })
	f.svc.Push(androidPush("a", 1))
	f.metrics.wait(t, push.MetricFCMResults, "http_4xx", 1)
	if d := f.pending(1)[0]; d < push.DefaultRetryMax/2 {
		t.Errorf("retry in %v, want the long backoff", d)
	}
	if n := f.logs.count(slog.LevelError, "credentials or configuration"); n != 1 {
		t.Errorf("%d Error lines, want 1", n)
	}
}

// TestFCMNetworkErrorIsRetried sends to a server that hangs up on every
// connection. The firebase SDK would retry a network error four times with
// real sleeps; the Service must make one attempt and schedule its retry.
func TestFCMNetworkErrorIsRetried(t *testing.T) {
	f := newFixture(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	svc, err := push.New(push.Config{
		FCM:   &push.FCMConfig{ProjectID: "p", Endpoint: "http://" + ln.Addr().String() + "/v1"},
		Clock: f.clock, Metrics: f.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	svc.Push(androidPush("a", 1))
	f.metrics.wait(t, push.MetricFCMResults, "network", 1)
	if d := f.pending(1)[0]; d > time.Second {
		t.Errorf("retry in %v, want the first backoff step", d)
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("%d connections for one attempt: the SDK retried on its own", n)
	}
	f.clock.Advance(time.Second)
	f.metrics.wait(t, push.MetricFCMResults, "network", 2)
	if n := accepts.Load(); n != 2 {
		t.Errorf("%d connections after one retry, want 2", n)
	}
}
