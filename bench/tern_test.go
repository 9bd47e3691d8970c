package bench

import (
	"bytes"
	"context"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/internal/testserver"
)

// ternTarget starts an in-process gateway (Badger in a temp dir) and the
// Tern target in front of it.
func ternTarget(t *testing.T) (*Tern, *testserver.Server) {
	t.Helper()
	s := testserver.Start(t, testserver.Options{})
	tt, err := NewTern(TernConfig{
		Addr:  s.Addr,
		TLS:   s.ClientTLS(),
		Token: func(user string) (string, error) { return s.Gateway.Token(user, "bench", time.Hour) },
		Client: func(_ string, c *client.Config) {
			c.ReconnectMin, c.ReconnectMax = 10*time.Millisecond, 500*time.Millisecond
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.Close() })
	return tt, s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func checkResult(t *testing.T, res *Result, figures ...string) {
	t.Helper()
	if res.Failed() {
		t.Fatalf("validation: %s %v", res.Validation.Summary(), res.Validation.Violations)
	}
	if !res.Validation.SeqChecked {
		t.Error("Tern deliveries carry seqs, but the validator did not check them")
	}
	for _, name := range figures {
		f, ok := res.Figure(name)
		if !ok || !(f.Value > 0) {
			t.Errorf("figure %s = %v (present %v), want > 0", name, f.Value, ok)
		}
	}
	var out bytes.Buffer
	if err := WriteText(&out, []*Result{res, res}); err != nil || !strings.Contains(out.String(), "median") {
		t.Errorf("text report: %v\n%s", err, out.String())
	}
	if err := WriteJSON(io.Discard, []*Result{res}); err != nil {
		t.Errorf("json: %v", err)
	}
}

func TestThroughputTern(t *testing.T) {
	tt, _ := ternTarget(t)
	res, err := Throughput(testCtx(t), tt, ThroughputConfig{Senders: 2, Receivers: 3, Window: 2, Messages: 300, ServerInProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, "sent_per_s", "delivered_per_s", "cpu_per_msg_us", "e2e_p99_ms")
	if res.Validation.Delivered != 300 {
		t.Errorf("delivered %d, want 300", res.Validation.Delivered)
	}
}

func TestLatencyTern(t *testing.T) {
	tt, _ := ternTarget(t)
	var prog bytes.Buffer
	res, err := Latency(testCtx(t), tt, LatencyConfig{Rate: 200, Senders: 2, Receivers: 2, Duration: Duration(1500 * time.Millisecond), Warmup: Duration(200 * time.Millisecond), Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, "latency_p50_ms", "latency_p99_ms", "latency_max_ms", "sent_per_s")
	if res.Latency == nil || len(res.Latency.Points) < 10 {
		t.Errorf("latency CDF %+v", res.Latency)
	}
	if !strings.Contains(prog.String(), "latency") {
		t.Errorf("no progress line: %q", prog.String())
	}
}

func TestStormTern(t *testing.T) {
	tt, _ := ternTarget(t)
	var mints sync.Map // user → *atomic.Int64
	mint := tt.cfg.Token
	tt.cfg.Token = func(user string) (string, error) {
		n, _ := mints.LoadOrStore(user, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		return mint(user)
	}
	res, err := Storm(testCtx(t), tt, StormConfig{Clients: 20, Senders: 2, Timeout: Duration(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, "0rtt_caught_up_s", "full_caught_up_s", "0rtt_zero_rtt")
	if f, _ := res.Figure("0rtt_zero_rtt"); f.Value != 20 {
		t.Errorf("%v clients used 0-RTT in the 0-RTT storm, want 20", f.Value)
	}
	if f, _ := res.Figure("full_zero_rtt"); f.Value != 0 {
		t.Errorf("%v clients used 0-RTT with 0-RTT off", f.Value)
	}
	for _, ph := range []string{"0rtt", "full"} {
		if f, _ := res.Figure(ph + "_failures"); f.Value != 0 {
			t.Errorf("%s: %v failures", ph, f.Value)
		}
	}
	// Three sessions per client: warm-up and two storms, each resumed.
	if res.Validation.Sessions != 60 || res.Validation.Delivered != 60 {
		t.Errorf("sessions %d, delivered %d; want 60 and 60", res.Validation.Sessions, res.Validation.Delivered)
	}
	// Each user minted one token and kept it through the storms, as an
	// app keeps its device's token.
	users := 0
	mints.Range(func(user, n any) bool {
		users++
		if got := n.(*atomic.Int64).Load(); got != 1 {
			t.Errorf("%s: %d tokens minted, want 1", user, got)
		}
		return true
	})
	if users != 22 {
		t.Errorf("%d users minted tokens, want 22 (20 clients, 2 senders)", users)
	}
	// A reconnect costs at least the handshake's datagrams each way.
	for _, name := range []string{"0rtt_datagrams_out_per_client", "0rtt_datagrams_in_per_client", "full_datagrams_out_per_client", "full_datagrams_in_per_client"} {
		if f, ok := res.Figure(name); !ok || f.Value < 3 {
			t.Errorf("%s: %v (reported: %v), want at least 3", name, f.Value, ok)
		}
	}
}

func TestMobileTern(t *testing.T) {
	tt, _ := ternTarget(t)
	res, err := Mobile(testCtx(t), tt, MobileConfig{
		LatencyConfig: LatencyConfig{Rate: 100, Senders: 2, Receivers: 2, Duration: Duration(2 * time.Second), Warmup: -1},
		RTT:           Duration(20 * time.Millisecond), Loss: 0.02, MigrateEvery: Duration(700 * time.Millisecond), Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, "latency_p50_ms", "migrations")
	// Every delivery crosses the proxy at least one way (a Notify carrying
	// the message inline): half the round trip.
	if f, _ := res.Figure("latency_p50_ms"); f.Value < 10 {
		t.Errorf("p50 %.1f ms through a 20 ms RTT proxy (10 ms each way)", f.Value)
	}
}

// TestConnectionsTern runs the connections scenario with a worker (over
// pipes, in process) holding half the clients, and this process's memory
// standing in for the server's /metrics.
func TestConnectionsTern(t *testing.T) {
	tt, _ := ternTarget(t)
	ctx := testCtx(t)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	served := make(chan error, 1)
	go func() {
		err := ServeWorker(ctx, tt, inR, outW)
		outW.Close()
		served <- err
	}()
	w := newWorker(inW, outR, func() error { return <-served }, func() { inR.Close() })
	defer w.Close()
	// The server's samples are scripted (a real heap moves by more than
	// 40 connections' worth between samples), so that the figures can be
	// checked exactly: before the ramp, after it, at the end.
	const conns = 40
	var samples atomic.Int32
	metrics := func(context.Context) (map[string]float64, error) {
		k := samples.Add(1)            // 1: before the ramp, 2: after it, 3: at the end
		n, rss := float64(conns), 90.0 // rss: KiB per connection
		switch k {
		case 1:
			n = 0
		case 2:
			rss = 100
		}
		return map[string]float64{
			"process_resident_memory_bytes": 100<<20 + n*rss*1024,
			"go_memstats_heap_inuse_bytes":  50<<20 + n*60*1024,
			"go_goroutines":                 10 + n*4,
			"process_cpu_seconds_total":     float64(k) * 0.25,
		}, nil
	}
	res, err := Connections(ctx, tt, ConnectionsConfig{
		Conns: conns, Ramp: 400, Settle: Duration(10 * time.Millisecond), Idle: Duration(300 * time.Millisecond),
		Metrics: metrics, Workers: []*Worker{w},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("worker: %v", err)
	}
	checkResult(t, res, "connections", "goroutines_per_conn")
	for name, want := range map[string]float64{
		"rss_per_conn_kib": 90, "rss_per_conn_after_ramp_kib": 100, "heap_per_conn_kib": 60,
		"heap_per_conn_after_ramp_kib": 60, "goroutines_per_conn": 4,
	} {
		if f, ok := res.Figure(name); !ok || math.Abs(f.Value-want) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", name, f.Value, ok, want)
		}
	}
	// 0.25 s of CPU over the idle window, in both units.
	cores, _ := res.Figure("idle_cpu_cores")
	perConnMin, _ := res.Figure("idle_cpu_ms_per_conn_min")
	if cores.Value <= 0 || cores.Value > 0.25/0.3 || math.Abs(perConnMin.Value-cores.Value*60*1000/conns) > 1e-6 {
		t.Errorf("idle CPU: %v cores, %v ms per connection per minute", cores.Value, perConnMin.Value)
	}
	if f, _ := res.Figure("connections"); f.Value != 40 {
		t.Errorf("%v connections, want 40", f.Value)
	}
	if res.Validation.Receivers != 40 || res.Validation.Delivered != 40 {
		t.Errorf("validated %d receivers, %d delivered; want 40 and 40", res.Validation.Receivers, res.Validation.Delivered)
	}
}

func TestHTMLReport(t *testing.T) {
	res := &Result{Scenario: "latency", Target: "fake", Env: CurrentEnv(), Validation: &Validation{}}
	res.add("latency_p99_ms", "p99", 3.5, "ms")
	var l latencies
	for i := range 1000 {
		l = append(l, int64(i)*int64(time.Microsecond)*10)
	}
	res.Latency = l.sorted().cdf("send → delivered")
	res.Series = []Series{{Name: "acked", Unit: "msg/s", Step: .1, Points: []float64{1, 2, 3}}, {Name: "delivered", Unit: "msg/s", Step: .1, Points: []float64{1, 2, 2}}}
	var out bytes.Buffer
	if err := WriteHTML(&out, "Tern <bench>", [][]*Result{{res, res}}); err != nil {
		t.Fatal(err)
	}
	page := out.String()
	for _, want := range []string{"<svg", "Latency CDF", "Throughput over time", "Tern &lt;bench&gt;", "median"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "src=", "href=\"http", "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: not self-contained", bad)
		}
	}
}
