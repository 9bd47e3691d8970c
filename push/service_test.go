package push_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/internal/pushmock"
	"github.com/ternhq/tern/push"
)

// blockWorker makes the Service's only worker busy with a held send to
// device "blocker" and returns the function that lets it finish.
func (f *fixture) blockWorker() (release func()) {
	f.t.Helper()
	hold := make(chan struct{})
	req := iosPush("blocker", 1)
	f.apns.Script(req.Reg.Token, pushmock.APNsResponse{Status: 200, Hold: hold})
	f.svc.Push(req)
	f.apnsRequests(1)
	return func() { close(hold) }
}

func oneWorker(c *push.Config) { c.Workers = 1 }

func TestCoalescing(t *testing.T) {
	f := newFixture(t, oneWorker)
	release := f.blockWorker()
	for head := core.Seq(1); head <= 10; head++ {
		f.svc.Push(iosPush("a", head))
	}
	if got := f.metrics.gauge(push.MetricQueued); got != 1 {
		t.Errorf("queued gauge %v with ten pushes for one device, want 1", got)
	}
	release()
	f.svc.Push(iosPush("z", 1)) // queued behind a: its arrival proves a went first
	reqs := f.apnsRequests(3)
	f.metrics.wait(t, push.MetricAPNsResults, "ok", 3)
	if got := tokens(reqs, apnsToken); got[1] != iosToken("a") || got[2] != iosToken("z") || f.apns.Count() != 3 {
		t.Fatalf("requests to %v, want blocker, a, z", got)
	}
	if seq := tern(t, reqs[1])["seq"]; seq != float64(10) {
		t.Errorf("the one push for a announces seq %v, want the newest, 10", seq)
	}
	if got := f.metrics.get(push.MetricCoalesced, ""); got != 9 {
		t.Errorf("coalesced = %v, want 9", got)
	}
}

func TestCancelBeforeSend(t *testing.T) {
	f := newFixture(t, oneWorker)
	release := f.blockWorker()
	f.svc.Push(iosPush("a", 1))
	f.svc.Cancel("u-a", "a")
	f.svc.Push(iosPush("z", 1))
	release()
	f.apnsRequests(2)
	f.metrics.wait(t, push.MetricAPNsResults, "ok", 2)
	if reqs := f.apns.Requests(); containsToken(reqs, iosToken("a")) || len(reqs) != 2 {
		t.Errorf("requests to %v: the cancelled push was sent", tokens(reqs, apnsToken))
	}
	if got := f.metrics.get(push.MetricCancelled, ""); got != 1 {
		t.Errorf("cancelled = %v, want 1", got)
	}
}

func TestCancelStopsRetry(t *testing.T) {
	f := newFixture(t, nil)
	req := iosPush("a", 1)
	f.apns.Script(req.Reg.Token, pushmock.APNsInternalServerError)
	f.svc.Push(req)
	f.pending(1)
	f.svc.Cancel(req.User, req.Device)
	if p := f.clock.Pending(); len(p) != 0 {
		t.Errorf("timers %v pending after Cancel", p)
	}
	f.clock.Advance(push.DefaultRetryMax)
	f.svc.Push(iosPush("z", 1))
	f.apnsRequests(2)
	if got := tokens(f.apns.Requests(), apnsToken); len(got) != 2 || got[1] != iosToken("z") {
		t.Errorf("requests to %v: the cancelled retry was sent", got)
	}
}

// TestCancelDuringSend: the send in flight completes, its failure is not
// retried.
func TestCancelDuringSend(t *testing.T) {
	f := newFixture(t, nil)
	hold := make(chan struct{})
	req := iosPush("a", 1)
	f.apns.Script(req.Reg.Token, pushmock.APNsResponse{Status: 500, Reason: "InternalServerError", Hold: hold})
	f.svc.Push(req)
	f.apnsRequests(1)
	f.svc.Cancel(req.User, req.Device)
	close(hold)
	f.metrics.wait(t, push.MetricAPNsResults, "internal_server_error", 1)
	f.svc.Push(iosPush("z", 1))
	f.apnsRequests(2)
	f.metrics.wait(t, push.MetricAPNsResults, "ok", 1)
	if p := f.clock.Pending(); len(p) != 0 {
		t.Errorf("retry scheduled for a cancelled push: %v", p)
	}
}

// TestPushDuringSend: a push that arrives while the device's previous push
// is on the wire is sent after it.
func TestPushDuringSend(t *testing.T) {
	f := newFixture(t, nil)
	hold := make(chan struct{})
	first := iosPush("a", 1)
	f.apns.Script(first.Reg.Token, pushmock.APNsResponse{Status: 200, Hold: hold})
	f.svc.Push(first)
	f.apnsRequests(1)
	f.svc.Push(iosPush("a", 2))
	f.svc.Push(iosPush("a", 3))
	close(hold)
	reqs := f.apnsRequests(2)
	f.metrics.wait(t, push.MetricAPNsResults, "ok", 2)
	if seq := tern(t, reqs[1])["seq"]; seq != float64(3) || f.apns.Count() != 2 {
		t.Errorf("second push announces %v (%d requests), want one more push with seq 3", seq, f.apns.Count())
	}
}

// TestRetryDoesNotBlockOthers: with a single worker, device a waits for a
// retry that the fake clock never releases, and device b is pushed at once.
func TestRetryDoesNotBlockOthers(t *testing.T) {
	for _, resp := range []pushmock.APNsResponse{
		pushmock.APNsInternalServerError,
		{Status: 429, Reason: "TooManyRequests", RetryAfter: "3600"},
		pushmock.APNsInvalidProviderToken,
	} {
		t.Run(resp.Reason, func(t *testing.T) {
			f := newFixture(t, oneWorker)
			a := iosPush("a", 1)
			f.apns.Script(a.Reg.Token, resp, resp, resp)
			f.svc.Push(a)
			f.pending(1)
			for _, d := range []string{"b", "c", "d"} {
				f.svc.Push(iosPush(d, 1))
			}
			f.metrics.wait(t, push.MetricAPNsResults, "ok", 3)
			if n := f.apns.Count(); n != 4 {
				t.Errorf("%d requests, want a once and b, c, d", n)
			}
			if got := f.metrics.gauge(push.MetricRetryWaiting); got != 1 {
				t.Errorf("retry_waiting gauge %v, want 1", got)
			}
		})
	}
}

func TestInvalidTokenDropsFollowingPushForSameToken(t *testing.T) {
	f := newFixture(t, nil)
	hold := make(chan struct{})
	req := iosPush("a", 1)
	f.apns.Script(req.Reg.Token, pushmock.APNsResponse{Status: 410, Reason: "Unregistered", Hold: hold})
	f.svc.Push(req)
	f.apnsRequests(1)
	f.svc.Push(iosPush("a", 2)) // same token, arrives while the first is on the wire
	close(hold)
	f.invalidCall()
	f.metrics.wait(t, push.MetricDropped, "invalid_token", 1)
	// A re-registered device with a new token is pushed again.
	again := iosPush("a", 3)
	again.Reg.Token = iosToken("a-new")
	f.svc.Push(again)
	reqs := f.apnsRequests(2)
	if reqs[1].Token != again.Reg.Token || f.apns.Count() != 2 {
		t.Errorf("requests to %v, want the dead token once, then the new token", tokens(reqs, apnsToken))
	}
}

func TestDisabledAndUnsupportedPlatforms(t *testing.T) {
	lg := &logs{}
	m := newMetrics()
	svc, err := push.New(push.Config{Metrics: m, Logger: slog.New(lg)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	for range 3 {
		svc.Push(iosPush("a", 1))
		svc.Push(androidPush("b", 1))
		svc.Push(core.PushRequest{User: "u", Device: "w", Reg: core.PushRegistration{Platform: core.PlatformWeb, Token: "t"}})
	}
	svc.Cancel("u-a", "a")
	if got := m.get(push.MetricDropped, "disabled"); got != 6 {
		t.Errorf("dropped{disabled} = %v, want 6", got)
	}
	if got := m.get(push.MetricDropped, "unsupported"); got != 3 {
		t.Errorf("dropped{unsupported} = %v, want 3", got)
	}
	if n := lg.count(slog.LevelInfo, "not configured"); n != 2 {
		t.Errorf("%d startup lines about disabled providers, want 2", n)
	}
	if n := lg.count(slog.LevelWarn, "dropping a push"); n != 3 {
		t.Errorf("%d first-drop lines, want 3 (ios, android, web once each)", n)
	}
}

func TestQueueFull(t *testing.T) {
	f := newFixture(t, func(c *push.Config) { c.Workers = 1; c.MaxQueued = 3 })
	release := f.blockWorker() // one entry: the blocker being sent
	f.svc.Push(iosPush("a", 1))
	f.svc.Push(iosPush("b", 1))
	f.svc.Push(iosPush("c", 1)) // fourth device: dropped
	f.svc.Push(iosPush("a", 2)) // replaces a queued push: accepted
	if got := f.metrics.get(push.MetricDropped, "queue_full"); got != 1 {
		t.Errorf("dropped{queue_full} = %v, want 1", got)
	}
	release()
	f.metrics.wait(t, push.MetricAPNsResults, "ok", 3)
	if reqs := f.apns.Requests(); containsToken(reqs, iosToken("c")) || len(reqs) != 3 {
		t.Errorf("requests to %v, want blocker, a, b", tokens(reqs, apnsToken))
	}
}

func TestCloseLetsInFlightSendFinish(t *testing.T) {
	f := newFixture(t, oneWorker)
	release := f.blockWorker()
	f.svc.Push(iosPush("queued", 1))
	closed := make(chan error, 1)
	go func() { closed <- f.svc.Close(context.Background()) }()
	// Close has begun when the queued push is counted as dropped.
	f.metrics.wait(t, push.MetricDropped, "closed", 1)
	f.svc.Push(iosPush("late", 1))
	f.metrics.wait(t, push.MetricDropped, "closed", 2)
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while a send was in flight", err)
	default:
	}
	release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := f.metrics.get(push.MetricAPNsResults, "ok"); got != 1 {
		t.Errorf("in-flight send: ok = %v, want 1", got)
	}
	if n := f.apns.Count(); n != 1 {
		t.Errorf("%d requests, want only the one in flight", n)
	}
	if err := checkNoLeaks(); err != nil {
		t.Error(err)
	}
}

func TestCloseDeadlineAbortsSend(t *testing.T) {
	f := newFixture(t, oneWorker)
	f.blockWorker() // never released
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.svc.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	if got := f.metrics.get(push.MetricAPNsResults, "aborted"); got != 1 {
		t.Errorf("aborted = %v, want 1", got)
	}
	if err := checkNoLeaks(); err != nil {
		t.Error(err)
	}
}

func TestCloseStopsPendingRetries(t *testing.T) {
	f := newFixture(t, nil)
	req := iosPush("a", 1)
	f.apns.Script(req.Reg.Token, pushmock.APNsInternalServerError)
	f.svc.Push(req)
	f.pending(1)
	if err := f.svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := f.clock.Pending(); len(p) != 0 {
		t.Errorf("timers %v pending after Close", p)
	}
	f.clock.Advance(time.Hour) // a stale timer would find the Service closed
	if n := f.apns.Count(); n != 1 {
		t.Errorf("%d requests after Close", n)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	key, err := pushmock.NewAPNsKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]push.Config{
		"no apns auth":         {APNs: &push.APNsConfig{}},
		"both apns auths":      {APNs: &push.APNsConfig{KeyFile: key.Path, KeyID: "k", TeamID: "t", CertFile: "c.pem"}},
		"token without ids":    {APNs: &push.APNsConfig{KeyFile: key.Path}},
		"missing key file":     {APNs: &push.APNsConfig{KeyFile: dir + "/nope.p8", KeyID: "k", TeamID: "t"}},
		"bad push type":        {APNs: &push.APNsConfig{KeyFile: key.Path, KeyID: "k", TeamID: "t", PushType: "voip"}},
		"fcm without creds":    {FCM: &push.FCMConfig{ProjectID: "p"}},
		"fcm without project":  {FCM: &push.FCMConfig{Endpoint: "http://127.0.0.1:1/v1"}},
		"fcm bad priority":     {FCM: &push.FCMConfig{ProjectID: "p", Endpoint: "http://127.0.0.1:1/v1", Priority: "urgent"}},
		"fcm creds not a file": {FCM: &push.FCMConfig{CredentialsFile: dir + "/nope.json"}},
		"retry bounds":         {RetryMin: time.Minute, RetryMax: time.Second},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			svc, err := push.New(cfg)
			if err == nil {
				svc.Close(context.Background())
				t.Fatal("New accepted the config")
			}
		})
	}
}
