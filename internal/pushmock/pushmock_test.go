package pushmock_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2/token"

	"github.com/ternhq/tern/internal/pushmock"
)

const topic = "com.example.tern"

var devToken = strings.Repeat("ab", 32)

// apnsClient speaks HTTP/2 to the mock.
func apnsClient(m *pushmock.APNs, certs ...tls.Certificate) *http.Client {
	p := new(http.Protocols)
	p.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:       p,
		TLSClientConfig: &tls.Config{RootCAs: m.RootCAs(), Certificates: certs},
	}}
}

// bearer signs a provider token as Apple specifies it.
func bearer(t *testing.T, key *pushmock.APNsKey, kid, iss string, iat time.Time) string {
	t.Helper()
	priv, err := token.AuthKeyFromFile(key.Path)
	if err != nil {
		t.Fatal(err)
	}
	return "bearer " + signES256(t, priv, kid, iss, iat.Unix())
}

func signES256(t *testing.T, priv *ecdsa.PrivateKey, kid, iss string, iat int64) string {
	t.Helper()
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "ES256", "kid": kid}) + "." + enc(map[string]any{"iss": iss, "iat": iat})
	h := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, priv, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

type apnsCall struct {
	path    string
	headers map[string]string
	body    string
}

func (c apnsCall) do(t *testing.T, client *http.Client, m *pushmock.APNs) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, m.URL+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Reason    string `json:"reason"`
		Timestamp int64  `json:"timestamp"`
	}
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("answer %q is not APNs JSON: %v", b, err)
		}
	}
	if resp.StatusCode == 200 && resp.Header.Get("apns-id") == "" {
		t.Error("200 without apns-id")
	}
	if resp.StatusCode == 410 && body.Timestamp == 0 {
		t.Error("410 without timestamp")
	}
	return resp.StatusCode, body.Reason
}

func TestAPNsVerifiesRequests(t *testing.T) {
	key, err := pushmock.NewAPNsKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := pushmock.NewAPNsKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := pushmock.NewAPNs(t, pushmock.APNsOptions{Key: key, Topics: []string{topic}})
	client := apnsClient(m)
	now := time.Now()
	good := func() apnsCall {
		return apnsCall{
			path: "/3/device/" + devToken,
			headers: map[string]string{
				"authorization":    bearer(t, key, key.KeyID, key.TeamID, now),
				"apns-topic":       topic,
				"apns-push-type":   "background",
				"apns-priority":    "5",
				"apns-collapse-id": "c",
				"apns-expiration":  "0",
			},
			body: `{"aps":{"content-available":1}}`,
		}
	}
	with := func(k, v string) apnsCall {
		c := good()
		if v == "" {
			delete(c.headers, k)
		} else {
			c.headers[k] = v
		}
		return c
	}
	cases := []struct {
		name   string
		call   apnsCall
		status int
		reason string
	}{
		{"valid", good(), 200, ""},
		{"alert at priority 10", func() apnsCall {
			c := with("apns-push-type", "alert")
			c.headers["apns-priority"] = "10"
			return c
		}(), 200, ""},
		{"no provider token", with("authorization", ""), 403, "MissingProviderToken"},
		{"signed by another key", with("authorization", bearer(t, other, key.KeyID, key.TeamID, now)), 403, "InvalidProviderToken"},
		{"wrong kid", with("authorization", bearer(t, key, "WRONGKEYID", key.TeamID, now)), 403, "InvalidProviderToken"},
		{"wrong iss", with("authorization", bearer(t, key, key.KeyID, "WRONGTEAM", now)), 403, "InvalidProviderToken"},
		{"expired", with("authorization", bearer(t, key, key.KeyID, key.TeamID, now.Add(-2*time.Hour))), 403, "ExpiredProviderToken"},
		{"no topic", with("apns-topic", ""), 400, "MissingTopic"},
		{"other topic", with("apns-topic", "com.example.other"), 400, "TopicDisallowed"},
		{"no push type", with("apns-push-type", ""), 400, "InvalidPushType"},
		{"voip push type", with("apns-push-type", "voip"), 400, "InvalidPushType"},
		{"background at priority 10", with("apns-priority", "10"), 400, "BadPriority"},
		{"background without priority", with("apns-priority", ""), 400, "BadPriority"},
		{"priority 7", with("apns-priority", "7"), 400, "BadPriority"},
		{"collapse id of 65 bytes", with("apns-collapse-id", strings.Repeat("x", 65)), 400, "BadCollapseId"},
		{"bad expiration", with("apns-expiration", "tomorrow"), 400, "BadExpirationDate"},
		{"empty payload", func() apnsCall { c := good(); c.body = ""; return c }(), 400, "PayloadEmpty"},
		{"payload too large", func() apnsCall { c := good(); c.body = strings.Repeat(" ", 4097); return c }(), 413, "PayloadTooLarge"},
		{"token not hex", func() apnsCall { c := good(); c.path = "/3/device/xyz"; return c }(), 400, "BadDeviceToken"},
		{"bad path", func() apnsCall { c := good(); c.path = "/2/device/" + devToken; return c }(), 404, "BadPath"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, reason := tc.call.do(t, client, m)
			if status != tc.status || reason != tc.reason {
				t.Errorf("got %d %q, want %d %q", status, reason, tc.status, tc.reason)
			}
		})
	}
	reqs := m.Requests()
	if len(reqs) != len(cases) {
		t.Fatalf("%d requests recorded, want %d", len(reqs), len(cases))
	}
	if r := reqs[0]; r.Auth != "token" || r.Topic != topic || r.Priority != 5 || r.PushType != "background" ||
		r.CollapseID != "c" || r.JSON["aps"] == nil || r.Status != 200 {
		t.Errorf("recorded %+v", r)
	}
}

func TestAPNsRequiresHTTP2(t *testing.T) {
	m := pushmock.NewAPNs(t, pushmock.APNsOptions{})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: m.RootCAs()}}}
	resp, err := client.Post(m.URL+"/3/device/"+devToken, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Error("HTTP/1.1 request accepted")
	}
}

func TestAPNsScriptAndErrorRate(t *testing.T) {
	cert, err := pushmock.NewAPNsCert(t.TempDir(), topic)
	if err != nil {
		t.Fatal(err)
	}
	m := pushmock.NewAPNs(t, pushmock.APNsOptions{ClientCAs: cert.CA})
	pair, err := tls.LoadX509KeyPair(cert.Path, cert.Path)
	if err != nil {
		t.Fatal(err)
	}
	client := apnsClient(m, pair)
	call := apnsCall{path: "/3/device/" + devToken, body: "{}", headers: map[string]string{
		"apns-topic": topic, "apns-push-type": "alert",
	}}
	m.Script(devToken, pushmock.APNsUnregistered, pushmock.APNsResponse{Status: 429, Reason: "TooManyRequests", RetryAfter: "30"})
	for _, want := range []struct {
		status int
		reason string
	}{{410, "Unregistered"}, {429, "TooManyRequests"}, {200, ""}} {
		if s, r := call.do(t, client, m); s != want.status || r != want.reason {
			t.Errorf("got %d %s, want %d %s", s, r, want.status, want.reason)
		}
	}
	if a := m.Requests()[0].Auth; a != "certificate" {
		t.Errorf("auth %q, want certificate", a)
	}
	m.SetErrorRate(0.25, pushmock.APNsInternalServerError)
	fails := 0
	for range 40 {
		if s, _ := call.do(t, client, m); s == 500 {
			fails++
		}
	}
	if fails != 10 {
		t.Errorf("%d of 40 failed at rate 0.25, want 10", fails)
	}
	// Without a certificate or a provider token: refused.
	if s, r := call.do(t, apnsClient(m), m); s != 403 || r != "MissingProviderToken" {
		t.Errorf("anonymous: %d %s", s, r)
	}
}

func fcmSend(t *testing.T, m *pushmock.FCM, project, auth, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, m.Endpoint()+"/projects/"+project+"/messages:send", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func errorCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	details, _ := e["details"].([]any)
	for _, d := range details {
		if m, _ := d.(map[string]any); m["@type"] == "type.googleapis.com/google.firebase.fcm.v1.FcmError" {
			return m["errorCode"].(string)
		}
	}
	s, _ := e["status"].(string)
	return s
}

func TestFCMVerifiesRequests(t *testing.T) {
	m := pushmock.NewFCM(t, pushmock.FCMOptions{Project: "p1"})
	cases := []struct {
		name, project, body string
		status              int
		code                string
	}{
		{"valid", "p1", `{"message":{"token":"t","data":{"tern_seq":"1"},"android":{"priority":"high","ttl":"3600s","collapse_key":"c"}}}`, 200, ""},
		{"other project", "p2", `{"message":{"token":"t"}}`, 404, "NOT_FOUND"},
		{"no target", "p1", `{"message":{"data":{"a":"b"}}}`, 400, "INVALID_ARGUMENT"},
		{"reserved key", "p1", `{"message":{"token":"t","data":{"from":"x"}}}`, 400, "INVALID_ARGUMENT"},
		{"google. key", "p1", `{"message":{"token":"t","data":{"google.x":"x"}}}`, 400, "INVALID_ARGUMENT"},
		{"number in data", "p1", `{"message":{"token":"t","data":{"a":1}}}`, 400, "INVALID_ARGUMENT"},
		{"unknown field", "p1", `{"message":{"token":"t","colapse_key":"c"}}`, 400, "INVALID_ARGUMENT"},
		{"bad ttl", "p1", `{"message":{"token":"t","android":{"ttl":"1h"}}}`, 400, "INVALID_ARGUMENT"},
		{"bad priority", "p1", `{"message":{"token":"t","android":{"priority":"urgent"}}}`, 400, "INVALID_ARGUMENT"},
		{"data too big", "p1", fmt.Sprintf(`{"message":{"token":"t","data":{"a":%q}}}`, strings.Repeat("x", 4096)), 400, "INVALID_ARGUMENT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, out := fcmSend(t, m, tc.project, "", tc.body)
			if status != tc.status || (tc.code != "" && errorCode(out) != tc.code) {
				t.Errorf("got %d %v, want %d %s", status, out, tc.status, tc.code)
			}
			if status == 200 && !strings.HasPrefix(out["name"].(string), "projects/p1/messages/") {
				t.Errorf("name %v", out["name"])
			}
		})
	}
	r := m.Requests()[0]
	if r.Message.Token != "t" || r.Message.Android.CollapseKey != "c" || r.Message.Data["tern_seq"] != "1" {
		t.Errorf("recorded %+v", r.Message)
	}
}

func TestFCMScriptedErrorsHaveTheV1Shape(t *testing.T) {
	m := pushmock.NewFCM(t, pushmock.FCMOptions{})
	m.Script("t", pushmock.FCMUnregistered, pushmock.FCMResponse{ErrorCode: "UNAVAILABLE", RetryAfter: "7"}, pushmock.FCMInvalidToken)
	body := `{"message":{"token":"t"}}`
	status, out := fcmSend(t, m, m.Project(), "", body)
	e := out["error"].(map[string]any)
	if status != 404 || e["status"] != "NOT_FOUND" || e["code"] != float64(404) || errorCode(out) != "UNREGISTERED" {
		t.Errorf("unregistered: %d %v", status, out)
	}
	req, _ := http.NewRequest(http.MethodPost, m.Endpoint()+"/projects/"+m.Project()+"/messages:send", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" {
		t.Errorf("unavailable: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	_, out = fcmSend(t, m, m.Project(), "", body)
	b, _ := json.Marshal(out)
	if !bytes.Contains(b, []byte(`"field":"message.token"`)) || errorCode(out) != "INVALID_ARGUMENT" {
		t.Errorf("invalid token: %s", b)
	}
}

func TestFCMRequireAuth(t *testing.T) {
	m := pushmock.NewFCM(t, pushmock.FCMOptions{RequireAuth: true})
	if _, err := m.WriteServiceAccount(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	status, out := fcmSend(t, m, m.Project(), "Bearer made-up", `{"message":{"token":"t"}}`)
	if status != 401 || errorCode(out) != "UNAUTHENTICATED" {
		t.Errorf("made-up token: %d %v", status, out)
	}
	resp, err := http.PostForm(m.URL+"/token", map[string][]string{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {"a.b.c"},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || m.TokenGrants() != 0 {
		t.Errorf("forged assertion: %d, %d grants", resp.StatusCode, m.TokenGrants())
	}
}

func TestClock(t *testing.T) {
	start := time.Unix(1000, 0)
	c := pushmock.NewClock(start)
	var fired []int
	c.AfterFunc(3*time.Second, func() { fired = append(fired, 3) })
	c.AfterFunc(time.Second, func() { fired = append(fired, 1) })
	stopped := c.AfterFunc(2*time.Second, func() { fired = append(fired, 2) })
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop should report true once")
	}
	if ds := c.Pending(); len(ds) != 2 || ds[0] != time.Second {
		t.Errorf("pending %v", ds)
	}
	c.Advance(2 * time.Second)
	if len(fired) != 1 || !c.Now().Equal(start.Add(2*time.Second)) {
		t.Errorf("fired %v at %v", fired, c.Now())
	}
	c.Advance(time.Second)
	if len(fired) != 2 || fired[1] != 3 {
		t.Errorf("fired %v", fired)
	}
	if _, err := c.WaitPending(1, 10*time.Millisecond); err == nil {
		t.Error("WaitPending with no timers succeeded")
	}
}

func TestNewAPNsKeyIsAP8(t *testing.T) {
	k, err := pushmock.NewAPNsKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(k.Path)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := token.AuthKeyFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if priv.PublicKey.X.Cmp(k.Public.X) != 0 || len(k.KeyID) != 10 || len(k.TeamID) != 10 {
		t.Errorf("key id %q team id %q", k.KeyID, k.TeamID)
	}
}
