//go:build !linux

package storage

import "os"

// fdatasync flushes f to the device (fsync where fdatasync is missing).
func fdatasync(f *os.File) error { return f.Sync() }
