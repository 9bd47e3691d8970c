package core

// Push: waking devices that have no live session (or whose app said it is in
// the background) through Apple's or Google's push service. core decides
// who is pushed and when; a Pusher (package push) talks to the services.

// PushRegistration is how one device is woken.
type PushRegistration struct {
	// Platform picks the service: PlatformIOS → APNs, PlatformAndroid → FCM.
	Platform Platform
	// Token is the device token (APNs) or registration token (FCM).
	Token string
	// Topic is the APNs topic, usually the app's bundle id; unused by FCM.
	Topic string
	// Sandbox selects APNs's development environment.
	Sandbox bool
}

// MaxPushTokenLen bounds a push token, in bytes.
const MaxPushTokenLen = 4096

// PushRequest asks a push service to wake one device.
type PushRequest struct {
	User   UserID
	Device DeviceID
	Reg    PushRegistration
	// Head is the mailbox seq the push announces.
	Head Seq
	// CollapseID makes the service replace an undelivered earlier push of
	// the same device (apns-collapse-id, FCM collapse_key): a device is
	// woken once however many messages arrive.
	CollapseID string
	// Preview is the newest entry when Config.PushPreview is on; nil means
	// no message content leaves the server in a push.
	Preview *Entry
}

// Pusher sends pushes. Push and Cancel must not block: implementations queue
// and deliver on their own goroutines, and retry transient provider failures
// themselves (honouring Retry-After). When a provider says a token is no
// longer valid, the Pusher reports it to whoever owns registrations
// (Core.DropPushToken).
type Pusher interface {
	// Push queues req, replacing anything still queued for the device.
	Push(req PushRequest)
	// Cancel drops what is queued for the device, e.g. because it synced.
	Cancel(u UserID, d DeviceID)
}
