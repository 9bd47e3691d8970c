package core

// Metrics receives counters and observations from core and from the
// packages built on it (storage, edge, push). Names are stable, snake_case,
// and documented in the Desc lists each package exports (core's is
// MetricDescs); labels carry a reason or a kind, never a user.
// Implementations must be safe for concurrent use and must not block.
type Metrics interface {
	// Add adds delta to counter name with the given label value ("" when
	// the counter has no label).
	Add(name, label string, delta float64)
	// Observe records one observation (seconds, or a count) in histogram
	// name.
	Observe(name string, v float64)
	// Set sets gauge name.
	Set(name string, v float64)
}

// NopMetrics discards everything.
type NopMetrics struct{}

func (NopMetrics) Add(string, string, float64) {}
func (NopMetrics) Observe(string, float64)     {}
func (NopMetrics) Set(string, float64)         {}

// MetricKind is the Prometheus type of a metric.
type MetricKind int

const (
	Counter MetricKind = iota
	Histogram
	Gauge
)

// MetricDesc describes one metric for registration.
type MetricDesc struct {
	Name string
	Help string
	Kind MetricKind
	// Label is the name of the counter's one label, or "".
	Label string
	// Buckets are the histogram's upper bounds; nil means latency buckets
	// in seconds.
	Buckets []float64
}

// Core's metrics.
const (
	MetricSends          = "core_sends_total" // label result: ok, duplicate, or an error reason
	MetricSyncs          = "core_syncs_total" // label result
	MetricDelivered      = "core_forward_delivered_total"
	MetricForwardRetries = "core_forward_retries_total" // label reason
	MetricForwardPending = "core_forward_pending"
	MetricNotifies       = "core_notifies_total"
	MetricSessions       = "core_sessions"
	MetricTakeovers      = "core_session_takeovers_total"
	MetricTrimmed        = "core_retention_trims_total"
	MetricSendSeconds    = "core_send_seconds"
	MetricPushDecisions  = "core_push_decisions_total" // label reason: growth, resume, foreground, outstanding, cleared, token_dropped
)

// MetricDescs lists core's metrics.
var MetricDescs = []MetricDesc{
	{Name: MetricSends, Help: "Sends handled, by result.", Kind: Counter, Label: "result"},
	{Name: MetricSyncs, Help: "Syncs handled, by result.", Kind: Counter, Label: "result"},
	{Name: MetricDelivered, Help: "Outbox items appended to a recipient's mailbox.", Kind: Counter},
	{Name: MetricForwardRetries, Help: "Delivery attempts that failed and will be retried, by reason.", Kind: Counter, Label: "reason"},
	{Name: MetricForwardPending, Help: "Outbox items waiting for delivery.", Kind: Gauge},
	{Name: MetricNotifies, Help: "Notifies handed to sessions.", Kind: Counter},
	{Name: MetricSessions, Help: "Attached sessions.", Kind: Gauge},
	{Name: MetricTakeovers, Help: "Sessions replaced by a newer session of the same device.", Kind: Counter},
	{Name: MetricTrimmed, Help: "Trim commands applied by the retention sweeper.", Kind: Counter},
	{Name: MetricSendSeconds, Help: "Time from a send's arrival in core to its durable acknowledgement.", Kind: Histogram},
	{Name: MetricPushDecisions, Help: "Push decisions: pushes requested (growth, resume), skipped (foreground, outstanding), cleared by a sync, dead tokens dropped.", Kind: Counter, Label: "reason"},
}

// Reason returns a short, stable label for err, for metrics.
func Reason(err error) string {
	switch {
	case err == nil:
		return "ok"
	case isErr(err, ErrInvalid):
		return "invalid"
	case isErr(err, ErrTooLarge):
		return "too_large"
	case isErr(err, ErrBlocked):
		return "blocked"
	case isErr(err, ErrNoSuchGroup):
		return "no_such_group"
	case isErr(err, ErrNotMember):
		return "not_member"
	case isErr(err, ErrGroupExists):
		return "group_exists"
	case isErr(err, ErrForbidden):
		return "forbidden"
	case isErr(err, ErrGroupTooLarge):
		return "group_too_large"
	case isErr(err, ErrOverloaded):
		return "overloaded"
	case isErr(err, ErrClosed):
		return "closed"
	case isErr(err, ErrSessionReplaced):
		return "session_replaced"
	case isRateLimit(err):
		return "rate_limited"
	case isResync(err):
		return "resync"
	case isCtx(err):
		return "canceled"
	}
	return "error"
}
