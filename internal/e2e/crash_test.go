package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ternhq/tern/client"
	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/edge"
	"github.com/ternhq/tern/internal/rawclient"
	"github.com/ternhq/tern/storage"
	"github.com/ternhq/tern/wire"
)

// ternProc is `tern serve` running as a child process.
type ternProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	listen string
	ready  struct {
		Listen string `json:"listen"`
		HTTP   string `json:"http"`
		CA     string `json:"ca"`
	}
	exited chan struct{}
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// startTern starts `tern serve` on dir and listen and waits until it serves.
func startTern(t *testing.T, dir, listen string, extra ...string) *ternProc {
	t.Helper()
	bin := ternBinary(t)
	readyFile := filepath.Join(dir, "ready.json")
	os.Remove(readyFile)
	log, err := os.OpenFile(filepath.Join(dir, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--data", dir, "--listen", listen, "--http", "127.0.0.1:0",
		"--ready-file", readyFile, "--log-level", "warn", "--send-rate", "-1"}, extra...)
	p := &ternProc{t: t, cmd: exec.Command(bin, args...), dir: dir, listen: listen, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); log.Close(); close(p.exited) }()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(readyFile); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			if err := json.Unmarshal(b, &p.ready); err != nil {
				t.Fatal(err)
			}
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("tern serve exited before serving; log:\n%s", p.log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tern serve not ready after 30s; log:\n%s", p.log())
		}
	}
}

func (p *ternProc) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "serve.log"))
	return string(b)
}

func (p *ternProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// term stops the server gracefully and fails if it does not exit cleanly.
func (p *ternProc) term() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("tern serve did not stop after SIGTERM; log:\n%s", p.log())
	}
	if !p.cmd.ProcessState.Success() {
		p.t.Fatalf("tern serve exited with %v; log:\n%s", p.cmd.ProcessState, p.log())
	}
}

func (p *ternProc) token(user, device string) string {
	p.t.Helper()
	key, err := edge.LoadOrCreateSigningKey(filepath.Join(p.dir, "keys", "token-ed25519.pem"))
	if err != nil {
		p.t.Fatal(err)
	}
	tok, err := edge.TokenSigner{Key: key}.Sign(core.UserID(user), core.DeviceID(device), time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

func (p *ternProc) clientConfig(user, device string) client.Config {
	pool, err := edge.CertPool(p.ready.CA)
	if err != nil {
		p.t.Fatal(err)
	}
	tlsConf := (&rawTLS{pool}).config()
	return client.Config{
		Addr: p.listen, TLS: tlsConf, Token: p.token(user, device),
		SeqStore: client.NewMemorySeqStore(0), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 300 * time.Millisecond,
		RequestTimeout: 2 * time.Second,
	}
}

// metric reads one unlabelled value from the server's /metrics.
func (p *ternProc) metric(name string) float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + p.ready.HTTP + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				p.t.Fatal(err)
			}
			return f
		}
	}
	p.t.Fatalf("metric %s not found", name)
	return 0
}

// head asks the running server for u's mailbox head through a Welcome.
func (p *ternProc) head(u string) uint64 {
	p.t.Helper()
	pool, err := edge.CertPool(p.ready.CA)
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rawclient.Connect(ctx, p.listen, (&rawTLS{pool}).config(), &wire.Hello{Token: p.token(u, "verifier")})
	if err != nil {
		p.t.Fatal(err)
	}
	defer c.Close()
	return c.Welcome.SeqSvr
}

// openStore opens the data directory of a stopped server.
func openStore(t *testing.T, dir string) *storage.Store {
	t.Helper()
	st, err := storage.OpenBadger(filepath.Join(dir, "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func mailbox(t *testing.T, st *storage.Store, u string) []core.Entry {
	t.Helper()
	es, err := st.Entries(context.Background(), core.UserID(u), 0, 1_000_000, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if e.Seq != core.Seq(i+1) {
			t.Fatalf("%s: entry %d has seq %d: seqs are not contiguous from 1", u, i, e.Seq)
		}
	}
	return es
}

// TestCrashSafety: 16 clients send 2,000 messages; the server is SIGKILLed
// mid-stream and restarted on the same data directory. Every acknowledged
// message is there with its seq and id, every mailbox's seqs run 1..head
// without gaps, and sends that were not acknowledged before the kill land
// exactly once. Acceptance #4.
func TestCrashSafety(t *testing.T) {
	const senders, perSender = 16, 125
	dir := t.TempDir()
	listen := freeUDPAddr(t)
	p := startTern(t, dir, listen)

	type ack struct {
		sender string
		id     client.MessageID
		seq    uint64
		cmid   string
	}
	var (
		mu    sync.Mutex
		acks  []ack
		acked atomic.Int64
		errs  = make(chan error, senders)
		wg    sync.WaitGroup
		dups  atomic.Int64
		retry atomic.Int64
	)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	start := time.Now()
	for i := 0; i < senders; i++ {
		name := fmt.Sprintf("sender%02d", i)
		c, err := client.Dial(ctx, p.clientConfig(name, "phone"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perSender; j++ {
				cmid := fmt.Sprintf("%s-%03d", name, j)
				r, err := c.SendWith(ctx, client.SendOptions{ClientMsgID: cmid, To: "sink", Body: []byte(cmid)})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", cmid, err)
					return
				}
				if r.Duplicate {
					dups.Add(1)
				}
				mu.Lock()
				acks = append(acks, ack{name, r.ID, r.Seq, cmid})
				mu.Unlock()
				acked.Add(1)
			}
			retry.Add(int64(c.Stats().SendRetries))
		}()
	}
	for acked.Load() < 600 {
		time.Sleep(time.Millisecond)
	}
	p.kill()
	killedAt := acked.Load()
	time.Sleep(200 * time.Millisecond) // clients notice and start retrying
	p = startTern(t, dir, listen)
	t.Logf("restarted at %v", time.Since(start))
	wg.Wait()
	t.Logf("all sends acked at %v", time.Since(start))
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Let the forwarder finish before the graceful stop.
	deadline := time.Now().Add(30 * time.Second)
	for p.head("sink") < senders*perSender && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("sink complete at %v", time.Since(start))
	p.term()
	t.Logf("killed after %d of %d acks; %d sends retried, %d answered as duplicates after the restart", killedAt, senders*perSender, retry.Load(), dups.Load())
	if retry.Load() == 0 {
		t.Error("no send was retried: the kill did not interrupt the stream")
	}

	st := openStore(t, dir)
	byID := map[core.MessageID]string{}
	for i := 0; i < senders; i++ {
		name := fmt.Sprintf("sender%02d", i)
		es := mailbox(t, st, name)
		if len(es) != perSender {
			t.Fatalf("%s has %d entries, want %d", name, len(es), perSender)
		}
		seen := map[core.ClientMsgID]bool{}
		for _, e := range es {
			if seen[e.ClientMsgID] {
				t.Fatalf("%s: %s stored twice", name, e.ClientMsgID)
			}
			seen[e.ClientMsgID] = true
			byID[e.ID] = string(e.ClientMsgID)
		}
	}
	for _, a := range acks {
		es := mailbox(t, st, a.sender)
		e := es[a.seq-1]
		if core.MessageID(a.id) != e.ID || string(e.ClientMsgID) != a.cmid {
			t.Fatalf("acked %s (seq %d, id %s) but the mailbox holds %s (id %s) there", a.cmid, a.seq, a.id, e.ClientMsgID, e.ID)
		}
	}
	sink := mailbox(t, st, "sink")
	if len(sink) != senders*perSender {
		t.Fatalf("sink has %d entries, want %d", len(sink), senders*perSender)
	}
	got := map[core.MessageID]bool{}
	for _, e := range sink {
		if got[e.ID] {
			t.Fatalf("sink holds %s twice", e.ID)
		}
		if _, ok := byID[e.ID]; !ok {
			t.Fatalf("sink holds %s, which no sender sent", e.ID)
		}
		got[e.ID] = true
	}
}

// TestGroupFanOutCrash: the server is SIGKILLed while the forwarder is
// fanning 40 group messages out to 49 members; after the restart every
// member has every message exactly once. Acceptance #5.
func TestGroupFanOutCrash(t *testing.T) {
	const members, messages = 49, 40
	dir := t.TempDir()
	listen := freeUDPAddr(t)
	// One delivery at a time makes the fan-out take long enough to be cut.
	cfgFile := filepath.Join(dir, "slow-fanout.json")
	os.WriteFile(cfgFile, []byte(`{"core": {"forward_max_in_flight": 1}}`), 0o644)
	p := startTern(t, dir, listen, "--config", cfgFile)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	owner, err := client.Dial(ctx, p.clientConfig("owner", "phone"))
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	var names []string
	for i := 1; i <= members; i++ {
		names = append(names, fmt.Sprintf("member%02d", i))
	}
	if _, err := owner.CreateGroup(ctx, "crew", names...); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	ids := make([]client.MessageID, messages)
	for i := 0; i < messages; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := owner.SendWith(ctx, client.SendOptions{ClientMsgID: fmt.Sprintf("g%02d", i), Group: "crew", Body: []byte("to all")})
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = r.ID
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	delivered := p.metric("tern_core_forward_delivered_total")
	p.kill()
	if delivered >= members*messages {
		t.Fatalf("the fan-out had finished (%v deliveries) before the kill; the test did not cut it", delivered)
	}
	t.Logf("killed after %v of %d deliveries", delivered, members*messages)

	p = startTern(t, dir, listen)
	deadline := time.Now().Add(60 * time.Second)
	for _, m := range names {
		for p.head(m) < messages && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	p.term()

	st := openStore(t, dir)
	want := map[core.MessageID]bool{}
	for _, id := range ids {
		want[core.MessageID(id)] = true
	}
	for _, m := range append(names, "owner") {
		es := mailbox(t, st, m)
		if len(es) != messages {
			t.Fatalf("%s has %d entries, want %d", m, len(es), messages)
		}
		seen := map[core.MessageID]bool{}
		for _, e := range es {
			if !want[e.ID] || seen[e.ID] {
				t.Fatalf("%s: entry %s unknown or repeated", m, e.ID)
			}
			seen[e.ID] = true
		}
	}
	if n, _ := outboxLen(st); n != 0 {
		t.Fatalf("%d items left in the outbox", n)
	}
}

func outboxLen(st *storage.Store) (int, error) {
	n := 0
	for s := range st.Shards() {
		if err := st.Outbox(context.Background(), s, func(core.OutboxItem) bool { n++; return true }); err != nil {
			return n, err
		}
	}
	return n, nil
}
