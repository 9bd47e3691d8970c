package e2e

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/internal/pushmock"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/push"
	"github.com/ternhq/tern/wire"
)

// counters is a core.Metrics that remembers counters, for tests that wait
// on what the server decided.
type counters struct {
	mu sync.Mutex
	m  map[string]float64
}

func newCounters() *counters { return &counters{m: map[string]float64{}} }

func (c *counters) Add(name, label string, d float64) {
	c.mu.Lock()
	c.m[name+"/"+label] += d
	c.mu.Unlock()
}
func (c *counters) Observe(string, float64) {}
func (c *counters) Set(string, float64)     {}
func (c *counters) get(name, label string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name+"/"+label]
}

// waitCounter waits until a counter reaches want.
func (c *counters) wait(t testing.TB, name, label string, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for c.get(name, label) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s} = %v, want %v", name, label, c.get(name, label), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

const (
	iosToken = "5f2b9a7c0e4d3b1a9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a49382"
	topic    = "com.example.tern"
)

type pushRig struct {
	s    *testserver.Server
	apns *pushmock.APNs
	fcm  *pushmock.FCM
	m    *counters
	dir  string
}

func newPushRig(t *testing.T, dir string) *pushRig {
	t.Helper()
	key, err := pushmock.NewAPNsKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &pushRig{
		apns: pushmock.NewAPNs(t, pushmock.APNsOptions{Key: key, Topics: []string{topic}}),
		fcm:  pushmock.NewFCM(t, pushmock.FCMOptions{}),
		m:    newCounters(),
		dir:  dir,
	}
	r.start(t)
	return r
}

func (r *pushRig) start(t *testing.T) {
	t.Helper()
	pc := &push.Config{APNs: r.apns.PushConfig(), FCM: r.fcm.PushConfig(), RetryMin: 50 * time.Millisecond}
	s, err := testserver.New(testserver.Options{Dir: r.dir, Push: pc, Metrics: r.m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r.s = s
}

func iosReg() *wire.PushRegistration {
	return &wire.PushRegistration{Platform: wire.Platform_PLATFORM_IOS, Token: iosToken, Topic: topic}
}

// phone connects a device that registers reg in its Hello.
func (r *pushRig) phone(t *testing.T, user, device string, seq uint64, reg *wire.PushRegistration, in *inbox) *client.Client {
	return sdk(t, r.s, user, device, seq, func(c *client.Config) {
		c.Platform = reg.GetPlatform()
		c.Push = reg
		if in != nil {
			c.OnMessage = in.add
		}
	})
}

// TestPushAPNs: an offline iOS device gets exactly one (silent, collapsing)
// push for 10 messages, and none while it is connected in the foreground;
// after it connects and syncs, the next message pushes again. Issue #4
// acceptance #1 and #3.
func TestPushAPNs(t *testing.T) {
	r := newPushRig(t, t.TempDir())
	alice := sdk(t, r.s, "alice", "laptop", 0, nil)
	ctx := ctxT(t, 60*time.Second)
	in := newInbox(0)
	bob := r.phone(t, "bob", "iphone", 0, iosReg(), in)

	// Connected in the foreground: messages flow, nobody is pushed.
	sendMany(t, ctx, alice, "bob", 3, 1, "fg")
	in.wait(t, 3, 10*time.Second)
	r.m.wait(t, core.MetricPushDecisions, "foreground", 3)
	if n := r.apns.Count(); n != 0 {
		t.Fatalf("%d pushes while the device was connected in the foreground", n)
	}

	// Offline: 10 messages, one push.
	bob.Close()
	waitDetached(t, r.s, 1) // alice's session only
	sendMany(t, ctx, alice, "bob", 10, 1, "off")
	r.m.wait(t, core.MetricPushDecisions, "outstanding", 9)
	reqs, err := r.apns.WaitRequests(1)
	if err != nil {
		t.Fatal(err)
	}
	if n := r.apns.Count(); n != 1 {
		t.Fatalf("%d pushes for 10 messages to an offline device, want 1", n)
	}
	p := reqs[0]
	if p.Status != 200 || p.Token != iosToken || p.Topic != topic || p.PushType != "background" || p.Priority != 5 || p.CollapseID == "" || p.Auth != "token" {
		t.Fatalf("push: %+v", p)
	}
	if seq := p.JSON["tern"].(map[string]any)["seq"]; seq != float64(4) {
		t.Fatalf("the push announces seq %v, want 4 (the first message that found the device offline)", seq)
	}
	if aps := p.JSON["aps"].(map[string]any); aps["content-available"] != float64(1) || aps["alert"] != nil {
		t.Fatalf("not a silent push: %v", p.JSON)
	}
	if _, ok := p.JSON["tern"].(map[string]any)["text"]; ok {
		t.Fatalf("message content left the server without PushPreview: %v", p.JSON)
	}

	// The push wakes the app: it connects, syncs; the pending push clears.
	in2 := newInbox(3)
	bob = r.phone(t, "bob", "iphone", 3, iosReg(), in2)
	in2.wait(t, 10, 10*time.Second)
	r.m.wait(t, core.MetricPushDecisions, "cleared", 1)
	bob.Close()
	waitDetached(t, r.s, 1)
	// A new message after that is a new push.
	sendMany(t, ctx, alice, "bob", 1, 1, "again")
	if _, err := r.apns.WaitRequests(2); err != nil {
		t.Fatal(err)
	}
}

func waitDetached(t *testing.T, s *testserver.Server, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Core.Sessions() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions, want %d", s.Core.Sessions(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPushBackground: a session that says its app is in the background is
// pushed like an offline one.
func TestPushBackground(t *testing.T) {
	r := newPushRig(t, t.TempDir())
	alice := sdk(t, r.s, "alice", "laptop", 0, nil)
	bob := r.phone(t, "bob", "iphone", 0, iosReg(), nil)
	ctx := ctxT(t, 30*time.Second)
	if err := bob.SetAppState(ctx, wire.AppState_APP_STATE_BACKGROUND); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.apns.Count() == 0 && time.Now().Before(deadline) {
		sendMany(t, ctx, alice, "bob", 1, 1, "bg")
		time.Sleep(20 * time.Millisecond)
	}
	if r.apns.Count() != 1 {
		t.Fatalf("%d pushes to a device whose app is in the background, want 1", r.apns.Count())
	}
}

// TestPushFCM: an offline Android device is woken through FCM with the
// collapse key and a data payload. Issue #4 acceptance #2.
func TestPushFCM(t *testing.T) {
	r := newPushRig(t, t.TempDir())
	alice := sdk(t, r.s, "alice", "laptop", 0, nil)
	reg := &wire.PushRegistration{Platform: wire.Platform_PLATFORM_ANDROID, Token: "fcm-registration-token-1"}
	r.phone(t, "carol", "pixel", 0, reg, nil).Close()
	waitDetached(t, r.s, 1)
	sendMany(t, ctxT(t, 30*time.Second), alice, "carol", 5, 1, "a")
	r.m.wait(t, core.MetricPushDecisions, "outstanding", 4)
	if _, err := r.fcm.WaitRequests(1); err != nil {
		t.Fatal(err)
	}
	reqs := r.fcm.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d FCM sends, want 1", len(reqs))
	}
	m := reqs[0].Message
	if reqs[0].Status != 200 || m.Token != reg.Token || m.Data["tern_seq"] != "1" || m.Android == nil ||
		m.Android.CollapseKey == "" || m.Android.Priority != "high" || m.Notification != nil {
		t.Fatalf("FCM message: %+v (android %+v)", m, m.Android)
	}
}

// TestPushDeadToken: APNs answers 410 Unregistered; the registration is
// deleted and the device is not pushed again. Issue #4 acceptance #4 (the
// 429 and 500 retries are in push's tests, with a fake clock).
func TestPushDeadToken(t *testing.T) {
	r := newPushRig(t, t.TempDir())
	r.apns.Script(iosToken, pushmock.APNsUnregistered)
	alice := sdk(t, r.s, "alice", "laptop", 0, nil)
	r.phone(t, "bob", "iphone", 0, iosReg(), nil).Close()
	waitDetached(t, r.s, 1)
	sendMany(t, ctxT(t, 30*time.Second), alice, "bob", 1, 1, "x")
	r.m.wait(t, core.MetricPushDecisions, "token_dropped", 1)
	regs, err := r.s.Store.PushRegistrations(context.Background(), "bob")
	if err != nil || len(regs) != 0 {
		t.Fatalf("registrations after 410: %v, %v", regs, err)
	}
	if reqs := r.apns.Requests(); len(reqs) != 1 || reqs[0].Status != 410 {
		t.Fatalf("APNs requests: %+v", reqs)
	}
}

// TestPushAfterRestart: devices that are behind with no session when the
// server stops are pushed by the restarted server: the pushes owed are
// derived from mailbox state, not from a queue. Issue #4 acceptance #5. The
// server is a child process killed with SIGKILL.
func TestPushAfterRestart(t *testing.T) {
	key, err := pushmock.NewAPNsKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	apns := pushmock.NewAPNs(t, pushmock.APNsOptions{Key: key, Topics: []string{topic}})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "apns-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: apns.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "push.json")
	os.WriteFile(cfgFile, fmt.Appendf(nil, `{"push": {"apns": {"key_file": %q, "key_id": %q, "team_id": %q, "topic": %q, "endpoint": %q, "ca_file": %q}}}`,
		key.Path, key.KeyID, key.TeamID, topic, apns.URL, caFile), 0o644)
	listen := freeUDPAddr(t)

	// No APNs reachable while the messages arrive: the first server has no
	// push configuration at all.
	p := startTern(t, dir, listen)
	ctx := ctxT(t, 60*time.Second)
	for _, dev := range []string{"iphone1", "iphone2"} {
		cfg := p.clientConfig("bob", dev)
		cfg.Platform, cfg.Push = wire.Platform_PLATFORM_IOS, iosReg()
		c, err := client.Dial(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	alice, err := client.Dial(ctx, p.clientConfig("alice", "laptop"))
	if err != nil {
		t.Fatal(err)
	}
	sendMany(t, ctx, alice, "bob", 3, 1, "m")
	alice.Close()
	p.kill()
	if apns.Count() != 0 {
		t.Fatal("pushed without APNs configured")
	}

	p = startTern(t, dir, listen, "--config", cfgFile)
	reqs, err := apns.WaitRequests(2)
	if err != nil {
		t.Fatalf("the restarted server did not push the two devices behind: %v", err)
	}
	for _, q := range reqs {
		if q.Status != 200 || q.JSON["tern"].(map[string]any)["seq"] != float64(3) {
			t.Fatalf("push after restart: %+v", q)
		}
	}
	p.term()
}
