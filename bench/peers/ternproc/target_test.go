package ternproc

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/bench/peers/internal/targettest"
)

// binary is the tern executable built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ternproc-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	binary, err = Build(ctx, dir)
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

func newTarget(t *testing.T) bench.Target {
	targettest.NoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := Start(ctx, Config{Binary: binary, Dir: t.TempDir(), Stderr: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := NewTarget(srv)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tg.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return tg
}

// testWriter sends the server's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("tern serve: %s", p)
	return len(p), nil
}

func TestContract(t *testing.T) {
	targettest.Run(t, newTarget, targettest.Options{})
}

func TestServerCPU(t *testing.T) {
	tg := newTarget(t).(*Target)
	cpu, err := tg.Server().CPU()
	if err != nil {
		t.Fatal(err)
	}
	if cpu <= 0 || cpu > time.Hour {
		t.Fatalf("server CPU %v: want a small positive time (the server started up)", cpu)
	}
}
