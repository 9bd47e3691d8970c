package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/bench/peers/ternproc"
)

var ternBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "peers-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	ternBinary, err = ternproc.Build(ctx, dir)
	cancel()
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// small is a workload that every target finishes in about a second.
var small = []string{"--messages", "200", "--duration", "30s", "--senders", "2", "--receivers", "2", "--window", "2", "--tern-binary"}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCompareAllTargets(t *testing.T) {
	report := filepath.Join(t.TempDir(), "report.html")
	args := append([]string{"--runs", "1", "--report", report}, append(small, ternBinary)...)
	code, out, errs := runCmd(t, args...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{"Tern's advantage", "Goal: Tern's throughput", "runs as a child process", "run inside this process"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, name := range systemNames(false) {
		if !strings.Contains(out, fmt.Sprintf("  %-16s ok (1 runs)", name)) {
			t.Errorf("no passing validation line for %s:\n%s", name, out)
		}
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("<pre>")) || !bytes.Contains(b, []byte("</html>")) {
		t.Errorf("report lacks the comparison or the page end")
	}
}

func TestJSON(t *testing.T) {
	args := append([]string{"--runs", "2", "--json", "--targets", "tern,nats-jetstream"}, append(small, ternBinary)...)
	code, out, errs := runCmd(t, args...)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, errs)
	}
	var got jsonComparison
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !got.Succeeded || len(got.Targets) != 2 {
		t.Fatalf("succeeded %v, %d targets", got.Succeeded, len(got.Targets))
	}
	for _, tg := range got.Targets {
		if len(tg.Runs) != 2 || len(tg.Median) == 0 {
			t.Errorf("%s: %d runs, %d median figures", tg.Name, len(tg.Runs), len(tg.Median))
		}
	}
	if got.Targets[0].Server != "child process" || got.Targets[1].Server != "in-process" {
		t.Errorf("servers %q, %q", got.Targets[0].Server, got.Targets[1].Server)
	}
	if len(got.Ratios) == 0 || got.Ratios[0].Advantage == nil || *got.Ratios[0].Advantage <= 0 {
		t.Errorf("ratios %+v", got.Ratios)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--scenario", "storm"},
		{"--targets", "kafka"},
		{"--runs", "0"},
		{"extra"},
	} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// lossy is an in-memory target that acknowledges every send and loses one
// in ten.
type lossy struct {
	mu    sync.Mutex
	users map[string]func(bench.Delivery)
	sends int
}

func (l *lossy) Name() string { return "lossy" }
func (l *lossy) Close() error { return nil }
func (l *lossy) Connect(_ context.Context, user string, deliver func(bench.Delivery)) (bench.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users[user] = deliver
	return lossyConn{l}, nil
}

type lossyConn struct{ l *lossy }

func (c lossyConn) Close() error { return nil }
func (c lossyConn) Send(_ context.Context, to string, body []byte) error {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.l.sends++
	if d := c.l.users[to]; d != nil && c.l.sends%10 != 0 {
		d(bench.Delivery{Body: bytes.Clone(body), At: time.Now()})
	}
	return nil
}

// TestValidationFailureIsLoud runs a target that loses messages: the
// command says so and exits 1.
func TestValidationFailureIsLoud(t *testing.T) {
	saved := systems
	t.Cleanup(func() { systems = saved })
	systems = append(systems[:len(systems):len(systems)], system{
		name: "lossy", inProcess: true, durability: "none",
		start: func(context.Context, string, startOptions) (running, error) {
			return running{target: &lossy{users: make(map[string]func(bench.Delivery))}}, nil
		},
	})
	args := []string{"--runs", "1", "--targets", "lossy", "--messages", "100", "--senders", "2", "--receivers", "2", "--window", "2"}
	args = append(args, "--scenario", "throughput")
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, append(args, "--duration", "30s", "--drain", "1s"), &out, &errb)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "FAILED") || !strings.Contains(out.String(), "reliable") {
		t.Errorf("the failure is not loud enough:\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
}
