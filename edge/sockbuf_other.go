//go:build !linux

package edge

import "net"

// setReceiveBuffer asks for an n-byte receive buffer on uc (capped by the
// system). Failure is not an error: the socket keeps a smaller buffer.
func setReceiveBuffer(uc *net.UDPConn, n int) { _ = uc.SetReadBuffer(n) }
