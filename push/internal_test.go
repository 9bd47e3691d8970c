package push

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"30":                            30 * time.Second,
		"0":                             0,
		"-5":                            0,
		"soon":                          0,
		"999999999":                     maxRetryAfter,
		"Thu, 02 Jan 2025 03:05:05 GMT": time.Minute,
		"Thu, 02 Jan 2025 03:00:00 GMT": 0, // in the past
	}
	for v, want := range cases {
		h := http.Header{}
		if v != "" {
			h.Set("Retry-After", v)
		}
		if got := retryAfter(h, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}

func TestCollapseID(t *testing.T) {
	if got := apnsCollapseID("tern-u1"); got != "tern-u1" {
		t.Errorf("short id changed to %q", got)
	}
	long := strings.Repeat("x", 65)
	if got := apnsCollapseID(long); len(got) != 64 || got != apnsCollapseID(long) || got == apnsCollapseID(long+"y") {
		t.Errorf("long id → %q: want a stable 64-byte hash", got)
	}
	if got := apnsCollapseID("a\nb"); len(got) != 64 {
		t.Errorf("id with a control character kept: %q", got)
	}
}

func TestRetryDelay(t *testing.T) {
	s := &Service{cfg: Config{RetryMin: time.Second, RetryMax: time.Minute}}
	for attempts, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 7: time.Minute, 100: time.Minute} {
		for range 50 {
			if d := s.retryDelay(attempts, outcome{class: classRetry}); d < want/2 || d > want {
				t.Fatalf("attempt %d: %v, want [%v, %v]", attempts, d, want/2, want)
			}
		}
	}
	if d := s.retryDelay(1, outcome{class: classAuth}); d < 30*time.Second {
		t.Errorf("auth failure: %v, want the long backoff", d)
	}
	if d := s.retryDelay(1, outcome{class: classRetry, retryAfter: 45 * time.Second}); d != 45*time.Second {
		t.Errorf("Retry-After 45s: %v", d)
	}
}

func writeP8(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	p := filepath.Join(t.TempDir(), "k.p8")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAPNsHosts(t *testing.T) {
	p8 := writeP8(t)
	cfg := APNsConfig{KeyFile: p8, KeyID: "K", TeamID: "T"}
	s, err := newAPNsSender(cfg, 1, realClock{})
	if err != nil {
		t.Fatal(err)
	}
	if s.prod.Host != apns2.HostProduction || s.dev.Host != apns2.HostDevelopment {
		t.Errorf("hosts %s, %s", s.prod.Host, s.dev.Host)
	}
	cfg.Endpoint = "https://127.0.0.1:1/"
	if s, _ = newAPNsSender(cfg, 1, realClock{}); s.prod.Host != "https://127.0.0.1:1" || s.dev.Host != "https://127.0.0.1:1" {
		t.Errorf("Endpoint: hosts %s, %s", s.prod.Host, s.dev.Host)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRecorderAllowsOneRoundTrip: the recorder keeps the answer and ends
// the attempt's context, so an SDK's own retry stops at once.
func TestRecorderAllowsOneRoundTrip(t *testing.T) {
	calls := 0
	rec := &recorder{next: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls++
		return &http.Response{
			StatusCode: 503,
			Header:     http.Header{"Retry-After": {"12"}},
			Body:       io.NopCloser(strings.NewReader(`{"error":{}}`)),
		}, nil
	})}
	client := &http.Client{Transport: rec}
	var a attempt
	ctx, cancel := withAttempt(context.Background(), &a)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://x/", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != `{"error":{}}` || a.status != 503 || retryAfter(a.header, time.Now()) != 12*time.Second {
		t.Errorf("body %q, recorded %d %v", body, a.status, a.header)
	}
	if ctx.Err() == nil {
		t.Error("the attempt's context is still live after the round trip")
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, "http://x/", nil)
	if _, err := rec.RoundTrip(req); !errors.Is(err, errSecondRoundTrip) || calls != 1 {
		t.Errorf("second round trip: %v after %d calls", err, calls)
	}
}

// FuzzClassify feeds arbitrary provider answers to both classifiers: they
// must not panic, must pick a known class, and must keep Retry-After
// within [0, maxRetryAfter].
func FuzzClassify(f *testing.F) {
	f.Add(404, []byte(`{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`), "")
	f.Add(400, []byte(`{"error":{"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token"}]}]}}`), "")
	f.Add(503, []byte(`{"error":{"status":"UNAVAILABLE"}}`), "30")
	f.Add(410, []byte(`{"reason":"Unregistered","timestamp":1700000000000}`), "")
	f.Add(429, []byte(`{"reason":"TooManyRequests"}`), "Thu, 02 Jan 2025 03:05:05 GMT")
	f.Add(200, []byte(``), "")
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := fixedClock{now}
	fs := &fcmSender{clock: clock}
	as := &apnsSender{clock: clock}
	f.Fuzz(func(t *testing.T, status int, body []byte, ra string) {
		a := &attempt{done: true, status: status, header: http.Header{"Retry-After": {ra}}, body: body}
		check := func(o outcome) {
			if o.class < classOK || o.class > classAborted || o.reason == "" {
				t.Fatalf("outcome %+v", o)
			}
			if o.retryAfter < 0 || o.retryAfter > maxRetryAfter {
				t.Fatalf("retryAfter %v", o.retryAfter)
			}
		}
		check(fs.classify(a, errors.New("sdk error")))
		resp := &apns2.Response{StatusCode: status}
		_ = json.Unmarshal(body, resp)
		if status != http.StatusOK {
			check(as.classify(a, resp, nil))
		}
	})
}

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time                      { return c.t }
func (fixedClock) AfterFunc(time.Duration, func()) Timer { panic("unused") }
