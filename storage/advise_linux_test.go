package storage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func TestMappingOf(t *testing.T) {
	const path = "/data/my tern/00001.mem"
	for _, c := range []struct {
		line   string
		lo, hi uintptr
		ok     bool
	}{
		{"7f0000000000-7f0008000000 rw-s 00000000 fd:00 1234                       " + path, 0x7f0000000000, 0x7f0008000000, true},
		{"7f0000000000-7f0008000000 rw-s 00000000 fd:00 1234   /data/other/00001.mem", 0, 0, false},
		{"7f0000000000-7f0008000000 rw-s 00000000 fd:00 1234   /x" + path, 0, 0, false},
		{"7f0000000000-7f0008000000 rw-s 00000000 fd:00 1234   " + path + " (deleted)", 0, 0, false},
		{"zz-7f0008000000 rw-s 00000000 fd:00 1234   " + path, 0, 0, false},
		{"7f0008000000-7f0000000000 rw-s 00000000 fd:00 1234   " + path, 0, 0, false},
	} {
		lo, hi, ok := mappingOf([]byte(c.line), path)
		if lo != c.lo || hi != c.hi || ok != c.ok {
			t.Errorf("mappingOf(%q) = %x, %x, %v; want %x, %x, %v", c.line, lo, hi, ok, c.lo, c.hi, c.ok)
		}
	}
}

// TestWALMappingAdvised checks that Badger's mapping of the memtable WAL is
// advised random (smaps flag "rr"), also after Badger moved on to new
// WALs. What the advice saves is measured by `tern bench throughput`
// (disk writes per message; docs/benchmarks.md): the kernel's read-around
// of write faults needs a sustained load to build the large folios that
// made each sync write hundreds of KiB, which a unit test does not make.
func TestWALMappingAdvised(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadger(dir, Options{tuneBadger: func(o *badger.Options) {
		smallBadger(o)
		o.MemTableSize = 1 << 20
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wal := s.be.(*badgerBackend).logs.wal
	ctx := context.Background()
	body := bytes.Repeat([]byte{'x'}, 4<<10)
	for i := 0; wal.rotated < 2 && i < 10_000; i++ {
		if _, err := s.Apply(ctx, sendCmd("alice", strconv.Itoa(i), body)); err != nil {
			t.Fatal(err)
		}
	}
	if wal.rotated < 2 {
		t.Fatalf("Badger moved on to %d new WALs, want 2", wal.rotated)
	}
	if wal.advised != wal.rotated+1 {
		t.Errorf("%d WAL mappings advised, want %d (every WAL the syncer synced)", wal.advised, wal.rotated+1)
	}
	path := filepath.Join(dir, fmt.Sprintf("%05d.mem", wal.newest))
	if flags := vmFlags(t, path); !strings.Contains(" "+flags+" ", " rr ") {
		t.Errorf("mapping of %s has VmFlags %q, want rr (random read) among them", path, flags)
	}
}

// vmFlags returns the VmFlags of the first mapping of path in
// /proc/self/smaps.
func vmFlags(t *testing.T, path string) string {
	t.Helper()
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSuffix(line, "\n")
		first, _, _ := strings.Cut(line, " ")
		if !strings.HasSuffix(first, ":") {
			// A mapping's header: "lo-hi perms offset dev inode path".
			in = strings.HasSuffix(line, " "+real)
			continue
		}
		if v, ok := strings.CutPrefix(line, "VmFlags:"); ok && in {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no mapping of %s in /proc/self/smaps", real)
	return ""
}

// TestWALMappingAdvisedByOtherPaths: the mapping is found when the store was
// opened through a symlink or by a relative path (/proc/self/maps names
// the file by its absolute, resolved path).
func TestWALMappingAdvisedByOtherPaths(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(link))
	for name, dir := range map[string]string{"symlink": link, "relative": "link"} {
		t.Run(name, func(t *testing.T) {
			s, err := OpenBadger(dir, Options{tuneBadger: smallBadger})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Apply(context.Background(), sendCmd("alice", name, []byte("hi"))); err != nil {
				t.Fatal(err)
			}
			wal := s.be.(*badgerBackend).logs.wal
			if wal.advised != 1 {
				t.Fatalf("%d WAL mappings advised, want 1", wal.advised)
			}
			path := filepath.Join(real, fmt.Sprintf("%05d.mem", wal.newest))
			if flags := vmFlags(t, path); !strings.Contains(" "+flags+" ", " rr ") {
				t.Errorf("mapping of %s has VmFlags %q, want rr among them", path, flags)
			}
		})
	}
}
