package wire

import (
	"errors"
	"fmt"
)

// Code is a Tern error code. The same numbers are used in Error frames,
// GoAway frames and as QUIC application error codes when a stream or a
// connection is closed.
//
// Codes come in ranges that tell a client what to do without knowing the
// individual code:
//
//	0           no error
//	1000..1999  retry: the same request may succeed later (with backoff,
//	            after retry_after_ms when given)
//	2000..2999  terminal: do not repeat the request unchanged
//	3000..3999  resync needed: local state is behind the server's retained
//	            history or ahead of it; reset the local seq and pull again
//
// A client that meets a code it does not know acts on its range.
type Code uint32

const (
	CodeOK Code = 0

	// Retry range.
	CodeUnavailable  Code = 1000 // the server cannot serve the request right now
	CodeOverloaded   Code = 1001 // a queue is full; back off
	CodeRateLimited  Code = 1002 // the sender exceeded its send rate; see retry_after_ms
	CodeTimeout      Code = 1003 // the server gave up waiting on its own backend
	CodeShuttingDown Code = 1004 // the node is draining; reconnect elsewhere or later
	CodeInternal     Code = 1005 // an unexpected server fault; nothing was acknowledged

	// Terminal range.
	CodeBadRequest        Code = 2000 // a field is missing or invalid
	CodeFrameTooLarge     Code = 2001 // a frame exceeded the receiver's limit
	CodeMalformed         Code = 2002 // a frame could not be decoded
	CodeUnauthenticated   Code = 2003 // no valid token
	CodeTokenExpired      Code = 2004 // the token's lifetime has passed; get a new one
	CodeForbidden         Code = 2005 // the user may not do this
	CodeBlocked           Code = 2006 // the recipient blocks the sender
	CodeNotFound          Code = 2007 // no such group
	CodeGroupTooLarge     Code = 2008 // the group would exceed its size limit
	CodeUnsupported       Code = 2009 // the request kind or capability is unknown
	CodeProtocolViolation Code = 2010 // frames arrived in an order the protocol forbids
	CodeSessionReplaced   Code = 2011 // the same device opened a newer session
	CodePayloadTooLarge   Code = 2012 // the message body exceeds the server's limit
	CodeAlreadyExists     Code = 2013 // the group exists already

	// Resync range.
	CodeResyncNeeded Code = 3000 // the requested seq is below the mailbox floor or above its head
)

var codeNames = map[Code]string{
	CodeOK:                "OK",
	CodeUnavailable:       "UNAVAILABLE",
	CodeOverloaded:        "OVERLOADED",
	CodeRateLimited:       "RATE_LIMITED",
	CodeTimeout:           "TIMEOUT",
	CodeShuttingDown:      "SHUTTING_DOWN",
	CodeInternal:          "INTERNAL",
	CodeBadRequest:        "BAD_REQUEST",
	CodeFrameTooLarge:     "FRAME_TOO_LARGE",
	CodeMalformed:         "MALFORMED",
	CodeUnauthenticated:   "UNAUTHENTICATED",
	CodeTokenExpired:      "TOKEN_EXPIRED",
	CodeForbidden:         "FORBIDDEN",
	CodeBlocked:           "BLOCKED",
	CodeNotFound:          "NOT_FOUND",
	CodeGroupTooLarge:     "GROUP_TOO_LARGE",
	CodeUnsupported:       "UNSUPPORTED",
	CodeProtocolViolation: "PROTOCOL_VIOLATION",
	CodeSessionReplaced:   "SESSION_REPLACED",
	CodePayloadTooLarge:   "PAYLOAD_TOO_LARGE",
	CodeAlreadyExists:     "ALREADY_EXISTS",
	CodeResyncNeeded:      "RESYNC_NEEDED",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}

// Retryable reports whether c is in the retry range.
func (c Code) Retryable() bool { return c >= 1000 && c < 2000 }

// Terminal reports whether c is in the terminal range. Codes outside every
// known range count as terminal.
func (c Code) Terminal() bool {
	return c != CodeOK && !c.Retryable() && !c.NeedsResync()
}

// NeedsResync reports whether c is in the resync range.
func (c Code) NeedsResync() bool { return c >= 3000 && c < 4000 }

// Error makes the Error message usable as a Go error, so a client can return
// what the server said and callers can inspect it with errors.As.
func (e *Error) Error() string {
	if e.GetMessage() == "" {
		return "tern: " + Code(e.GetCode()).String()
	}
	return "tern: " + Code(e.GetCode()).String() + ": " + e.GetMessage()
}

// ErrorCode is the error's Code.
func (e *Error) ErrorCode() Code { return Code(e.GetCode()) }

// NewError returns an Error frame with code and message.
func NewError(code Code, msg string) *Error {
	return &Error{Code: uint32(code), Message: msg}
}

// CodeOf returns the Code carried by err: the code of a *Error in its chain,
// CodeFrameTooLarge or CodeMalformed for framing errors, CodeOK for nil and
// CodeInternal otherwise.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return CodeOK
	case errors.As(err, &e):
		return e.ErrorCode()
	case errors.Is(err, ErrFrameTooLarge):
		return CodeFrameTooLarge
	case errors.Is(err, ErrTruncated), errors.Is(err, ErrMalformed):
		return CodeMalformed
	}
	return CodeInternal
}
