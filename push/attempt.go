package push

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// class is what the Service does after an attempt.
type class int

const (
	classOK           class = iota
	classInvalidToken       // the token is dead: report it, never retry
	classRetry              // transient (429, 5xx, network): back off and retry
	classAuth               // misconfiguration (credentials, topic, project): log loudly, retry after RetryMax
	classRejected           // the provider refused this push for good (our payload): drop
	classAborted            // Close cancelled the send
)

// outcome is the classified result of one attempt.
type outcome struct {
	class class
	// reason labels the provider's results counter: "ok", or the
	// provider's reason in snake_case.
	reason string
	// retryAfter is the server's Retry-After (0: none).
	retryAfter time.Duration
	// err describes a failure for the logs.
	err error
}

// attempt records the one HTTP exchange of a send. The SDKs hide what the
// Service needs (apns2 drops the response headers, so Retry-After; the
// firebase SDK retries 503s and network errors itself with real-time
// sleeps), so the Service wraps their HTTP client in a recorder that lets
// each send make exactly one round trip: it keeps the status, headers and
// body, then cancels the attempt's context so that an SDK-internal retry
// ends at once. The Service schedules retries itself, on its Clock.
type attempt struct {
	cancel context.CancelFunc
	done   bool // a round trip was made
	status int
	header http.Header
	body   []byte
	err    error // the round trip's error (network, TLS, token fetch)
}

type attemptKey struct{}

// withAttempt returns a context that the recorder attaches a to, and
// the function that releases it.
func withAttempt(ctx context.Context, a *attempt) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	return context.WithValue(ctx, attemptKey{}, a), cancel
}

// maxResponseBody bounds what the recorder reads of a response.
const maxResponseBody = 64 << 10

var errSecondRoundTrip = errors.New("push: one round trip per attempt")

// recorder is the http.RoundTripper under the SDKs' clients. Each request
// of a send runs on the sending goroutine (http.Client calls RoundTrip
// synchronously), so attempt needs no lock.
type recorder struct {
	next http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	a, _ := req.Context().Value(attemptKey{}).(*attempt)
	if a == nil {
		return r.next.RoundTrip(req)
	}
	if a.done {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errSecondRoundTrip
	}
	a.done = true
	defer a.cancel()
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		a.err = err
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	resp.Body.Close()
	if err != nil {
		a.err = err
		return nil, err
	}
	a.status, a.header, a.body = resp.StatusCode, resp.Header, body
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when h has none or it is unusable, and caps the delay at
// maxRetryAfter.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		if s > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// dialer dials the providers and remembers the connections, so that Close
// can close them all: http.Transport.CloseIdleConnections misses a
// connection whose last stream is still being torn down, which would then
// live on until its idle timeout.
type dialer struct {
	net.Dialer
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newDialer() *dialer {
	return &dialer{
		Dialer: net.Dialer{Timeout: 20 * time.Second, KeepAlive: 15 * time.Second},
		conns:  map[*trackedConn]struct{}{},
	}
}

func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, d: d}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	d.conns[tc] = struct{}{}
	return tc, nil
}

// closeAll closes every connection and refuses new ones.
func (d *dialer) closeAll() {
	d.mu.Lock()
	d.closed = true
	conns := make([]*trackedConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	d *dialer
}

func (c *trackedConn) Close() error {
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}
