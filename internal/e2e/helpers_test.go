package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/internal/rawclient"
	"github.com/ternhq/tern/internal/testserver"
	"github.com/ternhq/tern/wire"
)

func ctxT(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// raw connects a bare protocol client as user/device with seqCli.
func raw(t *testing.T, s *testserver.Server, user, device string, seqCli uint64) *rawclient.Conn {
	t.Helper()
	return rawHello(t, s, user, device, &wire.Hello{SeqCli: seqCli})
}

// rawHello connects a raw session with hello, whose Token it sets for
// user/device; the session closes when the test ends.
func rawHello(t *testing.T, s *testserver.Server, user, device string, hello *wire.Hello) *rawclient.Conn {
	t.Helper()
	hello.Token = s.Token(user, device)
	c, err := rawclient.Connect(ctxT(t, 10*time.Second), s.Addr, s.ClientTLS(), hello)
	if err != nil {
		t.Fatalf("connect %s/%s: %v", user, device, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sdk dials an SDK client with a memory seq store starting at seq.
func sdk(t testing.TB, s *testserver.Server, user, device string, seq uint64, mod func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{
		Addr:         s.Addr,
		TLS:          s.ClientTLS(),
		Token:        s.Token(user, device),
		SeqStore:     client.NewMemorySeqStore(seq),
		ReconnectMin: 20 * time.Millisecond,
		ReconnectMax: 500 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.Dial(ctxT(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", user, device, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// inbox collects messages handed to the app and checks, as they come, that
// they are ordered, unique and without gaps.
type inbox struct {
	mu   sync.Mutex
	msgs []client.Message
	seen map[client.MessageID]bool
	errs []string
	last uint64
	more chan struct{}
}

func newInbox(start uint64) *inbox {
	return &inbox{seen: map[client.MessageID]bool{}, last: start, more: make(chan struct{}, 1)}
}

func (b *inbox) add(m client.Message) {
	b.mu.Lock()
	if m.Seq != b.last+1 {
		b.errs = append(b.errs, fmt.Sprintf("seq %d after %d", m.Seq, b.last))
	}
	if b.seen[m.ID] {
		b.errs = append(b.errs, fmt.Sprintf("duplicate id %s at seq %d", m.ID, m.Seq))
	}
	b.seen[m.ID] = true
	b.last = m.Seq
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	select {
	case b.more <- struct{}{}:
	default:
	}
}

// wait waits until n messages arrived and checks the history.
func (b *inbox) wait(t testing.TB, n int, d time.Duration) []client.Message {
	t.Helper()
	deadline := time.After(d)
	for {
		b.mu.Lock()
		got := len(b.msgs)
		errs := append([]string(nil), b.errs...)
		b.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("delivery history broken: %v", errs[:min(len(errs), 5)])
		}
		if got >= n {
			b.mu.Lock()
			defer b.mu.Unlock()
			if got > n {
				t.Fatalf("got %d messages, want %d", got, n)
			}
			return append([]client.Message(nil), b.msgs...)
		}
		select {
		case <-b.more:
		case <-deadline:
			t.Fatalf("got %d messages, want %d", got, n)
		}
	}
}

var (
	ternOnce sync.Once
	ternBin  string
	ternErr  error
)

// ternBinary builds cmd/tern once per test process.
func ternBinary(t *testing.T) string {
	t.Helper()
	ternOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tern-e2e-bin-")
		if err != nil {
			ternErr = err
			return
		}
		ternBin = filepath.Join(dir, "tern")
		cmd := exec.Command("go", "build", "-o", ternBin, "github.com/ternhq/tern/cmd/tern")
		out, err := cmd.CombinedOutput()
		if err != nil {
			ternErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if ternErr != nil {
		t.Fatal(ternErr)
	}
	return ternBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if ternBin != "" {
		os.RemoveAll(filepath.Dir(ternBin))
	}
	os.Exit(code)
}
