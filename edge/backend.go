package edge

import (
	"context"

	"github.com/ternhq/tern/core"
)

// Backend is everything the edge needs from the core tier. *core.Core
// implements it in process; a networked client of a remote core can
// implement it when edge and core run as separate processes.
type Backend interface {
	Attach(ctx context.Context, info core.SessionInfo, sink core.Sink) (core.Session, core.Welcome, error)
	Send(ctx context.Context, req core.SendRequest) (core.SendResult, error)
	Sync(ctx context.Context, req core.SyncRequest) (core.SyncResult, error)
	Ack(ctx context.Context, u core.UserID, d core.DeviceID, seq core.Seq) (core.Seq, error)
	CreateGroup(ctx context.Context, owner core.UserID, g core.GroupID, members []core.UserID) ([]core.UserID, error)
	AddMembers(ctx context.Context, by core.UserID, g core.GroupID, members []core.UserID) ([]core.UserID, error)
	RemoveMembers(ctx context.Context, by core.UserID, g core.GroupID, members []core.UserID) ([]core.UserID, error)
	Members(ctx context.Context, by core.UserID, g core.GroupID) ([]core.UserID, error)
	Block(ctx context.Context, by, who core.UserID, unblock bool) error
	RegisterPush(ctx context.Context, u core.UserID, d core.DeviceID, r core.PushRegistration) error
	UnregisterPush(ctx context.Context, u core.UserID, d core.DeviceID) error
}

var _ Backend = (*core.Core)(nil)
