package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWalkthrough runs the README's CLI walkthrough against `tern serve`
// through the same entry point main uses.
func TestWalkthrough(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	readyFile := filepath.Join(dir, "ready.json")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--ready-file", readyFile, "--log-level", "warn"}, io.Discard, io.Discard)
	}()
	var rd ready
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(readyFile); err == nil && json.Unmarshal(b, &rd) == nil {
			break
		}
		select {
		case err := <-served:
			t.Fatalf("serve exited: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("serve not ready")
		}
	}
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	tern := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		if err != nil {
			return out.String(), errors.Join(err, errors.New(errOut.String()))
		}
		return out.String(), nil
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := tern(args...)
		if err != nil {
			t.Fatalf("tern %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	bob := strings.TrimSpace(must("token", "--data", data, "--user", "bob", "--device", "phone"))
	alice := strings.TrimSpace(must("token", "--data", data, "--user", "alice", "--device", "laptop"))
	conn := []string{"--addr", rd.Listen, "--ca", rd.CA, "--state", filepath.Join(dir, "state")}

	if got := must(append(append([]string{"send"}, conn...), "--token", alice, "--to", "bob", "hello bob")...); got != "1\n" {
		t.Fatalf("send printed %q, want the seq 1", got)
	}
	must(append(append([]string{"send"}, conn...), "--token", alice, "--to", "bob", "second")...)

	out := must(append(append([]string{"sync"}, conn...), "--token", bob)...)
	var msgs []messageJSON
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var m messageJSON
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("sync output %q: %v", out, err)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) != 2 || msgs[0].Seq != 1 || msgs[0].From != "alice" || msgs[0].Body != "hello bob" || msgs[1].Body != "second" || msgs[0].SentAt == "" {
		t.Fatalf("sync printed %+v", msgs)
	}
	if out := must(append(append([]string{"sync"}, conn...), "--token", bob)...); out != "" {
		t.Fatalf("a second sync printed %q; want nothing new", out)
	}

	if got := must(append(append([]string{"group"}, conn...), "--token", alice, "create", "team", "bob", "carol")...); got != "alice\nbob\ncarol\n" {
		t.Fatalf("group create printed %q", got)
	}
	must(append(append([]string{"send"}, conn...), "--token", alice, "--group", "team", "hi team")...)
	if out := must(append(append([]string{"sync"}, conn...), "--token", bob)...); !strings.Contains(out, `"group":"team"`) {
		t.Fatalf("bob's sync after the group send: %q", out)
	}
	must(append(append([]string{"block"}, conn...), "--token", bob, "alice")...)
	if _, err := tern(append(append([]string{"send"}, conn...), "--token", alice, "--to", "bob", "blocked?")...); err == nil || !strings.Contains(err.Error(), "BLOCKED") {
		t.Fatalf("send to a user who blocks the sender: %v, want BLOCKED", err)
	}

	// Usage errors exit 2 with a message; the version prints.
	if _, err := tern("send", "--token", alice); exitCode(err) != 2 {
		t.Fatalf("send without recipient: %v (exit %d), want a usage error", err, exitCode(err))
	}
	if _, err := tern("nope"); err == nil {
		t.Fatal("an unknown command succeeded")
	}
	if _, err := tern(); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("no command: %v", err)
	}
	if out := must("version"); !strings.HasPrefix(out, "tern ") {
		t.Fatalf("version printed %q", out)
	}
}

func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "tern.json")
	os.WriteFile(cfgFile, []byte(`{"listen": "127.0.0.1:5555", "core": {"ack_mode": "device", "retain_age": "1h"}, "edge": {"keepalive": "5s"}, "storage": {"unsafe_no_fsync": true}}`), 0o644)
	cfg, err := loadServeConfig([]string{"--config", cfgFile, "--listen", "127.0.0.1:6666"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:6666" || cfg.Core.AckMode != "device" || time.Duration(cfg.Core.RetainAge) != time.Hour ||
		time.Duration(cfg.Edge.KeepAlive) != 5*time.Second || cfg.Data != "./tern-data" || !cfg.Storage.UnsafeNoFsync {
		t.Fatalf("flags over file over defaults: %+v", cfg)
	}
	os.WriteFile(cfgFile, []byte(`{"listne": "x"}`), 0o644)
	if _, err := loadServeConfig([]string{"--config", cfgFile}, io.Discard); err == nil {
		t.Fatal("a misspelt field was accepted")
	}
}
