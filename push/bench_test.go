package push_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/internal/pushmock"
	"github.com/ternhq/tern/push"
)

// benchMetrics counts successes and retries without locks and closes done
// when want successes are in.
type benchMetrics struct {
	ok, retries, dropped atomic.Int64
	want                 int64
	done                 chan struct{}
}

func (m *benchMetrics) Add(name, label string, d float64) {
	switch {
	case (name == push.MetricAPNsResults || name == push.MetricFCMResults) && label == "ok":
		if m.ok.Add(1) == m.want {
			close(m.done)
		}
	case name == push.MetricAPNsRetries || name == push.MetricFCMRetries:
		m.retries.Add(1)
	case name == push.MetricDropped:
		m.dropped.Add(1)
	}
}
func (m *benchMetrics) Observe(string, float64) {}
func (m *benchMetrics) Set(string, float64)     {}

// BenchmarkPushThroughput pushes b.N distinct devices through a Service
// with the default Workers against the APNs mock (HTTP/2, TLS, JWT) and the
// FCM mock (HTTP/1.1), and reports pushes/s from the first Push to the
// last success. The 5pct_500 runs answer 5% of requests with a 500, retried
// after 1-10 ms (real clock), and report retries per push.
func BenchmarkPushThroughput(b *testing.B) {
	for _, provider := range []string{"apns", "fcm"} {
		for _, rate := range []float64{0, 0.05} {
			name := provider
			if rate > 0 {
				name += "/5pct_500"
			}
			b.Run(name, func(b *testing.B) { benchPush(b, provider, rate) })
		}
	}
}

func benchPush(b *testing.B, provider string, rate float64) {
	m := &benchMetrics{want: int64(b.N), done: make(chan struct{})}
	cfg := push.Config{
		MaxQueued: max(b.N, push.DefaultMaxQueued),
		RetryMin:  time.Millisecond,
		RetryMax:  10 * time.Millisecond,
		Metrics:   m,
	}
	reqs := make([]core.PushRequest, b.N)
	switch provider {
	case "apns":
		key, err := pushmock.NewAPNsKey(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		mock := pushmock.NewAPNs(b, pushmock.APNsOptions{Key: key, NoRecord: true})
		mock.SetErrorRate(rate, pushmock.APNsInternalServerError)
		cfg.APNs = &push.APNsConfig{KeyFile: key.Path, KeyID: key.KeyID, TeamID: key.TeamID, Topic: topic,
			Endpoint: mock.URL, RootCAs: mock.RootCAs()}
		for i := range reqs {
			reqs[i] = iosPush(fmt.Sprintf("d%d", i), 1)
		}
	case "fcm":
		mock := pushmock.NewFCM(b, pushmock.FCMOptions{NoRecord: true})
		mock.SetErrorRate(rate, pushmock.FCMInternal)
		cfg.FCM = &push.FCMConfig{ProjectID: mock.Project(), Endpoint: mock.Endpoint()}
		for i := range reqs {
			reqs[i] = androidPush(fmt.Sprintf("d%d", i), 1)
		}
	}
	svc, err := push.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for _, r := range reqs {
		svc.Push(r)
	}
	select {
	case <-m.done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("%d of %d pushes succeeded in 2 min (%d dropped)", m.ok.Load(), b.N, m.dropped.Load())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pushes/s")
	b.ReportMetric(float64(m.retries.Load())/float64(b.N), "retries/op")
	if err := svc.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	if d := m.dropped.Load(); d != 0 {
		b.Errorf("%d pushes dropped", d)
	}
}
