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
