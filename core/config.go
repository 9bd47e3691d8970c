package core

import (
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Core. The zero value of every field means the default
// stated beside it; Validate reports contradictions.
type Config struct {
	// AckMode: AckAccount (default) or AckDevice.
	AckMode AckMode
	// DedupWindow is how long a (device, client_msg_id) pair returns the
	// first send's result. Default 24h.
	DedupWindow time.Duration
	// DeliveryTTL is how long the forwarder's delivery markers are kept; an
	// outbox item retried later than this could be delivered twice. Default 7
	// days.
	DeliveryTTL time.Duration
	// RetainCount is the most entries a mailbox keeps; older ones are
	// trimmed as new ones arrive. Default 100,000; negative: no limit.
	RetainCount int
	// RetainAge trims entries older than this. Default 30 days; negative: no
	// limit.
	RetainAge time.Duration
	// RetentionInterval is how often mailboxes are swept for RetainAge.
	// Default 5 minutes.
	RetentionInterval time.Duration
	// MaxBodySize bounds a message body, in bytes. Default 64 KiB.
	MaxBodySize int
	// MaxGroupSize bounds the members of a group. Default 1,000.
	MaxGroupSize int
	// SyncLimit is the default and largest page a sync returns, in entries.
	// Default 500.
	SyncLimit int
	// SendRate is each user's sustained send rate, in messages per second;
	// SendBurst the burst above it. Defaults 100/s and 500; a negative
	// SendRate disables the limit.
	SendRate  float64
	SendBurst int
	// Forward configures the forwarder.
	Forward ForwardConfig
	// Pusher wakes devices without a live foreground session through APNs
	// and FCM; nil means no pushes.
	Pusher Pusher
	// PushPreview puts the newest message (sender and text) into pushes.
	// Default false: no message content leaves the server in a push.
	PushPreview bool

	// Logger receives core's logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives core's counters; nil discards them.
	Metrics Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// ForwardConfig configures the forwarder that appends sent messages to
// recipients' mailboxes.
type ForwardConfig struct {
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts to deliver one item. Defaults 50ms and 30s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxInFlight bounds concurrent deliveries. Default 256.
	MaxInFlight int
	// FlushInterval is how often delivered items are removed from the
	// outbox. Default 20ms.
	FlushInterval time.Duration
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	def(&c.DedupWindow, 24*time.Hour)
	def(&c.DeliveryTTL, 7*24*time.Hour)
	def(&c.RetainAge, 30*24*time.Hour)
	def(&c.RetentionInterval, 5*time.Minute)
	defInt(&c.RetainCount, 100_000)
	defInt(&c.MaxBodySize, 64<<10)
	defInt(&c.MaxGroupSize, 1000)
	defInt(&c.SyncLimit, 500)
	if c.SendRate == 0 {
		c.SendRate = 100
	}
	defInt(&c.SendBurst, 500)
	def(&c.Forward.MinBackoff, 50*time.Millisecond)
	def(&c.Forward.MaxBackoff, 30*time.Second)
	defInt(&c.Forward.MaxInFlight, 256)
	def(&c.Forward.FlushInterval, 20*time.Millisecond)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NopMetrics{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.AckMode != AckAccount && c.AckMode != AckDevice:
		return fmt.Errorf("core: unknown ack mode %d", c.AckMode)
	case c.DedupWindow < 0, c.DeliveryTTL < 0, c.RetentionInterval < 0:
		return fmt.Errorf("core: negative duration")
	case c.MaxBodySize < 0, c.MaxGroupSize < 0, c.SyncLimit < 0, c.SendBurst < 0:
		return fmt.Errorf("core: negative limit")
	case c.Forward.MinBackoff <= 0 || c.Forward.MaxBackoff < c.Forward.MinBackoff:
		return fmt.Errorf("core: forward backoff must satisfy 0 < min <= max")
	case c.Forward.MaxInFlight < 0 || c.Forward.FlushInterval < 0:
		return fmt.Errorf("core: negative forward limit")
	}
	return nil
}
