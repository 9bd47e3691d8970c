package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchCommand runs a small throughput benchmark through the command
// line, with JSON output, two runs, an HTML report and an execution trace.
func TestBenchCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	report, traceFile := filepath.Join(dir, "report.html"), filepath.Join(dir, "bench.trace")
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"bench", "throughput", "--messages", "200", "--senders", "2", "--receivers", "2", "--window", "2",
		"--json", "--runs", "2", "--report", report, "--trace", traceFile, "--quiet"}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	dec := json.NewDecoder(&out)
	var objs []map[string]any
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, m)
	}
	if len(objs) != 3 {
		t.Fatalf("%d JSON objects, want 2 runs and a summary", len(objs))
	}
	for _, run := range objs[:2] {
		v, _ := run["validation"].(map[string]any)
		if v["delivered"] != 200.0 || run["env"] == nil {
			t.Errorf("run: validation %v, env %v", v, run["env"])
		}
		figures, _ := run["figures"].([]any)
		names := make([]string, 0, len(figures))
		for _, f := range figures {
			if f, ok := f.(map[string]any); ok {
				names = append(names, fmt.Sprint(f["name"]))
			}
		}
		for _, want := range []string{"delivered_per_s", "cpu_per_msg_us", "disk_per_msg_kib"} {
			if !slices.Contains(names, want) {
				t.Errorf("run: no figure %s among %v", want, names)
			}
		}
	}
	if objs[2]["runs"] != 2.0 || objs[2]["median"] == nil {
		t.Errorf("summary %v", objs[2])
	}
	page, err := os.ReadFile(report)
	if err != nil || !strings.Contains(string(page), "<svg") {
		t.Errorf("report: %v", err)
	}
	tr, err := os.ReadFile(traceFile)
	if err != nil || !bytes.HasPrefix(tr, []byte("go 1.")) || len(tr) < 4096 {
		t.Errorf("execution trace: %d bytes, %v", len(tr), err)
	}
}

// TestBenchUnsafeNoFsync: a run whose server skips the fsyncs says so, in
// its notes and in where the server ran.
func TestBenchUnsafeNoFsync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"bench", "throughput", "--messages", "50", "--senders", "1", "--receivers", "1", "--window", "2",
		"--json", "--quiet", "--unsafe-no-fsync"}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	var res struct {
		Notes []string `json:"notes"`
		Env   struct {
			Server string `json:"server"`
		} `json:"env"`
		Validation struct {
			Delivered int `json:"delivered"`
		} `json:"validation"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if res.Validation.Delivered != 50 || !strings.Contains(res.Env.Server, "UNSAFE") ||
		!strings.Contains(strings.Join(res.Notes, "\n"), "without fsync") {
		t.Fatalf("an unsafe run not labelled as such: %+v", res)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench"},
		{"bench", "nosuch"},
		{"bench", "throughput", "--addr", "127.0.0.1:1"},
		{"bench", "connections", "--addr", "127.0.0.1:1", "--ca", "x", "--data", "y"},
		{"bench", "latency", "extra"},
		{"bench", "throughput", "--addr", "127.0.0.1:1", "--ca", "x", "--data", "y", "--unsafe-no-fsync"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		if exitCode(err) != 2 {
			t.Errorf("%v: %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}

// TestInProcessServerLabelled: the in-process server's goroutines carry
// the profiler label side=server, so that a --cpuprofile splits by side.
func TestInProcessServerLabelled(t *testing.T) {
	srv, err := inProcessServer(false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), `"side":"server"`); n == 0 {
		t.Fatalf("no goroutine labelled side=server:\n%.2000s", b.String())
	}
}
