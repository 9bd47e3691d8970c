package storage

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// adviseRandom marks every mapping of the file at path in this process
// MADV_RANDOM and returns how many it marked.
//
// Badger writes a memtable's WAL through a shared mapping of it. Without
// advice, the kernel fills a page that a write faults in by reading around
// it, into large folios (here ~200 KiB); a folio is dirtied and written
// back whole, so each group sync of a few KiB of commits wrote hundreds of
// KiB to the disk (`tern bench throughput`: 2.5 GB written in a 10 s run
// against 120 MB once advised). MADV_RANDOM turns the read-around off, so
// a fault brings in one page and a sync writes the pages written.
//
// The mapping belongs to Badger, which keeps it unexported, so it is found
// by its file's path in /proc/self/maps. The advice only shapes page
// cache use; a mapping not found, or gone meanwhile, costs nothing.
func adviseRandom(path string) (int, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	n := 0
	for line := range bytes.Lines(maps) {
		lo, hi, ok := mappingOf(bytes.TrimSuffix(line, []byte{'\n'}), abs)
		if !ok {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, lo, hi-lo, syscall.MADV_RANDOM); e != 0 {
			return n, fmt.Errorf("madvise %s: %w", abs, e)
		}
		n++
	}
	return n, nil
}

// mappingOf parses one line of /proc/self/maps ("lo-hi perms offset dev
// inode   path") and reports the address range if it maps path.
func mappingOf(line []byte, path string) (lo, hi uintptr, ok bool) {
	if !bytes.HasSuffix(line, []byte(" "+path)) {
		return 0, 0, false
	}
	r, _, _ := bytes.Cut(line, []byte{' '})
	l, h, ok := bytes.Cut(r, []byte{'-'})
	if !ok {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(string(l), 16, 64)
	b, err2 := strconv.ParseUint(string(h), 16, 64)
	if err1 != nil || err2 != nil || b <= a {
		return 0, 0, false
	}
	return uintptr(a), uintptr(b), true
}
