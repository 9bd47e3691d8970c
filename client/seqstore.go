package client

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// SeqStore keeps the last mailbox seq the client has handed to the app. The
// client calls Save after every page of messages it hands over, and always
// before it reports the seq to the server (reporting acknowledges), so a
// Save that returns nil must be durable. An app that stores messages in its
// own database can implement SeqStore there and write the seq in the same
// transaction as the messages.
//
// The client calls Load and Save from one goroutine at a time.
type SeqStore interface {
	Load() (uint64, error)
	Save(seq uint64) error
}

var (
	_ SeqStore = (*FileSeqStore)(nil)
	_ SeqStore = (*MemorySeqStore)(nil)
)

// FileSeqStore keeps the seq in a small text file, replaced atomically on
// every Save (temporary file, fsync, rename, fsync of the directory).
type FileSeqStore struct {
	path string
	mu   sync.Mutex
}

// NewFileSeqStore returns a store that keeps the seq in the file at path,
// creating its directory on the first Save.
func NewFileSeqStore(path string) *FileSeqStore {
	return &FileSeqStore{path: path}
}

// Path is the file the store writes.
func (s *FileSeqStore) Path() string { return s.path }

// Load returns the stored seq, 0 when the file does not exist.
func (s *FileSeqStore) Load() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("client: load seq: %w", err)
	}
	seq, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("client: load seq from %s: %w", s.path, err)
	}
	return seq, nil
}

// Save replaces the stored seq durably.
func (s *FileSeqStore) Save(seq uint64) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("client: save seq: %w", err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(s.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("client: save seq: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.WriteString(strconv.FormatUint(seq, 10) + "\n"); err != nil {
		return fmt.Errorf("client: save seq: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("client: save seq: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("client: save seq: %w", err)
	}
	if err := os.Rename(f.Name(), s.path); err != nil {
		return fmt.Errorf("client: save seq: %w", err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable. Windows cannot fsync a directory,
// and some file systems answer EINVAL: there the rename is as durable as the
// platform makes it.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("client: save seq: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("client: save seq: fsync dir: %w", err)
	}
	return nil
}

// MemorySeqStore keeps the seq in memory: a restarted process starts from
// the seq it was created with. The zero value starts at 0.
type MemorySeqStore struct {
	mu  sync.Mutex
	seq uint64
}

// NewMemorySeqStore returns a store holding seq.
func NewMemorySeqStore(seq uint64) *MemorySeqStore { return &MemorySeqStore{seq: seq} }

// Load returns the held seq.
func (s *MemorySeqStore) Load() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq, nil
}

// Save replaces the held seq.
func (s *MemorySeqStore) Save(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq = seq
	return nil
}

// stateFileName names the default SeqStore's file after the user and device:
// bytes outside [A-Za-z0-9_-] are escaped as %XX so that distinct names
// never collide; names too long for a file system are hashed.
func stateFileName(user, device string) string {
	name := escapeName(user) + "@" + escapeName(device) + ".seq"
	if len(name) > 200 {
		sum := sha256.Sum256([]byte(user + "\x00" + device))
		name = "h-" + hex.EncodeToString(sum[:]) + ".seq"
	}
	return name
}

func escapeName(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

// tokenIdentity reads the user and device a Tern token (a JWT) names, without
// verifying it: only to name the local seq file before the first Welcome.
// Tokens of another shape return ok false.
func tokenIdentity(token string) (user, device string, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > 4096 {
		return "", "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", false
	}
	var claims struct {
		Sub string `json:"sub"`
		Dev string `json:"dev"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Sub == "" || claims.Dev == "" {
		return "", "", false
	}
	return claims.Sub, claims.Dev, true
}
