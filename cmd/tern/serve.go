package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/gateway"
	"github.com/ternhq/tern/push"
	"github.com/ternhq/tern/storage"
)

// serveConfig is tern serve's configuration: built-in defaults, then a JSON
// file (--config), then flags. Durations are strings such as "30s".
type serveConfig struct {
	// Data is the data directory: database, signing key, dev certificate.
	Data string `json:"data"`
	// Listen is the QUIC (UDP) address.
	Listen string `json:"listen"`
	// HTTP is the address of /healthz and /metrics; "" or "off" disables it.
	HTTP string `json:"http"`
	// Cert and Key are PEM files; without them a self-signed development
	// certificate is created under Data/tls.
	Cert string `json:"cert"`
	Key  string `json:"key"`
	// TokenKeys are extra Ed25519 public keys (PEM) accepted for tokens,
	// e.g. the app backend's; the key under Data/keys is always accepted.
	TokenKeys []string `json:"token_keys"`
	// Memory keeps all state in memory (development only: lost on exit).
	Memory bool `json:"memory"`
	// ReadyFile, when set, receives a JSON line with the bound addresses
	// once the server is serving.
	ReadyFile string `json:"ready_file"`
	// DrainTimeout bounds the graceful drain on SIGTERM.
	DrainTimeout duration `json:"drain_timeout"`
	// Pprof serves Go's profiler under /debug/pprof/ on the HTTP address.
	// Off by default: profiles reveal internals, so keep HTTP private.
	Pprof     bool   `json:"pprof"`
	LogLevel  string `json:"log_level"`
	LogFormat string `json:"log_format"`

	Core    coreConfig    `json:"core"`
	Storage storageConfig `json:"storage"`
	Edge    edgeConfig    `json:"edge"`
	Push    pushConfig    `json:"push"`
}

// pushConfig enables APNs when apns.key_file or apns.cert_file is set, and
// FCM when fcm.credentials_file (or, for tests, fcm.endpoint) is set.
type pushConfig struct {
	// Preview puts the newest message's sender and text into pushes;
	// default false: no message content leaves the server.
	Preview bool `json:"preview"`
	APNs    struct {
		KeyFile      string   `json:"key_file"`
		KeyID        string   `json:"key_id"`
		TeamID       string   `json:"team_id"`
		CertFile     string   `json:"cert_file"`
		CertPassword string   `json:"cert_password"`
		Topic        string   `json:"topic"`
		PushType     string   `json:"push_type"`
		Expiration   duration `json:"expiration"`
		// Endpoint and CAFile point at another server (a local mock in
		// tests) instead of Apple's.
		Endpoint string `json:"endpoint"`
		CAFile   string `json:"ca_file"`
	} `json:"apns"`
	FCM struct {
		CredentialsFile string   `json:"credentials_file"`
		ProjectID       string   `json:"project_id"`
		Priority        string   `json:"priority"`
		TTL             duration `json:"ttl"`
		Notification    bool     `json:"notification"`
		Endpoint        string   `json:"endpoint"`
		CAFile          string   `json:"ca_file"`
	} `json:"fcm"`
}

// config returns the push service configuration, nil when no provider is
// configured.
func (p pushConfig) config(log *slog.Logger) (*push.Config, error) {
	var cfg push.Config
	if p.APNs.KeyFile != "" || p.APNs.CertFile != "" {
		a := &push.APNsConfig{
			KeyFile: p.APNs.KeyFile, KeyID: p.APNs.KeyID, TeamID: p.APNs.TeamID,
			CertFile: p.APNs.CertFile, CertPassword: p.APNs.CertPassword,
			Topic: p.APNs.Topic, PushType: p.APNs.PushType, Expiration: time.Duration(p.APNs.Expiration),
			Endpoint: p.APNs.Endpoint,
		}
		if p.APNs.CAFile != "" {
			pool, err := edge.CertPool(p.APNs.CAFile)
			if err != nil {
				return nil, fmt.Errorf("push.apns.ca_file: %w", err)
			}
			a.RootCAs = pool
		}
		cfg.APNs = a
	} else {
		log.Info("APNs is not configured (push.apns.key_file or cert_file): iOS devices will not be woken")
	}
	if p.FCM.CredentialsFile != "" || p.FCM.Endpoint != "" {
		f := &push.FCMConfig{
			CredentialsFile: p.FCM.CredentialsFile, ProjectID: p.FCM.ProjectID, Priority: p.FCM.Priority,
			TTL: time.Duration(p.FCM.TTL), Notification: p.FCM.Notification, Endpoint: p.FCM.Endpoint,
		}
		if p.FCM.CAFile != "" {
			pool, err := edge.CertPool(p.FCM.CAFile)
			if err != nil {
				return nil, fmt.Errorf("push.fcm.ca_file: %w", err)
			}
			f.RootCAs = pool
		}
		cfg.FCM = f
	} else {
		log.Info("FCM is not configured (push.fcm.credentials_file): Android devices will not be woken")
	}
	if cfg.APNs == nil && cfg.FCM == nil {
		return nil, nil
	}
	return &cfg, nil
}

type coreConfig struct {
	AckMode      string   `json:"ack_mode"`
	RetainCount  int      `json:"retain_count"`
	RetainAge    duration `json:"retain_age"`
	DedupWindow  duration `json:"dedup_window"`
	MaxBodySize  int      `json:"max_body_size"`
	MaxGroupSize int      `json:"max_group_size"`
	SendRate     float64  `json:"send_rate"`
	SendBurst    int      `json:"send_burst"`
	SyncLimit    int      `json:"sync_limit"`
	// ForwardMaxInFlight bounds concurrent deliveries to recipients'
	// mailboxes (0: 256).
	ForwardMaxInFlight int `json:"forward_max_in_flight"`
}

type storageConfig struct {
	Shards   int `json:"shards"`
	MaxBatch int `json:"max_batch"`
	// UnsafeNoFsync answers sends before they are fsync'd: a crash can
	// lose acknowledged messages. For measuring the disk's share and for
	// throwaway data only (storage.Options.UnsafeNoSync).
	UnsafeNoFsync bool `json:"unsafe_no_fsync"`
}

type edgeConfig struct {
	MaxFrameSize int      `json:"max_frame_size"`
	KeepAlive    duration `json:"keepalive"`
	IdleTimeout  duration `json:"idle_timeout"`
	MaxStreams   int64    `json:"max_streams"`
	GoAwayJitter duration `json:"goaway_jitter"`
	// Handshakes, HandshakeTimeout and ReceiveBuffer: see edge.QUICOptions.
	Handshakes       int      `json:"handshakes"`
	HandshakeTimeout duration `json:"handshake_timeout"`
	ReceiveBuffer    int      `json:"receive_buffer"`
}

func defaultServeConfig() serveConfig {
	return serveConfig{
		Data:         "./tern-data",
		Listen:       "127.0.0.1:4433",
		HTTP:         "127.0.0.1:9090",
		DrainTimeout: duration(10 * time.Second),
		LogLevel:     "info",
		LogFormat:    "text",
	}
}

// duration is a time.Duration written as a string in JSON.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// durationFlag binds a duration field to a flag.
type durationFlag struct{ d *duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return "0s"
	}
	return time.Duration(*f.d).String()
}
func (f durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	*f.d = duration(v)
	return err
}

func loadServeConfig(args []string, stderr io.Writer) (serveConfig, error) {
	cfg := defaultServeConfig()
	if path := flagValue(args, "config"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", "", "JSON configuration file (flags override it); see docs/configuration.md")
	fs.StringVar(&cfg.Data, "data", cfg.Data, "data directory")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "QUIC listen address (UDP)")
	fs.StringVar(&cfg.HTTP, "http", cfg.HTTP, "address for /healthz and /metrics (\"off\" disables)")
	fs.StringVar(&cfg.Cert, "cert", cfg.Cert, "TLS certificate (PEM); default: a development certificate under DATA/tls")
	fs.StringVar(&cfg.Key, "key", cfg.Key, "TLS private key (PEM)")
	fs.BoolVar(&cfg.Memory, "memory", cfg.Memory, "keep state in memory only (development)")
	fs.StringVar(&cfg.ReadyFile, "ready-file", cfg.ReadyFile, "write the bound addresses as JSON to this file once serving")
	fs.BoolVar(&cfg.Pprof, "pprof", cfg.Pprof, "serve Go's profiler under /debug/pprof/ on --http")
	fs.Var(durationFlag{&cfg.DrainTimeout}, "drain-timeout", "how long a graceful drain may take")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	fs.StringVar(&cfg.Core.AckMode, "ack-mode", cfg.Core.AckMode, "account (default) or device")
	fs.IntVar(&cfg.Core.RetainCount, "retain-count", cfg.Core.RetainCount, "entries kept per mailbox (0: 100000, <0: unlimited)")
	fs.Var(durationFlag{&cfg.Core.RetainAge}, "retain-age", "entries older than this are trimmed (0: 720h, <0: never)")
	fs.Float64Var(&cfg.Core.SendRate, "send-rate", cfg.Core.SendRate, "messages/s per user (0: 100, <0: unlimited)")
	fs.IntVar(&cfg.Core.SendBurst, "send-burst", cfg.Core.SendBurst, "burst above --send-rate (0: 500)")
	fs.IntVar(&cfg.Storage.Shards, "shards", cfg.Storage.Shards, "storage shards, fixed when the data directory is created (0: default)")
	fs.BoolVar(&cfg.Storage.UnsafeNoFsync, "unsafe-no-fsync", cfg.Storage.UnsafeNoFsync, "UNSAFE: acknowledge sends without fsync (a crash loses them); for measurements and throwaway data")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, usageError{fmt.Sprintf("serve: unexpected argument %q", fs.Arg(0))}
	}
	return cfg, nil
}

// flagValue finds -name V, --name V, -name=V or --name=V in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadServeConfig(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return usageError{err.Error()}
	}
	return serve(ctx, cfg, log)
}

// ready is what --ready-file receives.
type ready struct {
	Listen string `json:"listen"`
	HTTP   string `json:"http,omitempty"`
	CA     string `json:"ca,omitempty"`
	PID    int    `json:"pid"`
}

// serve runs the embedded gateway (edge + core + storage) until ctx is done,
// then drains.
func serve(ctx context.Context, cfg serveConfig, log *slog.Logger) error {
	var keys []ed25519.PublicKey
	for _, f := range cfg.TokenKeys {
		k, err := edge.LoadPublicKey(f)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	tlsConf, err := serverTLS(cfg)
	if err != nil {
		return err
	}
	ackMode, err := core.ParseAckMode(cfg.Core.AckMode)
	if err != nil {
		return usageError{err.Error()}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := newPromMetrics(reg, log, core.MetricDescs, storage.MetricDescs, edge.MetricDescs, push.MetricDescs)
	if err != nil {
		return err
	}
	if cfg.Memory {
		log.Warn("state is kept in memory only and is lost on exit (--memory)")
	}
	pushCfg, err := cfg.Push.config(log)
	if err != nil {
		return err
	}
	g, err := gateway.Open(gateway.Config{
		Dir:       cfg.Data,
		Memory:    cfg.Memory,
		Listen:    cfg.Listen,
		TLS:       tlsConf,
		TokenKeys: keys,
		Push:      pushCfg,
		Logger:    log,
		Metrics:   metrics,
		Core: core.Config{
			AckMode:      ackMode,
			RetainCount:  cfg.Core.RetainCount,
			RetainAge:    time.Duration(cfg.Core.RetainAge),
			DedupWindow:  time.Duration(cfg.Core.DedupWindow),
			MaxBodySize:  cfg.Core.MaxBodySize,
			MaxGroupSize: cfg.Core.MaxGroupSize,
			SendRate:     cfg.Core.SendRate,
			SendBurst:    cfg.Core.SendBurst,
			SyncLimit:    cfg.Core.SyncLimit,
			Forward:      core.ForwardConfig{MaxInFlight: cfg.Core.ForwardMaxInFlight},
			PushPreview:  cfg.Push.Preview,
		},
		Store: storage.Options{Shards: cfg.Storage.Shards, MaxBatch: cfg.Storage.MaxBatch, UnsafeNoSync: cfg.Storage.UnsafeNoFsync},
		Edge: edge.Config{
			MaxFrameSize: cfg.Edge.MaxFrameSize,
			KeepAlive:    time.Duration(cfg.Edge.KeepAlive),
			GoAwayJitter: time.Duration(cfg.Edge.GoAwayJitter),
		},
		QUIC: edge.QUICOptions{
			IdleTimeout:      time.Duration(cfg.Edge.IdleTimeout),
			MaxStreams:       cfg.Edge.MaxStreams,
			Handshakes:       cfg.Edge.Handshakes,
			HandshakeTimeout: time.Duration(cfg.Edge.HandshakeTimeout),
			ReceiveBuffer:    cfg.Edge.ReceiveBuffer,
		},
	})
	if err != nil {
		return err
	}

	var draining atomic.Bool
	var httpSrv *http.Server
	httpAddr := ""
	if cfg.HTTP != "" && cfg.HTTP != "off" {
		hl, err := net.Listen("tcp", cfg.HTTP)
		if err != nil {
			g.Close()
			return fmt.Errorf("http listen: %w", err)
		}
		httpAddr = hl.Addr().String()
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			if draining.Load() {
				http.Error(w, "draining", http.StatusServiceUnavailable)
				return
			}
			select {
			case <-g.Core.Ready():
			default:
				http.Error(w, "starting: redelivering the outbox", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		if cfg.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := httpSrv.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server", "err", err)
			}
		}()
	}
	log.Info("tern serving", "listen", g.Addr, "http", httpAddr, "data", cfg.Data, "ca", g.CAFile, "ack_mode", ackMode.String())
	if cfg.ReadyFile != "" {
		b, _ := json.Marshal(ready{Listen: g.Addr, HTTP: httpAddr, CA: g.CAFile, PID: os.Getpid()})
		if err := os.WriteFile(cfg.ReadyFile, append(b, '\n'), 0o644); err != nil {
			g.Close()
			return fmt.Errorf("ready file: %w", err)
		}
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("draining", "timeout", time.Duration(cfg.DrainTimeout).String())
	case runErr = <-g.Serving():
		log.Error("listener failed", "err", runErr)
	}
	draining.Store(true)
	dctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.DrainTimeout))
	defer cancel()
	if err := g.Shutdown(dctx); err != nil {
		log.Warn("shutdown", "err", err)
		if runErr == nil && !errors.Is(err, context.DeadlineExceeded) {
			runErr = err
		}
	}
	if httpSrv != nil {
		httpSrv.Shutdown(dctx)
	}
	log.Info("stopped")
	return runErr
}

// serverTLS loads --cert/--key; nil means the gateway's development
// certificate.
func serverTLS(cfg serveConfig) (*tls.Config, error) {
	if cfg.Cert == "" && cfg.Key == "" {
		return nil, nil
	}
	if cfg.Cert == "" || cfg.Key == "" {
		return nil, usageError{"--cert and --key go together"}
	}
	c, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return edge.ServerTLSConfig(c), nil
}
