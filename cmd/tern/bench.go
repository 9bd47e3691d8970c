package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/gateway"
	"github.com/ternhq/tern/storage"
)

const benchUsage = `Usage: tern bench SCENARIO [flags]

Scenarios:
  throughput       N senders → M receivers, every send acknowledged durably: msgs/s end to end, CPU per message
  latency          fixed offered rate, open loop: send → delivered p50/p90/p99/p99.9/max
  connections      ramp to N idle connections: server memory (RSS, Go heap) and keepalive CPU per connection
  reconnect-storm  N clients reconnect at once (0-RTT, then full handshakes): time until all caught up, failures
  mobile           the latency workload with receivers behind a netsim proxy (RTT, loss, network switches)

By default the server runs in this process (a fresh gateway per run, Badger in a
temporary directory, no send rate limit); connections runs 'tern serve' as a
child process so that its memory is the server's alone. --addr targets a running
server instead (start it with --send-rate -1). Every run validates what each
receiver got (ordered, unique, reliable, resumable) and fails loudly otherwise.

Flags:
`

// benchFlags are tern bench's flags; zero values mean the scenario's
// defaults (see package bench).
type benchFlags struct {
	addr, ca, data, metrics string
	json, quiet             bool
	report, cpuProfile      string
	execTrace               string
	runs                    int
	unsafeNoFsync           bool

	senders, receivers, window, messages, size int
	duration, warmup                           time.Duration
	rate                                       float64

	conns, procs int
	ramp         float64
	idle         time.Duration

	clients     int
	connectRate float64
	timeout     time.Duration

	rtt, jitter, migrateEvery time.Duration
	loss                      float64
	seed                      int64
}

func (f *benchFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "", "target a running server at HOST:PORT (default: start one in process)")
	fs.StringVar(&f.ca, "ca", "", "with --addr: the server's CA certificate (PEM), e.g. DATA/tls/dev-cert.pem")
	fs.StringVar(&f.data, "data", "", "with --addr: the server's data directory, whose signing key mints the bench users' tokens")
	fs.StringVar(&f.metrics, "metrics", "", "with --addr, for connections: the server's metrics URL (http://HOST:PORT/metrics)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per run (and one with the medians) instead of the table")
	fs.StringVar(&f.report, "report", "", "write a self-contained HTML report (latency CDF, throughput over time, figures) to this file")
	fs.IntVar(&f.runs, "runs", 1, "repeat the scenario K times and report each run and the median")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress line on stderr")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to this file (an in-process server's samples carry the label side=server: go tool pprof -tagfocus side=server)")
	fs.StringVar(&f.execTrace, "trace", "", "write a Go execution trace of this process to this file (go tool trace; large: ~10 MB per second of load)")
	fs.BoolVar(&f.unsafeNoFsync, "unsafe-no-fsync", false, "UNSAFE, for measuring the disk's share: the server the bench starts acknowledges sends without fsync (not with --addr)")

	fs.IntVar(&f.senders, "senders", 0, "throughput, latency, mobile: sending users (default 16; reconnect-storm: 8)")
	fs.IntVar(&f.receivers, "receivers", 0, "throughput, latency, mobile: receiving users (default 16)")
	fs.IntVar(&f.window, "window", 0, "throughput: sends in flight per sender (default 8)")
	fs.IntVar(&f.messages, "messages", 0, "throughput: stop after this many sends instead of --duration")
	fs.IntVar(&f.size, "size", 0, "body size in bytes (default 100)")
	fs.DurationVar(&f.duration, "duration", 0, "how long load is offered (default 10s; mobile 20s)")
	fs.DurationVar(&f.warmup, "warmup", 0, "latency, mobile: first part of --duration left out of the percentiles (default 1s)")
	fs.Float64Var(&f.rate, "rate", 0, "latency, mobile: offered messages/s (default 5000; mobile 1000)")

	fs.IntVar(&f.conns, "conns", 0, "connections: idle connections (default 20000)")
	fs.Float64Var(&f.ramp, "ramp", 0, "connections: connects per second (default 1000)")
	fs.DurationVar(&f.idle, "idle", 0, "connections: idle window for the keepalive CPU (default 30s)")
	fs.IntVar(&f.procs, "procs", 0, "connections: client processes (default: as many as the open-file limit needs)")

	fs.IntVar(&f.clients, "clients", 0, "reconnect-storm: clients (default 10000)")
	fs.Float64Var(&f.connectRate, "connect-rate", 0, "reconnect-storm: first connects per second (default 2000)")
	fs.DurationVar(&f.timeout, "timeout", 0, "reconnect-storm: bound on each storm (default 60s)")

	fs.DurationVar(&f.rtt, "rtt", 0, "mobile: round trip added by the proxy (default 50ms)")
	fs.DurationVar(&f.jitter, "jitter", 0, "mobile: ± jitter on each one-way delay (default 5ms; negative: none)")
	fs.Float64Var(&f.loss, "loss", 0, "mobile: loss probability each way (default 0.01; negative: none)")
	fs.DurationVar(&f.migrateEvery, "migrate-every", 0, "mobile: network switch per receiver every (default 5s; negative: never)")
	fs.Int64Var(&f.seed, "seed", 0, "mobile: proxy random seed (default: time-based)")
}

var benchScenarios = []string{"throughput", "latency", "connections", "reconnect-storm", "mobile"}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "worker" {
		return cmdBenchWorker(ctx, args[1:], stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	var f benchFlags
	f.register(fs)
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := fs.Parse(args); err != nil {
			return err
		}
		fs.Usage()
		return usageError{"bench: want a SCENARIO"}
	}
	scenario := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("bench: unexpected argument %q", fs.Arg(0))}
	}
	known := false
	for _, s := range benchScenarios {
		known = known || s == scenario
	}
	if !known {
		return usageError{fmt.Sprintf("bench: unknown scenario %q; want one of %s", scenario, strings.Join(benchScenarios, ", "))}
	}
	if f.addr != "" && (f.ca == "" || f.data == "") {
		return usageError{"bench: --addr needs --ca (the server's certificate) and --data (its signing key, to mint tokens)"}
	}
	if scenario == "connections" && f.addr != "" && f.metrics == "" {
		return usageError{"bench: connections with --addr needs --metrics (the server's /metrics URL)"}
	}
	if f.addr != "" && f.unsafeNoFsync {
		return usageError{"bench: --unsafe-no-fsync applies to the server the bench starts; with --addr, start yours with tern serve --unsafe-no-fsync"}
	}
	if f.runs < 1 {
		return usageError{"bench: --runs must be at least 1"}
	}
	stopProfile, err := capture(f.cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	stopTrace, err := capture(f.execTrace, trace.Start, trace.Stop)
	if err != nil {
		return err
	}
	defer stopTrace()

	var progress io.Writer
	if !f.quiet {
		progress = stderr
	}
	var runs []*bench.Result
	for i := range f.runs {
		if f.runs > 1 && progress != nil {
			fmt.Fprintf(progress, "tern bench %s: run %d/%d\n", scenario, i+1, f.runs)
		}
		res, err := benchRun(ctx, scenario, &f, progress, stderr)
		if err != nil {
			return fmt.Errorf("bench %s: %w", scenario, err)
		}
		runs = append(runs, res)
		if f.json {
			if err := bench.WriteJSON(stdout, []*bench.Result{res}); err != nil {
				return err
			}
		}
	}
	if f.json {
		if len(runs) > 1 {
			s := bench.Summary{Scenario: scenario, Target: runs[0].Target, Runs: len(runs), Median: bench.Median(runs), Env: runs[0].Env}
			for _, r := range runs {
				if r.Failed() {
					s.Failed++
				}
			}
			if err := json.NewEncoder(stdout).Encode(s); err != nil {
				return err
			}
		}
	} else if err := bench.WriteText(stdout, runs); err != nil {
		return err
	}
	if f.report != "" {
		var b strings.Builder
		bench.WriteHTML(&b, "tern bench "+scenario, [][]*bench.Result{runs})
		if err := os.WriteFile(f.report, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	var failed []string
	for i, r := range runs {
		if r.Failed() {
			failed = append(failed, fmt.Sprintf("run %d: %s", i+1, r.Validation.Summary()))
			if f.json {
				for _, v := range r.Validation.Violations {
					fmt.Fprintf(stderr, "tern bench: run %d: %s\n", i+1, v)
				}
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("bench %s: DELIVERY VALIDATION FAILED: %s", scenario, strings.Join(failed, "; "))
	}
	return nil
}

// benchServer is the server one run measures and how to reach it.
type benchServer struct {
	target  *bench.Tern
	where   string
	metrics bench.ServerMetrics
	gc      func(context.Context) error // makes the server collect garbage; nil: can't
	addr    string                      // for workers
	ca      string
	data    string
	close   func()
}

// benchRun runs the scenario once against a fresh server (or the one at
// --addr).
func benchRun(ctx context.Context, scenario string, f *benchFlags, progress, stderr io.Writer) (*bench.Result, error) {
	var srv *benchServer
	var err error
	switch {
	case f.addr != "":
		srv, err = remoteServer(f.addr, f.ca, f.data)
		if err == nil && f.metrics != "" {
			srv.metrics = bench.Scrape(f.metrics)
		}
	case scenario == "connections" || scenario == "reconnect-storm":
		srv, err = childServer(ctx, stderr, f.unsafeNoFsync)
	default:
		srv, err = inProcessServer(f.unsafeNoFsync)
	}
	if err != nil {
		return nil, err
	}
	defer srv.close()
	dur := bench.Duration(f.duration)
	var res *bench.Result
	switch scenario {
	case "throughput":
		res, err = bench.Throughput(ctx, srv.target, bench.ThroughputConfig{
			Senders: f.senders, Receivers: f.receivers, Window: f.window, Duration: dur, Messages: f.messages, Size: f.size,
			ServerInProcess: f.addr == "", Progress: progress,
		})
	case "latency":
		res, err = bench.Latency(ctx, srv.target, latencyConfig(f, progress))
	case "mobile":
		res, err = bench.Mobile(ctx, srv.target, bench.MobileConfig{
			LatencyConfig: latencyConfig(f, progress),
			RTT:           bench.Duration(f.rtt), Jitter: bench.Duration(f.jitter), Loss: f.loss,
			MigrateEvery: bench.Duration(f.migrateEvery), Seed: f.seed,
		})
	case "reconnect-storm":
		res, err = bench.Storm(ctx, srv.target, bench.StormConfig{
			Clients: f.clients, Senders: f.senders, ConnectRate: f.connectRate, Timeout: bench.Duration(f.timeout), Size: f.size,
			Progress: progress, Server: srv.metrics,
		})
	case "connections":
		res, err = connectionsRun(ctx, srv, f, progress, stderr)
	}
	if err != nil {
		return nil, err
	}
	res.Env = bench.CurrentEnv()
	res.Env.Server = srv.where
	if f.unsafeNoFsync {
		res.Env.Server += ", UNSAFE: no fsync"
		res.Notes = append(res.Notes, "UNSAFE run (--unsafe-no-fsync): the server acknowledged sends without fsync; the figures show what the disk's syncs cost, not what Tern delivers durably")
	}
	if res.Env.Commit == "" {
		res.Env.Commit = gitCommit()
	}
	return res, nil
}

func latencyConfig(f *benchFlags, progress io.Writer) bench.LatencyConfig {
	return bench.LatencyConfig{
		Rate: f.rate, Senders: f.senders, Receivers: f.receivers, Duration: bench.Duration(f.duration),
		Warmup: bench.Duration(f.warmup), Size: f.size, Progress: progress,
	}
}

func connectionsRun(ctx context.Context, srv *benchServer, f *benchFlags, progress, stderr io.Writer) (*bench.Result, error) {
	cfg := bench.ConnectionsConfig{
		Conns: f.conns, Ramp: f.ramp, Idle: bench.Duration(f.idle), Metrics: srv.metrics, GC: srv.gc, Progress: progress,
	}
	n := cfg.Conns
	if n <= 0 {
		n = 20000
	}
	procs := f.procs
	if procs <= 0 {
		per := bench.MaxConnsPerProcess()
		procs = (n + per - 1) / per
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for range procs - 1 {
		w, err := bench.StartWorker(ctx, []string{exe, "bench", "worker", "--addr", srv.addr, "--ca", srv.ca, "--data", srv.data}, stderr)
		if err != nil {
			return nil, err
		}
		defer w.Close()
		cfg.Workers = append(cfg.Workers, w)
	}
	return bench.Connections(ctx, srv.target, cfg)
}

// capture runs start (a CPU profile, an execution trace) writing to the file
// at path until the returned stop is called; with no path it does nothing.
func capture(path string, start func(io.Writer) error, stop func()) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		stop()
		f.Close()
	}, nil
}

// cmdBenchWorker is `tern bench worker`: the worker side of the connections
// scenario, started by the parent bench process (see bench.ServeWorker).
func cmdBenchWorker(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "server address")
	ca := fs.String("ca", "", "server CA")
	data := fs.String("data", "", "server data directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv, err := remoteServer(*addr, *ca, *data)
	if err != nil {
		return err
	}
	bench.MaxConnsPerProcess() // raises the open-file limit
	return bench.ServeWorker(ctx, srv.target, os.Stdin, os.Stdout)
}

// inProcessServer starts the embedded gateway in this process: Badger in a
// temporary directory, default storage options (but for unsafeNoSync), no
// send rate limit.
func inProcessServer(unsafeNoSync bool) (*benchServer, error) {
	dir, err := os.MkdirTemp("", "tern-bench-")
	if err != nil {
		return nil, err
	}
	// The server's goroutines, and those they start, carry the profiler
	// label side=server, so that a --cpuprofile of the shared process
	// splits by side: go tool pprof -tagfocus side=server (or -tagignore).
	var g *gateway.Gateway
	pprof.Do(context.Background(), pprof.Labels("side", "server"), func(context.Context) {
		g, err = gateway.Open(gateway.Config{Dir: dir, Core: core.Config{SendRate: -1}, Store: storage.Options{UnsafeNoSync: unsafeNoSync}})
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	t, err := bench.NewTern(bench.TernConfig{
		Addr:  g.Addr,
		TLS:   g.ClientTLS(),
		Token: func(user string) (string, error) { return g.Token(user, "bench", 24*time.Hour) },
	})
	if err != nil {
		g.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	return &benchServer{target: t, where: "in-process (shares this process with the clients)", close: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.Shutdown(ctx)
		os.RemoveAll(dir)
	}}, nil
}

// remoteServer targets a running server, minting tokens with the signing
// key in its data directory.
func remoteServer(addr, caFile, data string) (*benchServer, error) {
	keyFile := signingKeyPath(data)
	if _, err := os.Stat(keyFile); err != nil {
		return nil, fmt.Errorf("--data %s: no signing key: %w", data, err)
	}
	key, err := edge.LoadOrCreateSigningKey(keyFile)
	if err != nil {
		return nil, err
	}
	pool, err := edge.CertPool(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	tc := &tls.Config{RootCAs: pool}
	if host := hostOf(addr); host == "127.0.0.1" || host == "::1" || host == "" || host == "localhost" {
		tc.ServerName = "localhost"
	}
	signer := edge.TokenSigner{Key: key}
	t, err := bench.NewTern(bench.TernConfig{
		Addr: addr,
		TLS:  tc,
		Token: func(user string) (string, error) {
			return signer.Sign(core.UserID(user), core.DeviceID("bench"), 24*time.Hour)
		},
	})
	if err != nil {
		return nil, err
	}
	return &benchServer{target: t, where: "running server at " + addr, addr: addr, ca: caFile, data: data, close: func() {}}, nil
}

// childServer runs `tern serve` as a child process on loopback ports, with
// a temporary data directory and no send rate limit, and scrapes its
// /metrics; with unsafeNoSync, it acknowledges sends without fsync.
func childServer(ctx context.Context, stderr io.Writer, unsafeNoSync bool) (*benchServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tern-bench-serve-")
	if err != nil {
		return nil, err
	}
	readyFile := filepath.Join(dir, "ready.json")
	data := filepath.Join(dir, "data")
	args := []string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--ready-file", readyFile, "--send-rate", "-1", "--log-level", "warn", "--drain-timeout", "2s", "--pprof"}
	if unsafeNoSync {
		args = append(args, "--unsafe-no-fsync")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start tern serve: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(dir)
	}
	var rd ready
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(readyFile); err == nil && json.Unmarshal(b, &rd) == nil && rd.Listen != "" {
			break
		}
		select {
		case err := <-exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("tern serve exited before it was ready: %v", err)
		case <-ctx.Done():
			stop()
			return nil, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("tern serve not ready after 60s")
		}
	}
	srv, err := remoteServer(rd.Listen, rd.CA, data)
	if err != nil {
		stop()
		return nil, err
	}
	srv.where = fmt.Sprintf("child process (tern serve, pid %d)", rd.PID)
	srv.metrics = bench.Scrape("http://" + rd.HTTP + "/metrics")
	srv.gc = bench.PprofGC("http://" + rd.HTTP)
	srv.close = stop
	return srv, nil
}

// gitCommit is the checkout's commit when the binary carries none (go run).
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
