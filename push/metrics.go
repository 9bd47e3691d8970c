package push

import "github.com/ternhq/tern/core"

// The push package's metrics. Results are counted once per attempt; a push
// that is retried twice and then succeeds adds two retry reasons and one
// "ok".
const (
	MetricRequests         = "push_requests_total"       // label platform: Push calls
	MetricAPNsResults      = "push_apns_results_total"   // label reason: ok or the outcome of an attempt
	MetricFCMResults       = "push_fcm_results_total"    // label reason
	MetricAPNsRetries      = "push_apns_retries_total"   // label reason: retries scheduled
	MetricFCMRetries       = "push_fcm_retries_total"    // label reason
	MetricAPNsSendSeconds  = "push_apns_send_seconds"    // histogram
	MetricFCMSendSeconds   = "push_fcm_send_seconds"     // histogram
	MetricDropped          = "push_dropped_total"        // label reason: disabled, unsupported, queue_full, gave_up, rejected, invalid_token, closed
	MetricCoalesced        = "push_coalesced_total"      // a Push replaced one still queued for the device
	MetricCancelled        = "push_cancelled_total"      // a Cancel removed a queued push or a pending retry
	MetricInvalidTokens    = "push_invalid_tokens_total" // label provider: tokens reported to OnInvalidToken
	MetricQueued           = "push_queued"               // gauge: pushes waiting for a worker
	MetricRetryWaiting     = "push_retry_waiting"        // gauge: pushes waiting for a retry
	MetricInFlight         = "push_in_flight"            // gauge: sends in progress
	MetricQueueWaitSeconds = "push_queue_wait_seconds"   // histogram: from Push to the first attempt
)

// MetricDescs lists the push package's metrics.
var MetricDescs = []core.MetricDesc{
	{Name: MetricRequests, Help: "Pushes requested, by platform.", Kind: core.Counter, Label: "platform"},
	{Name: MetricAPNsResults, Help: "APNs send attempts, by result reason.", Kind: core.Counter, Label: "reason"},
	{Name: MetricFCMResults, Help: "FCM send attempts, by result reason.", Kind: core.Counter, Label: "reason"},
	{Name: MetricAPNsRetries, Help: "APNs sends scheduled for a retry, by reason.", Kind: core.Counter, Label: "reason"},
	{Name: MetricFCMRetries, Help: "FCM sends scheduled for a retry, by reason.", Kind: core.Counter, Label: "reason"},
	{Name: MetricAPNsSendSeconds, Help: "Duration of one APNs send attempt.", Kind: core.Histogram},
	{Name: MetricFCMSendSeconds, Help: "Duration of one FCM send attempt.", Kind: core.Histogram},
	{Name: MetricDropped, Help: "Pushes dropped without a successful send, by reason.", Kind: core.Counter, Label: "reason"},
	{Name: MetricCoalesced, Help: "Pushes that replaced one still queued for the same device.", Kind: core.Counter},
	{Name: MetricCancelled, Help: "Queued pushes or pending retries removed by Cancel.", Kind: core.Counter},
	{Name: MetricInvalidTokens, Help: "Tokens a provider reported dead, by provider.", Kind: core.Counter, Label: "provider"},
	{Name: MetricQueued, Help: "Pushes waiting for a worker.", Kind: core.Gauge},
	{Name: MetricRetryWaiting, Help: "Pushes waiting for a retry.", Kind: core.Gauge},
	{Name: MetricInFlight, Help: "Push sends in progress.", Kind: core.Gauge},
	{Name: MetricQueueWaitSeconds, Help: "Time from Push to the first send attempt.", Kind: core.Histogram},
}

// Drop reasons (MetricDropped).
const (
	dropDisabled     = "disabled"
	dropUnsupported  = "unsupported"
	dropQueueFull    = "queue_full"
	dropGaveUp       = "gave_up"
	dropRejected     = "rejected"
	dropInvalidToken = "invalid_token"
	dropClosed       = "closed"
)
