package storage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ternhq/tern/core"
)

// The crash test runs the test binary again as a child (TestCrashChild)
// that appends to a Badger store and prints every acknowledged append; the
// parent kills it with SIGKILL mid-stream and checks the reopened store.
const (
	crashChildEnv = "TERN_STORAGE_CRASH_CHILD"
	crashDirEnv   = "TERN_STORAGE_CRASH_DIR"
	crashShards   = 2
	crashUsers    = 8  // mailboxes, each appended to by two writers
	crashWriters  = 16 // appending goroutines
	crashKillAt   = 300
)

// TestCrashChild is the child's body; it only runs under TestCrashRecovery.
func TestCrashChild(t *testing.T) {
	if os.Getenv(crashChildEnv) != "1" {
		t.Skip("run as a child process by TestCrashRecovery")
	}
	s, err := OpenBadger(os.Getenv(crashDirEnv), Options{Shards: crashShards})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var out sync.Mutex // one line per write
	for w := range crashWriters {
		go func() {
			u := core.UserID(fmt.Sprint("user-", w%crashUsers))
			for i := 0; ; i++ {
				now := time.UnixMilli(time.Now().UnixMilli())
				cmd := &core.SendCmd{
					Sender: u, Device: core.DeviceID(fmt.Sprint("dev-", w)), ClientMsgID: core.ClientMsgID(strconv.Itoa(i)),
					ID: core.NewMessageID(now), Now: now, Body: bytes.Repeat([]byte{'b'}, 100), DedupWindow: time.Hour,
				}
				r, err := s.Apply(context.Background(), cmd)
				if err != nil {
					fmt.Fprintln(os.Stderr, "apply:", err)
					os.Exit(2)
				}
				out.Lock()
				_, _ = fmt.Fprintf(os.Stdout, "ack %s %d %s\n", u, r.Seq, r.ID)
				out.Unlock()
			}
		}()
	}
	select {} // until killed
}

func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	child.Env = append(os.Environ(), crashChildEnv+"=1", crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	child.Stderr = &stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}

	acked := map[core.UserID]map[core.Seq]string{} // user → seq → message id
	n, killed := 0, false
	r := bufio.NewReader(stdout)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // EOF once the child is gone; a partial last line was never acknowledged
		}
		var (
			u   core.UserID
			seq core.Seq
			id  string
		)
		if _, err := fmt.Sscanf(line, "ack %s %d %s\n", &u, &seq, &id); err != nil {
			continue // the test framework's own output
		}
		if acked[u] == nil {
			acked[u] = map[core.Seq]string{}
		}
		if prev, dup := acked[u][seq]; dup {
			t.Fatalf("%s seq %d acknowledged twice (%s, %s)", u, seq, prev, id)
		}
		acked[u][seq] = id
		if n++; n == crashKillAt {
			if err := child.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = child.Wait()
	if !killed {
		t.Fatalf("the child stopped after %d acks: %s", n, stderr.String())
	}
	t.Logf("killed the child after %d acks; %d read in all", crashKillAt, n)

	s, err := OpenBadger(dir, Options{Shards: crashShards})
	if err != nil {
		t.Fatalf("reopen after the crash: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range crashUsers {
		u := core.UserID(fmt.Sprint("user-", i))
		h, err := s.Head(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		es, err := s.Entries(ctx, u, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if h.EffectiveFloor() != 1 || len(es) != int(h.Head) {
			t.Fatalf("%s: head %+v but %d entries", u, h, len(es))
		}
		for j, e := range es {
			if e.Seq != core.Seq(j+1) {
				t.Fatalf("%s: entry %d has seq %d: a gap", u, j, e.Seq)
			}
		}
		for seq, id := range acked[u] {
			if seq < 1 || seq > h.Head {
				t.Fatalf("%s: acknowledged seq %d lost (head %d)", u, seq, h.Head)
			}
			if got := hex.EncodeToString(es[seq-1].ID[:]); got != id {
				t.Fatalf("%s seq %d: id %s, acknowledged %s", u, seq, got, id)
			}
		}
	}
}
