// Package ternproc runs Tern for the side-by-side comparison: it builds the
// tern binary from the Tern module this module replaces (../..), starts
// `tern serve` as a child process on loopback in a data directory of its
// own, mints tokens with the signing key the server created there, and
// hands out a bench.Target whose clients are Tern's Go SDK.
//
// Unlike the peers, which run inside the benchmark process, the Tern server
// is a separate process: the benchmark's CPU figures then count only Tern's
// clients, and Server.CPU reports the server's share.
//
// Concurrency: a Server is safe for concurrent use. Start runs one goroutine
// that waits for the child; Close stops the child and waits for it.
package ternproc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
)

// Build compiles github.com/ternhq/tern/cmd/tern into dir and returns the
// binary's path. It builds inside the Tern module (its own go.mod and
// go.sum), located with `go list -m`, so the binary is the one Tern ships.
func Build(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/ternhq/tern").Output()
	if err != nil {
		return "", fmt.Errorf("ternproc: locate the tern module: %w", err)
	}
	root := strings.TrimSpace(string(out))
	bin := filepath.Join(dir, "tern")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tern")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ternproc: go build ./cmd/tern in %s: %w\n%s", root, err, stderr.Bytes())
	}
	return bin, nil
}

// Config configures Start.
type Config struct {
	// Binary is the tern executable (see Build). Required.
	Binary string
	// Dir is the server's data directory. Required.
	Dir string
	// Args are more `tern serve` flags, after the ones Start sets.
	Args []string
	// Stderr receives the server's logs (level warn); nil discards them.
	Stderr io.Writer
	// ReadyTimeout bounds the wait for the server to serve; default 60s.
	ReadyTimeout time.Duration
}

// Server is a running `tern serve` child process.
type Server struct {
	// Addr is the edge's UDP address; HTTP the metrics and health address.
	Addr, HTTP string
	// TLS trusts the server's development certificate.
	TLS *tls.Config

	cmd    *exec.Cmd
	signer edge.TokenSigner
	exited chan struct{} // closed when the child has exited
	err    error         // the child's exit status; read after exited
}

// ready is what `tern serve --ready-file` writes.
type ready struct {
	Listen string `json:"listen"`
	HTTP   string `json:"http"`
	CA     string `json:"ca"`
	PID    int    `json:"pid"`
}

// Start runs `tern serve` with its data in cfg.Dir, listening on
// 127.0.0.1 (ports chosen by the system), without a per-user send rate
// limit, and waits until it serves.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("ternproc: Config.Binary and Config.Dir are required")
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	readyFile := filepath.Join(cfg.Dir, "ready.json")
	args := append([]string{"serve",
		"--data", cfg.Dir,
		"--listen", "127.0.0.1:0",
		"--http", "127.0.0.1:0",
		"--ready-file", readyFile,
		"--send-rate", "-1",
		"--log-level", "warn",
	}, cfg.Args...)
	cmd := exec.Command(cfg.Binary, args...)
	cmd.Stdout = cfg.Stderr
	cmd.Stderr = cfg.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ternproc: start %s: %w", cfg.Binary, err)
	}
	s := &Server{cmd: cmd, exited: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()

	r, err := s.awaitReady(ctx, readyFile, cfg.ReadyTimeout)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Addr, s.HTTP = r.Listen, r.HTTP
	pem, err := os.ReadFile(r.CA)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("ternproc: server certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		s.Close()
		return nil, fmt.Errorf("ternproc: %s holds no certificate", r.CA)
	}
	s.TLS = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	key, err := edge.LoadOrCreateSigningKey(filepath.Join(cfg.Dir, "keys", "token-ed25519.pem"))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("ternproc: signing key: %w", err)
	}
	s.signer = edge.TokenSigner{Key: key}
	return s, nil
}

// awaitReady polls for the ready file (the only signal `tern serve` gives)
// until it parses, the child exits, or the timeout.
func (s *Server) awaitReady(ctx context.Context, path string, timeout time.Duration) (ready, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var r ready
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &r) == nil && r.Listen != "" {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return ready{}, fmt.Errorf("ternproc: waiting for the server: %w", ctx.Err())
		case <-s.exited:
			return ready{}, fmt.Errorf("ternproc: tern serve exited before serving: %v", s.err)
		case <-deadline.C:
			return ready{}, fmt.Errorf("ternproc: tern serve not ready after %v", timeout)
		case <-tick.C:
		}
	}
}

// Token mints a token for user's device "bench", valid for a day.
func (s *Server) Token(user string) (string, error) {
	return s.signer.Sign(core.UserID(user), core.DeviceID("bench"), 24*time.Hour)
}

// PID is the child's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// CPU returns the CPU time (user + system) the server process has used so
// far, from /proc (Linux).
func (s *Server) CPU() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.PID()))
	if err != nil {
		return 0, fmt.Errorf("ternproc: cpu: %w", err)
	}
	// Fields after the command name (which may hold spaces) start after
	// the last ')': state is field 3, utime 14, stime 15 (1-based).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("ternproc: cpu: unreadable /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("ternproc: cpu: short /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("ternproc: cpu: unreadable /proc stat")
	}
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// Close asks the server to drain (SIGTERM) and waits for it, at most 15 s,
// after which it kills it. It returns nil when the server exited cleanly.
func (s *Server) Close() error {
	select {
	case <-s.exited:
		return s.exitErr()
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-s.exited:
		return s.exitErr()
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("ternproc: tern serve did not exit within 15s of SIGTERM; killed")
	}
}

func (s *Server) exitErr() error {
	if s.err != nil {
		return fmt.Errorf("ternproc: tern serve: %w", s.err)
	}
	return nil
}
