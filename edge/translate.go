package edge

import (
	"context"
	"errors"

	"github.com/ternhq/tern/core"
	"github.com/ternhq/tern/wire"
)

// errorTable maps core's sentinel errors to wire codes. It is the only place
// where domain errors become protocol codes.
var errorTable = []struct {
	err  error
	code wire.Code
}{
	{core.ErrInvalid, wire.CodeBadRequest},
	{core.ErrTooLarge, wire.CodePayloadTooLarge},
	{core.ErrBlocked, wire.CodeBlocked},
	{core.ErrNoSuchGroup, wire.CodeNotFound},
	{core.ErrGroupExists, wire.CodeAlreadyExists},
	{core.ErrNotMember, wire.CodeForbidden},
	{core.ErrForbidden, wire.CodeForbidden},
	{core.ErrGroupTooLarge, wire.CodeGroupTooLarge},
	{core.ErrOverloaded, wire.CodeOverloaded},
	{core.ErrClosed, wire.CodeShuttingDown},
	{core.ErrSessionReplaced, wire.CodeSessionReplaced},
	{ErrTokenExpired, wire.CodeTokenExpired},
	{ErrTokenInvalid, wire.CodeUnauthenticated},
	{wire.ErrFrameTooLarge, wire.CodeFrameTooLarge},
	{wire.ErrTruncated, wire.CodeMalformed},
	{wire.ErrMalformed, wire.CodeMalformed},
	{context.DeadlineExceeded, wire.CodeTimeout},
	{context.Canceled, wire.CodeUnavailable},
}

// toWireError turns an error from the backend (or from decoding) into the
// Error frame a client sees. Errors the table does not know are INTERNAL and
// their text is not sent.
func toWireError(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	var rs *core.ResyncError
	if errors.As(err, &rs) {
		e := wire.NewError(wire.CodeResyncNeeded, rs.Error())
		e.Floor, e.Head = uint64(rs.Floor), uint64(rs.Head)
		return e
	}
	var rl *core.RateLimitError
	if errors.As(err, &rl) {
		e := wire.NewError(wire.CodeRateLimited, rl.Error())
		e.RetryAfterMs = max(wire.Millis(rl.RetryAfter), 1)
		return e
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			return wire.NewError(row.code, err.Error())
		}
	}
	return wire.NewError(wire.CodeInternal, "internal error")
}

func toWireEntry(e *core.Entry) *wire.Entry {
	return &wire.Entry{
		Seq:         uint64(e.Seq),
		Id:          e.ID[:],
		From:        string(e.From),
		FromDevice:  string(e.FromDevice),
		To:          string(e.To),
		Group:       string(e.Group),
		Body:        e.Body,
		SentAtMs:    e.SentAt.UnixMilli(),
		ClientMsgId: string(e.ClientMsgID),
	}
}

func toCorePlatform(p wire.Platform) core.Platform {
	switch p {
	case wire.Platform_PLATFORM_IOS:
		return core.PlatformIOS
	case wire.Platform_PLATFORM_ANDROID:
		return core.PlatformAndroid
	case wire.Platform_PLATFORM_WEB:
		return core.PlatformWeb
	case wire.Platform_PLATFORM_DESKTOP:
		return core.PlatformDesktop
	}
	return core.PlatformUnknown
}

func toCoreAppState(s wire.AppState) core.AppState {
	if s == wire.AppState_APP_STATE_BACKGROUND {
		return core.Background
	}
	return core.Foreground
}

func toWireAckMode(m core.AckMode) wire.AckMode {
	if m == core.AckDevice {
		return wire.AckMode_ACK_MODE_DEVICE
	}
	return wire.AckMode_ACK_MODE_ACCOUNT
}

func toCoreUsers(ss []string) []core.UserID {
	out := make([]core.UserID, len(ss))
	for i, s := range ss {
		out[i] = core.UserID(s)
	}
	return out
}

func toWireUsers(us []core.UserID) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = string(u)
	}
	return out
}

// toCorePush converts a registration from a Hello or a PushRequest; nil
// stays nil.
func toCorePush(p *wire.PushRegistration) *core.PushRegistration {
	if p == nil {
		return nil
	}
	platform := toCorePlatform(p.GetPlatform())
	return &core.PushRegistration{
		Platform: platform,
		Token:    p.GetToken(),
		Topic:    p.GetTopic(),
		Sandbox:  p.GetEnvironment() == wire.PushEnvironment_PUSH_ENVIRONMENT_SANDBOX,
	}
}
