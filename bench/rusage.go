package bench

import (
	"syscall"
	"time"
)

// rusage returns this process's user and system CPU time (getrusage
// RUSAGE_SELF: every thread, so the server's too when it runs in process).
func rusage() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// diskWritten is how many bytes this process caused to be written to
// storage so far (getrusage's output blocks of 512 bytes; on Linux the
// page cache bytes it dirtied, which writeback then writes).
func diskWritten() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return int64(ru.Oublock) * 512
}
