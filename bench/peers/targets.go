package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/bench/peers/mochi"
	"github.com/ternhq/tern/bench/peers/natsjs"
	"github.com/ternhq/tern/bench/peers/ternproc"
)

// system is one of the compared systems: how to start it fresh in a data
// directory, and where its server runs.
type system struct {
	name string
	// inProcess: the server runs in this process, sharing its CPUs and its
	// CPU figures with the clients. Otherwise it is a child process.
	inProcess bool
	// extra: run only when named in --targets.
	extra bool
	// durability says how the system is made to store before it acks.
	durability string
	start      func(ctx context.Context, dir string, o startOptions) (running, error)
}

type startOptions struct {
	ternBinary string
	stderr     io.Writer // server logs
}

// running is a started system.
type running struct {
	target bench.Target
	// serverCPU, for a child-process server, reports its CPU time so far.
	serverCPU func() (time.Duration, error)
	// dropped, when set, reports messages the server dropped by design
	// (mochi's session and queue limits).
	dropped func() int64
}

var systems = []system{
	{
		name:       "tern",
		durability: "group commit: Badger without SyncWrites, one syncer per store; Send is acked after the fdatasync covering it",
		start: func(ctx context.Context, dir string, o startOptions) (running, error) {
			srv, err := ternproc.Start(ctx, ternproc.Config{Binary: o.ternBinary, Dir: dir, Stderr: o.stderr})
			if err != nil {
				return running{}, err
			}
			t, err := ternproc.NewTarget(srv)
			if err != nil {
				srv.Close()
				return running{}, err
			}
			return running{target: t, serverCPU: srv.CPU}, nil
		},
	},
	mochiSystem(mochi.TCP),
	mochiSystem(mochi.QUIC),
	{
		name:       "nats-jetstream",
		inProcess:  true,
		durability: "JetStream SyncAlways (sync_interval: always): fsync after every message block write, before the PubAck; checked at start",
		start: func(ctx context.Context, dir string, o startOptions) (running, error) {
			t, err := natsjs.New(natsjs.Config{Dir: dir})
			if err != nil {
				return running{}, err
			}
			return running{target: t}, nil
		},
	},
	{
		name:       "nats-jetstream/tls",
		inProcess:  true,
		extra:      true,
		durability: "as nats-jetstream; clients over TLS 1.3, as Tern's are",
		start: func(ctx context.Context, dir string, o startOptions) (running, error) {
			t, err := natsjs.New(natsjs.Config{Dir: dir, TLS: true})
			if err != nil {
				return running{}, err
			}
			return running{target: t}, nil
		},
	},
}

func mochiSystem(tr mochi.Transport) system {
	return system{
		name:       "mochi-mqtt/" + string(tr),
		inProcess:  true,
		durability: "Badger hook with SyncWrites (each hook write a transaction synced with msync) and a store-before-ack hook (the message is stored in the subscriber's session before the PUBACK)",
		start: func(ctx context.Context, dir string, o startOptions) (running, error) {
			var log *slog.Logger
			if o.stderr != nil {
				log = slog.New(slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			}
			t, err := mochi.New(mochi.Config{Dir: dir, Transport: tr, Logger: log})
			if err != nil {
				return running{}, err
			}
			return running{target: t, dropped: func() int64 { a, b := t.Dropped(); return a + b }}, nil
		},
	}
}

func findSystem(name string) (system, error) {
	for _, s := range systems {
		if s.name == name {
			return s, nil
		}
	}
	return system{}, fmt.Errorf("unknown target %q", name)
}

// systemNames lists the systems run by default, and the extra ones too
// when extra is set.
func systemNames(extra bool) []string {
	var ns []string
	for _, s := range systems {
		if extra || !s.extra {
			ns = append(ns, s.name)
		}
	}
	return ns
}
