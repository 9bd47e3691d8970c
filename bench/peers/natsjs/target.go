// Package natsjs runs the durable-inbox workload on NATS JetStream: a
// nats-server (github.com/nats-io/nats-server/v2) embedded in this process
// with a file store that syncs every write, and the nats.go jetstream
// client, as a bench.Target.
//
// # The workload in JetStream terms
//
// One stream, INBOX, file storage, one replica, limits retention (messages
// stay, like Tern's mailboxes), captures the subjects inbox.*. Send
// publishes to inbox.<to> with a fresh Nats-Msg-Id (so that its own retries
// are deduplicated, as Tern's client_msg_id makes Tern's) and returns on the
// PubAck, which JetStream sends after it stored the message. Every user has
// a durable pull consumer, inbox-<user>, filtered on inbox.<user>, delivering
// everything from the start of the stream, with explicit acks: a user's
// inbox exists from the first message sent to it, and a reconnecting user
// resumes after the last message it acknowledged.
//
// Pull rather than push: pulls give each receiver flow control, and a pull
// request ends with a status message after its last message, so a closing
// Conn knows it has received everything the server handed it.
// Nothing is left delivered-but-unacknowledged on the server, which would
// otherwise come back only after the consumer's AckWait (30 s): every
// message is acknowledged after deliver returns, the last of each batch with
// a double ack, which returns once the server has processed the batch's acks. The receive
// loop asks for batches of FetchBatch messages, each request waiting at most
// FetchWait; Close waits for the request in flight to end.
//
// # Durability
//
// The server runs with Options.SyncAlways (the server configuration's
// jetstream { sync_interval: always }); the file store then calls fsync
// after every message block write (filestore.go writeMsgRecordLocked, "sync
// always mode"), before the PubAck. New checks that the running server
// reports sync_always. With one replica the SyncAlways setting is not
// relaxed (it is only for replicated streams backed by a Raft log).
//
// # Concurrency
//
// A Target is safe for concurrent use. Each Conn has its own NATS
// connection (with nats.go's goroutines) and one receive loop goroutine,
// which calls deliver; Close stops and waits for it.
package natsjs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/ternhq/tern/bench"
	"github.com/ternhq/tern/bench/peers/quicconn"
)

// Stream is the name of the stream holding every inbox.
const Stream = "INBOX"

// Receive loop settings.
const (
	FetchBatch = 256
	FetchWait  = 500 * time.Millisecond
)

// Config configures a Target.
type Config struct {
	// Dir is the JetStream store directory. Required.
	Dir string
	// TLS makes clients connect over TLS 1.3 (a self-signed loopback
	// certificate), as Tern's and MQTT-over-QUIC's clients do. Default:
	// plain TCP, how NATS is usually measured.
	TLS bool
}

// Target is a nats-server with JetStream running in this process.
type Target struct {
	srv       *server.Server
	url       string
	clientTLS *tls.Config // nil: plain TCP

	closeOnce sync.Once
}

var _ bench.Target = (*Target)(nil)

// New starts a server on 127.0.0.1, port chosen by the system, creates the
// stream, and checks that JetStream syncs every write.
func New(cfg Config) (*Target, error) {
	if cfg.Dir == "" {
		return nil, errors.New("natsjs: Config.Dir is required")
	}
	opts := &server.Options{
		ServerName: "bench-peer",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: true,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 1 << 20,
	}
	var clientTLS *tls.Config
	if cfg.TLS {
		serverTLS, ctls, err := quicconn.LoopbackTLS("")
		if err != nil {
			return nil, fmt.Errorf("natsjs: %w", err)
		}
		serverTLS.NextProtos, ctls.NextProtos = nil, nil
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, serverTLS, 5
		clientTLS = ctls
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsjs: server: %w", err)
	}
	srv.Start()
	t := &Target{srv: srv, clientTLS: clientTLS}
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Close()
		return nil, errors.New("natsjs: server not ready after 10s")
	}
	if jc := srv.JetStreamConfig(); jc == nil || !jc.SyncAlways {
		t.Close()
		return nil, fmt.Errorf("natsjs: JetStream does not report sync_always (config %+v)", jc)
	}
	t.url = srv.ClientURL()

	nc, err := nats.Connect(t.url, t.natsOptions("bench-setup")...)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("natsjs: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      Stream,
		Subjects:  []string{"inbox.*"},
		Storage:   jetstream.FileStorage,
		Replicas:  1,
		Retention: jetstream.LimitsPolicy,
	})
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("natsjs: create stream: %w", err)
	}
	return t, nil
}

// Name is "nats-jetstream", or "nats-jetstream/tls".
func (t *Target) Name() string {
	if t.clientTLS != nil {
		return "nats-jetstream/tls"
	}
	return "nats-jetstream"
}

func (t *Target) natsOptions(name string) []nats.Option {
	o := []nats.Option{nats.Name(name), nats.MaxReconnects(-1)}
	if t.clientTLS != nil {
		o = append(o, nats.Secure(t.clientTLS.Clone()))
	}
	return o
}

// URL is the server's client URL.
func (t *Target) URL() string { return t.url }

// SyncAlways reports what the running server says about its sync mode.
func (t *Target) SyncAlways() bool {
	jc := t.srv.JetStreamConfig()
	return jc != nil && jc.SyncAlways
}

// Close shuts the server down and waits for it.
func (t *Target) Close() error {
	t.closeOnce.Do(func() {
		t.srv.Shutdown()
		t.srv.WaitForShutdown()
	})
	return nil
}

// Connect opens user's NATS connection, creates or finds its durable
// consumer, and starts its receive loop. user must be a valid subject token
// (no '.', '*', '>', whitespace).
func (t *Target) Connect(ctx context.Context, user string, deliver func(bench.Delivery)) (bench.Conn, error) {
	if user == "" || strings.ContainsAny(user, ".*> \t\r\n/\\") {
		return nil, fmt.Errorf("natsjs: user %q is not a subject token", user)
	}
	nc, err := nats.Connect(t.url, t.natsOptions("inbox-"+user)...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: connect %s: %w", user, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	c := &conn{nc: nc, js: js, user: user, stop: make(chan struct{}), done: make(chan struct{})}
	if deliver == nil {
		close(c.done) // a pure sender: no receive loop
		return c, nil
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, Stream, jetstream.ConsumerConfig{
		Durable:       "inbox-" + user,
		FilterSubject: "inbox." + user,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 4 * FetchBatch,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsjs: consumer for %s: %w", user, err)
	}
	go c.receive(cons, deliver)
	return c, nil
}

type conn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	user string

	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when the receive loop has returned
	closeOnce sync.Once
}

// receive pulls batches until stop. It delivers every message of a batch
// and acknowledges it; the last one of each batch is acknowledged with a
// double ack, so that once a batch is over the server has processed every
// ack of it.
func (c *conn) receive(cons jetstream.Consumer, deliver func(bench.Delivery)) {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		batch, err := cons.Fetch(FetchBatch, jetstream.FetchMaxWait(FetchWait))
		if err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				return
			}
			// The connection is reconnecting, or the server is busy: wait a
			// little, unless told to stop.
			select {
			case <-c.stop:
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		var held jetstream.Msg // delivered, ack not sent yet
		for m := range batch.Messages() {
			if held != nil {
				_ = held.Ack()
			}
			d := bench.Delivery{Body: m.Data(), At: time.Now()}
			if md, err := m.Metadata(); err == nil {
				d.ID = strconv.FormatUint(md.Sequence.Stream, 10)
			}
			deliver(d)
			held = m
		}
		if held != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = held.DoubleAck(ctx) // on failure the message comes again after AckWait
			cancel()
		}
	}
}

// Send publishes to inbox.<to> and returns on the PubAck. It retries with
// the same message id until ctx is done; JetStream stores it once.
func (c *conn) Send(ctx context.Context, to string, body []byte) error {
	id := nuid.Next()
	backoff := 20 * time.Millisecond
	for {
		_, err := c.js.Publish(ctx, "inbox."+to, body, jetstream.WithMsgID(id))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("natsjs: publish: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsjs: publish: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Close ends the receive loop after its pull request in flight (at most
// FetchWait), then closes the connection.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		<-c.done
		c.nc.Close()
	})
	return nil
}
