package core

import (
	"errors"
	"fmt"
	"time"
)

// Domain errors. The edge maps each to one wire code in a single table.
var (
	ErrInvalid       = errors.New("invalid argument")
	ErrTooLarge      = errors.New("message body too large")
	ErrBlocked       = errors.New("recipient blocks sender")
	ErrNoSuchGroup   = errors.New("no such group")
	ErrGroupExists   = errors.New("group exists")
	ErrNotMember     = errors.New("not a member of the group")
	ErrForbidden     = errors.New("forbidden")
	ErrGroupTooLarge = errors.New("group size limit reached")
	ErrOverloaded    = errors.New("overloaded")
	ErrClosed        = errors.New("closed")
	// ErrSessionReplaced refuses to resume a session that a newer session
	// of the same device replaced.
	ErrSessionReplaced = errors.New("session replaced by a newer session of the device")
)

// ResyncError says a sync asked for entries that are not retained (below
// Floor) or do not exist (above Head). The device must reset its seq (to
// Floor-1, or to Head) and pull again, accepting the gap explicitly.
type ResyncError struct {
	Floor Seq
	Head  Seq
	Asked Seq
}

func (e *ResyncError) Error() string {
	return fmt.Sprintf("resync needed: asked after %d, mailbox holds %d..%d", e.Asked, e.Floor, e.Head)
}

// RateLimitError says the sender exceeded its send rate.
type RateLimitError struct {
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("rate limited: retry after %s", e.RetryAfter)
}
