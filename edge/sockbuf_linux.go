package edge

import (
	"net"
	"syscall"
)

// setReceiveBuffer asks for an n-byte receive buffer on uc: past
// net.core.rmem_max when the process may (SO_RCVBUFFORCE), else up to it.
// Failure is not an error: the socket keeps a smaller buffer.
func setReceiveBuffer(uc *net.UDPConn, n int) {
	rc, err := uc.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
		})
		if err == nil && serr == nil {
			return
		}
	}
	_ = uc.SetReadBuffer(n)
}
