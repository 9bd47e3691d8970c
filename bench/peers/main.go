// Command peers runs Tern and its durable peers side by side on the same
// durable-inbox workload (package bench's scenarios and delivery
// validator), and prints each one's figures and Tern's ratio to each peer:
//
//	cd bench/peers && go run . [--scenario throughput|latency] [--runs 3] [--duration 10s] [--json] [--report out.html]
//
// The peers (mochi-mqtt over TCP and over QUIC, NATS JetStream) run inside
// this process; Tern runs as a child process (`tern serve`, built from this
// checkout). Every run of every target starts a fresh server in a fresh
// temporary directory. Runs go round-robin over the targets, in a rotated
// order each round, so that a slow phase of a shared machine does not fall
// on one target only. The command exits with status 1 when any validator
// reports a broken guarantee or a run fails, 2 on a usage error.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/bench/peers/ternproc"
)

type options struct {
	scenario   string
	runs       int
	targets    []string
	jsonOut    bool
	report     string
	ternBinary string
	verbose    bool
	progress   bool

	duration                   time.Duration
	senders, receivers, window int
	size                       int
	rate                       float64
	messages                   int
	drain                      time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.scenario, "scenario", "throughput", "throughput or latency")
	fs.IntVar(&o.runs, "runs", 3, "runs of each target; figures are the medians")
	targets := fs.String("targets", strings.Join(systemNames(false), ","), "comma-separated targets to run, of: "+strings.Join(systemNames(true), ", "))
	fs.BoolVar(&o.jsonOut, "json", false, "write JSON instead of tables")
	fs.StringVar(&o.report, "report", "", "also write an HTML report to this file")
	fs.StringVar(&o.ternBinary, "tern-binary", "", "tern executable to run (default: build ../../cmd/tern)")
	fs.BoolVar(&o.verbose, "v", false, "also print every target's full figures, and server logs (warnings)")
	fs.BoolVar(&o.progress, "progress", false, "print a status line a second to stderr")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each run sends")
	fs.IntVar(&o.senders, "senders", 16, "sending users")
	fs.IntVar(&o.receivers, "receivers", 16, "receiving users")
	fs.IntVar(&o.window, "window", 8, "throughput: sends in flight per sender")
	fs.IntVar(&o.size, "size", 100, "message body size in bytes")
	fs.Float64Var(&o.rate, "rate", 500, "latency: offered messages per second (open loop; keep it below every target's throughput)")
	fs.IntVar(&o.messages, "messages", 0, "throughput: stop after this many sends instead of --duration")
	fs.DurationVar(&o.drain, "drain", 30*time.Second, "how long to wait for deliveries after the last send")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "peers: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if o.scenario != "throughput" && o.scenario != "latency" {
		fmt.Fprintf(stderr, "peers: --scenario %q: want throughput or latency\n", o.scenario)
		return 2
	}
	if o.runs < 1 {
		fmt.Fprintln(stderr, "peers: --runs must be at least 1")
		return 2
	}
	var syss []system
	for _, n := range strings.Split(*targets, ",") {
		s, err := findSystem(strings.TrimSpace(n))
		if err != nil {
			fmt.Fprintf(stderr, "peers: --targets: %v (known: %s)\n", err, strings.Join(systemNames(true), ", "))
			return 2
		}
		syss = append(syss, s)
	}

	cmp, err := compare(ctx, o, syss, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "peers: %v\n", err)
		return 1
	}
	if o.jsonOut {
		err = cmp.writeJSON(stdout)
	} else {
		err = cmp.writeText(stdout, o.verbose)
	}
	if err == nil && o.report != "" {
		err = cmp.writeHTML(o.report)
	}
	if err != nil {
		fmt.Fprintf(stderr, "peers: %v\n", err)
		return 1
	}
	if bad := cmp.failures(); len(bad) > 0 {
		fmt.Fprintf(stderr, "\npeers: FAILED — %d run(s) broke a delivery guarantee or did not finish:\n", len(bad))
		for _, b := range bad {
			fmt.Fprintf(stderr, "  %s\n", b)
		}
		return 1
	}
	return 0
}

// compare runs every system o.runs times and collects the results.
func compare(ctx context.Context, o options, syss []system, stderr io.Writer) (*comparison, error) {
	work, err := os.MkdirTemp("", "tern-peers-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	so := startOptions{ternBinary: o.ternBinary}
	if o.verbose {
		so.stderr = stderr
	}
	for _, s := range syss {
		if s.name == "tern" && so.ternBinary == "" {
			fmt.Fprintln(stderr, "building tern (go build ./cmd/tern in the Tern module)...")
			bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			so.ternBinary, err = ternproc.Build(bctx, work)
			cancel()
			if err != nil {
				return nil, err
			}
		}
	}

	cmp := newComparison(o, syss)
	for r := range o.runs {
		for i := range syss {
			s := syss[(i+r)%len(syss)] // rotate the order every round
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fmt.Fprintf(stderr, "run %d/%d: %s...\n", r+1, o.runs, s.name)
			res, err := runOnce(ctx, o, s, so, work, stderr)
			if err != nil {
				err = fmt.Errorf("%s run %d: %w", s.name, r+1, err)
				fmt.Fprintf(stderr, "  %v\n", err)
			} else {
				summary := "ok"
				if res.Failed() {
					summary = "VALIDATION FAILED: " + res.Validation.Summary()
				}
				f, _ := res.Figure(cmp.headline[0])
				fmt.Fprintf(stderr, "  %s %.0f %s; %s\n", f.Label, f.Value, f.Unit, summary)
			}
			cmp.add(s.name, res, err)
		}
	}
	return cmp, nil
}

// runOnce starts s in a fresh directory, runs the scenario and stops s.
func runOnce(ctx context.Context, o options, s system, so startOptions, work string, stderr io.Writer) (res *bench.Result, err error) {
	dir, err := os.MkdirTemp(work, strings.ReplaceAll(s.name, "/", "-")+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	rn, err := s.start(sctx, filepath.Join(dir, "data"), so)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	defer func() {
		if cerr := rn.target.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("stop: %w", cerr)
		}
	}()

	var cpu0 time.Duration
	if rn.serverCPU != nil {
		if cpu0, err = rn.serverCPU(); err != nil {
			return nil, err
		}
	}
	var progress io.Writer
	if o.progress {
		progress = stderr
	}
	switch o.scenario {
	case "throughput":
		res, err = bench.Throughput(ctx, rn.target, bench.ThroughputConfig{
			Senders: o.senders, Receivers: o.receivers, Window: o.window,
			Duration: bench.Duration(o.duration), Messages: o.messages, Size: o.size,
			Drain: bench.Duration(o.drain), ServerInProcess: s.inProcess, Progress: progress,
		})
	case "latency":
		res, err = bench.Latency(ctx, rn.target, bench.LatencyConfig{
			Rate: o.rate, Senders: o.senders, Receivers: o.receivers,
			Duration: bench.Duration(o.duration), Size: o.size, Drain: bench.Duration(o.drain), Progress: progress,
		})
	}
	if err != nil {
		return nil, err
	}
	res.Env = bench.CurrentEnv()
	if s.inProcess {
		res.Env.Server = "in-process"
	} else {
		res.Env.Server = "child process"
	}
	addCPU(res, s, rn, cpu0)
	if rn.dropped != nil {
		if n := rn.dropped(); n > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("the server dropped %d message(s) at its session or queue limits", n))
		}
	}
	return res, nil
}

// addCPU adds total_cpu_per_msg_us: the CPU of clients and server per
// delivered message, whichever process the server ran in.
func addCPU(res *bench.Result, s system, rn running, cpu0 time.Duration) {
	client, ok := res.Figure("cpu_per_msg_us")
	if !ok {
		return // the latency scenario measures no CPU
	}
	total := client.Value
	if rn.serverCPU != nil {
		// Over the whole scenario (connects included), per acknowledged
		// message, as the client figure is per delivered one (the validator
		// checks that the two counts match).
		cpu1, err := rn.serverCPU()
		msgs, ok := res.Figure("messages")
		if err != nil || !ok || msgs.Value == 0 {
			return
		}
		server := float64((cpu1 - cpu0).Microseconds()) / msgs.Value
		res.Figures = append(res.Figures, bench.Figure{Name: "server_cpu_per_msg_us", Label: "server CPU per message", Value: server, Unit: "µs"})
		res.Notes = append(res.Notes, "CPU per message, clients + server, adds the server process's CPU (from /proc, over the whole run, per acknowledged message)")
		total += server
	}
	res.Figures = append(res.Figures, bench.Figure{Name: "total_cpu_per_msg_us", Label: "CPU per message, clients + server", Value: total, Unit: "µs"})
}
