package push_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/internal/pushmock"
	"github.com/ternhq/tern/push"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkNoLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakMarkers are stack frames that must not outlive a closed Service: its
// own, and the client side of its HTTP connections.
var leakMarkers = []string{"github.com/ternhq/tern/push.", "net/http.(*persistConn)", "ClientConn).readLoop"}

// checkNoLeaks reports goroutines still running push code. A goroutine
// that has signalled its exit may need a moment to return, so it looks a
// few times before failing.
func checkNoLeaks() error {
	var found []string
	for range 100 {
		found = found[:0]
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "checkNoLeaks") {
				continue
			}
			for _, mk := range leakMarkers {
				if strings.Contains(g, mk) {
					found = append(found, g)
					break
				}
			}
		}
		if len(found) == 0 {
			return nil
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("leaked goroutines:\n%s", strings.Join(found, "\n\n"))
}

// metrics is a core.Metrics that remembers everything.
type metrics struct {
	mu       sync.Mutex
	counters map[string]float64 // name + "{" + label + "}"
	gauges   map[string]float64
	hist     map[string]int
	changed  chan struct{}
}

func newMetrics() *metrics {
	return &metrics{counters: map[string]float64{}, gauges: map[string]float64{}, hist: map[string]int{}, changed: make(chan struct{})}
}

func (m *metrics) Add(name, label string, d float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counters[name+"{"+label+"}"] += d
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *metrics) Observe(name string, v float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hist[name]++
}

func (m *metrics) Set(name string, v float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gauges[name] = v
}

func (m *metrics) get(name, label string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counters[name+"{"+label+"}"]
}

func (m *metrics) gauge(name string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gauges[name]
}

// wait waits until counter name{label} reaches v.
func (m *metrics) wait(t testing.TB, name, label string, v float64) {
	t.Helper()
	deadline := time.NewTimer(pushmock.DefaultWait)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		got, ch := m.counters[name+"{"+label+"}"], m.changed
		m.mu.Unlock()
		if got >= v {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s{%s} = %v, want %v", name, label, got, v)
		}
	}
}

// logs is a slog.Handler that keeps records.
type logs struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logs) WithGroup(string) slog.Handler      { return l }

// count returns how many records at level have msg containing substr.
func (l *logs) count(level slog.Level, substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Level == level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

type invalidCall struct {
	user          core.UserID
	device        core.DeviceID
	token, reason string
}

// fixture is a Service wired to an APNs and an FCM mock with a fake clock.
type fixture struct {
	t       *testing.T
	key     *pushmock.APNsKey
	apns    *pushmock.APNs
	fcm     *pushmock.FCM
	clock   *pushmock.Clock
	metrics *metrics
	logs    *logs
	invalid chan invalidCall
	svc     *push.Service
}

const topic = "com.example.tern"

// newFixture starts the mocks and a Service; edit adjusts the Config
// before New. The Service is closed (and checked for leaks) at cleanup.
func newFixture(t *testing.T, edit func(*push.Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, metrics: newMetrics(), logs: &logs{}, invalid: make(chan invalidCall, 100)}
	var err error
	if f.key, err = pushmock.NewAPNsKey(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	f.apns = pushmock.NewAPNs(t, pushmock.APNsOptions{Key: f.key, Topics: []string{topic}})
	f.fcm = pushmock.NewFCM(t, pushmock.FCMOptions{})
	f.clock = pushmock.NewClock(time.Now())
	cfg := push.Config{
		APNs:    f.apns.PushConfig(),
		FCM:     f.fcm.PushConfig(),
		Clock:   f.clock,
		Metrics: f.metrics,
		Logger:  slog.New(f.logs),
		OnInvalidToken: func(_ context.Context, u core.UserID, d core.DeviceID, token, reason string) {
			f.invalid <- invalidCall{u, d, token, reason}
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	f.svc, err = push.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.svc.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

// iosToken returns a 64-hex-digit APNs device token for name.
func iosToken(name string) string {
	return fmt.Sprintf("%064x", []byte(name))[:64]
}

func iosPush(dev string, head core.Seq) core.PushRequest {
	return core.PushRequest{
		User: "u-" + core.UserID(dev), Device: core.DeviceID(dev), Head: head, CollapseID: "tern-" + dev,
		Reg: core.PushRegistration{Platform: core.PlatformIOS, Token: iosToken(dev), Topic: topic},
	}
}

func androidPush(dev string, head core.Seq) core.PushRequest {
	return core.PushRequest{
		User: "u-" + core.UserID(dev), Device: core.DeviceID(dev), Head: head, CollapseID: "tern-" + dev,
		Reg: core.PushRegistration{Platform: core.PlatformAndroid, Token: "fcm:" + dev},
	}
}

func (f *fixture) apnsRequests(n int) []pushmock.APNsRequest {
	f.t.Helper()
	reqs, err := f.apns.WaitRequests(n)
	if err != nil {
		f.t.Fatal(err)
	}
	return reqs
}

func (f *fixture) fcmRequests(n int) []pushmock.FCMRequest {
	f.t.Helper()
	reqs, err := f.fcm.WaitRequests(n)
	if err != nil {
		f.t.Fatal(err)
	}
	return reqs
}

// pending waits until n retry timers are pending and returns their delays.
func (f *fixture) pending(n int) []time.Duration {
	f.t.Helper()
	ds, err := f.clock.WaitPending(n, pushmock.DefaultWait)
	if err != nil {
		f.t.Fatal(err)
	}
	return ds
}

func (f *fixture) invalidCall() invalidCall {
	f.t.Helper()
	select {
	case c := <-f.invalid:
		return c
	case <-time.After(pushmock.DefaultWait):
		f.t.Fatal("OnInvalidToken was not called")
	}
	return invalidCall{}
}

// tokens returns the tokens of reqs, in order.
func tokens[R any](reqs []R, token func(R) string) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = token(r)
	}
	return out
}

func apnsToken(r pushmock.APNsRequest) string { return r.Token }

func containsToken(reqs []pushmock.APNsRequest, tok string) bool {
	return slices.Contains(tokens(reqs, apnsToken), tok)
}

// tern returns the payload's "tern" dictionary.
func tern(t *testing.T, r pushmock.APNsRequest) map[string]any {
	t.Helper()
	d, ok := r.JSON["tern"].(map[string]any)
	if !ok {
		t.Fatalf("payload %s has no tern dictionary", r.Payload)
	}
	return d
}

func aps(t *testing.T, r pushmock.APNsRequest) map[string]any {
	t.Helper()
	d, ok := r.JSON["aps"].(map[string]any)
	if !ok {
		t.Fatalf("payload %s has no aps dictionary", r.Payload)
	}
	return d
}
