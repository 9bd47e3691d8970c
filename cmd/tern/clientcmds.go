package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/wire"
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	addr    string
	ca      string
	token   string
	state   string
	timeout time.Duration
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "127.0.0.1:4433", "edge address")
	fs.StringVar(&f.ca, "ca", "", "CA certificate (PEM) to trust, e.g. DATA/tls/dev-cert.pem; default: system roots")
	fs.StringVar(&f.token, "token", os.Getenv("TERN_TOKEN"), "device token (default $TERN_TOKEN)")
	fs.StringVar(&f.state, "state", "", "directory for the client's saved seq (default: the user config dir)")
	fs.DurationVar(&f.timeout, "timeout", 15*time.Second, "how long to try to connect")
}

func (f *clientFlags) config() (client.Config, error) {
	if f.token == "" {
		return client.Config{}, usageError{"--token (or $TERN_TOKEN) is required; mint one with 'tern token'"}
	}
	tc := &tls.Config{}
	if f.ca != "" {
		b, err := os.ReadFile(f.ca)
		if err != nil {
			return client.Config{}, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return client.Config{}, fmt.Errorf("--ca %s: no PEM certificate", f.ca)
		}
		tc.RootCAs = pool
	}
	if host := hostOf(f.addr); host == "127.0.0.1" || host == "::1" || host == "" {
		// The development certificate names localhost and the loopback
		// addresses; keep verification on.
		tc.ServerName = "localhost"
	}
	return client.Config{Addr: f.addr, TLS: tc, Token: f.token, StateDir: f.state, Platform: wire.Platform_PLATFORM_DESKTOP}, nil
}

func hostOf(addr string) string {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return addr
	}
	return strings.Trim(addr[:i], "[]")
}

func dial(ctx context.Context, f *clientFlags, cfg client.Config) (*client.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := client.Dial(dctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", f.addr, err)
	}
	return c, nil
}

// call connects without reading the mailbox (a memory seq store), runs fn
// within the --timeout, and disconnects.
func (f *clientFlags) call(ctx context.Context, fn func(context.Context, *client.Client) error) error {
	cfg, err := f.config()
	if err != nil {
		return err
	}
	cfg.SeqStore = client.NewMemorySeqStore(0)
	c, err := dial(ctx, f, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return fn(rctx, c)
}

func cmdSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	to := fs.String("to", "", "recipient user")
	group := fs.String("group", "", "recipient group")
	id := fs.String("id", "", "client message id (default: a fresh one); repeat it to resend idempotently")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*to == "") == (*group == "") || fs.NArg() != 1 {
		return usageError{"send: give exactly one of --to and --group, and the text as one argument"}
	}
	return cf.call(ctx, func(ctx context.Context, c *client.Client) error {
		res, err := c.SendWith(ctx, client.SendOptions{ClientMsgID: *id, To: *to, Group: *group, Body: []byte(fs.Arg(0))})
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		fmt.Fprintln(stdout, res.Seq)
		return nil
	})
}

// messageJSON is one line of sync/listen output.
type messageJSON struct {
	Seq         uint64 `json:"seq"`
	ID          string `json:"id"`
	From        string `json:"from"`
	FromDevice  string `json:"from_device,omitempty"`
	To          string `json:"to,omitempty"`
	Group       string `json:"group,omitempty"`
	Body        string `json:"body"`
	SentAt      string `json:"sent_at"`
	ClientMsgID string `json:"client_msg_id,omitempty"`
	Mine        bool   `json:"mine,omitempty"`
}

func cmdSync(ctx context.Context, args []string, stdout, stderr io.Writer, stay bool) error {
	name := "sync"
	if stay {
		name = "listen"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := cf.config()
	if err != nil {
		return err
	}
	var mu sync.Mutex
	enc := json.NewEncoder(stdout)
	var writeErr error
	cfg.OnMessage = func(m client.Message) {
		mu.Lock()
		defer mu.Unlock()
		if writeErr != nil {
			return
		}
		writeErr = enc.Encode(messageJSON{
			Seq: m.Seq, ID: m.ID.String(), From: m.From, FromDevice: m.FromDevice, To: m.To, Group: m.Group,
			Body: string(m.Body), SentAt: m.SentAt.UTC().Format(time.RFC3339Nano), ClientMsgID: m.ClientMsgID, Mine: m.Mine,
		})
	}
	cfg.OnEvent = func(e client.Event) {
		switch e.Kind {
		case client.EventResync:
			fmt.Fprintf(stderr, "tern: history gap: local seq moved from %d to %d\n", e.OldSeq, e.NewSeq)
		case client.EventDisconnected:
			if stay {
				fmt.Fprintf(stderr, "tern: disconnected (%v); reconnecting\n", e.Err)
			}
		}
	}
	c, err := dial(ctx, &cf, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if stay {
		<-ctx.Done()
		if err := c.Err(); err != nil {
			return err
		}
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	if err := c.Sync(sctx); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return writeErr
}

func cmdGroup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("group", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return usageError{"group: want (create|add|remove|members) GROUP [USER...]"}
	}
	op, group, users := fs.Arg(0), fs.Arg(1), fs.Args()[2:]
	return cf.call(ctx, func(ctx context.Context, c *client.Client) error {
		var members []string
		var err error
		switch op {
		case "create":
			members, err = c.CreateGroup(ctx, group, users...)
		case "add":
			members, err = c.AddMembers(ctx, group, users...)
		case "remove":
			members, err = c.RemoveMembers(ctx, group, users...)
		case "members":
			members, err = c.Members(ctx, group)
		default:
			return usageError{fmt.Sprintf("group: unknown operation %q", op)}
		}
		if err != nil {
			return fmt.Errorf("group %s: %w", op, err)
		}
		for _, m := range members {
			fmt.Fprintln(stdout, m)
		}
		return nil
	})
}

func cmdBlock(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("block", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	unblock := fs.Bool("unblock", false, "remove the block instead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"block: want one USER"}
	}
	return cf.call(ctx, func(ctx context.Context, c *client.Client) error {
		if *unblock {
			return c.Unblock(ctx, fs.Arg(0))
		}
		return c.Block(ctx, fs.Arg(0))
	})
}
