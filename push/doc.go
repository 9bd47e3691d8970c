// Package push wakes devices that have no live session through Apple Push
// Notification service (github.com/sideshow/apns2) and Firebase Cloud
// Messaging (firebase.google.com/go/v4/messaging, HTTP v1 API). Its Service
// implements core.Pusher: core decides who is pushed and when; this package
// owns the provider clients and credentials, per-device coalescing, retries
// with backoff, result classification and token hygiene (reporting dead
// tokens through Config.OnInvalidToken so that core deletes them).
//
// # What a push carries
//
// APNs: apns-topic (the registration's Topic, else APNsConfig.Topic),
// apns-push-type and apns-priority (background/5 by default, alert/10),
// apns-collapse-id (PushRequest.CollapseID; ids over 64 bytes or with
// non-printable bytes are replaced by their hex SHA-256), apns-expiration
// (now + Expiration), and the payload
//
//	{"aps":{"content-available":1},"tern":{"seq":N}}
//
// or, in alert mode, {"aps":{"alert":{"title":...,"body":...}},"tern":{...}}.
// Sandbox registrations go to the development host, others to production.
// FCM: a data message {"tern_seq":"N"} with android priority, collapse_key
// and ttl, plus a notification when FCMConfig.Notification is on. Message
// content leaves the server only when core sets PushRequest.Preview: then
// the APNs "tern" dictionary gains from, group and text (and the alert shows
// them), and FCM data gains tern_from, tern_group and tern_text. Text is the
// body when it is UTF-8, cut at 1 KiB.
//
// # Results
//
// Each attempt's answer is counted in push_apns_results_total or
// push_fcm_results_total, labelled by reason, and handled so:
//
//	answer                                          reason label                 what follows
//	200                                             ok                           done
//	APNs 410 Unregistered, ExpiredToken             unregistered, expired_token  OnInvalidToken; no retry
//	APNs 400 BadDeviceToken, DeviceTokenNotForTopic bad_device_token, ...        OnInvalidToken; no retry
//	FCM UNREGISTERED, SENDER_ID_MISMATCH            unregistered, ...            OnInvalidToken; no retry
//	FCM INVALID_ARGUMENT about the token            invalid_token                OnInvalidToken; no retry
//	APNs token not hex / FCM token empty            malformed_token              OnInvalidToken; nothing sent
//	APNs 429, 500, 503; FCM QUOTA_EXCEEDED,         too_many_requests, internal, retry: backoff from RetryMin,
//	  UNAVAILABLE, INTERNAL; other 429/5xx;           unavailable, http_5xx,       never before Retry-After
//	  network errors and timeouts                     network, timeout, ...
//	APNs 403 InvalidProviderToken,                  invalid_provider_token, ...  Error log (once per cause per
//	  ExpiredProviderToken, MissingProviderToken,                                  minute); retry after RetryMax
//	  BadCertificate..., TopicDisallowed,
//	  BadTopic, MissingTopic; FCM
//	  THIRD_PARTY_AUTH_ERROR, PERMISSION_DENIED,
//	  UNAUTHENTICATED, 404 without UNREGISTERED
//	  (wrong project), token endpoint refusals
//	other 4xx (our payload: PayloadTooLarge,        payload_too_large,           dropped (push_dropped_total
//	  FCM INVALID_ARGUMENT about the message)         invalid_argument, ...        {rejected}); Warn log
//
// FCM sends INVALID_ARGUMENT both for a malformed token and for a malformed
// message; it is read as "about the token" when the error has a
// google.rpc.BadRequest violation on message.token or its message speaks of
// the registration token, the only signals FCM gives.
//
// A push that fails MaxAttempts times is given up (push_dropped_total
// {gave_up}). Other counters: push_requests_total{platform},
// push_*_retries_total{reason}, push_dropped_total{reason} (disabled,
// unsupported, queue_full, gave_up, rejected, invalid_token, closed),
// push_coalesced_total, push_cancelled_total, push_invalid_tokens_total
// {provider}; gauges push_queued, push_retry_waiting, push_in_flight;
// histograms push_apns_send_seconds, push_fcm_send_seconds,
// push_queue_wait_seconds. MetricDescs lists them. No metric is labelled by
// user, device or token.
//
// # Configuration
//
// Config, APNsConfig and FCMConfig are plain structs whose zero values are
// documented defaults. A nil APNs or FCM disables that provider: pushes for
// its platform are dropped and counted (reason "disabled"), logged once at
// New and once at the first drop; pushes for web, desktop or unknown
// platforms likewise (reason "unsupported"). APNs authenticates with a .p8
// key (KeyFile, KeyID, TeamID) or a client certificate (CertFile, .p12 or
// PEM). FCM authenticates with a service-account file (CredentialsFile); its
// token_uri is honoured. Endpoint (both providers) and RootCAs point the
// real SDK clients at test servers; with an FCM Endpoint and no
// CredentialsFile, no credentials are sent. Package internal/pushmock
// provides such servers.
//
// # Retries and the SDKs
//
// The Service retries; the SDKs must not. Their HTTP clients run over a
// recorder that lets each attempt make one round trip, keeps the answer's
// status, headers and body, and then ends the attempt's context: apns2
// discards response headers (so Retry-After), and the firebase SDK retries
// 503s and network errors by itself with real-time sleeps of up to two
// minutes, which would hold a worker and bypass Config.Clock.
//
// # Concurrency
//
// Push and Cancel never block on the network: they take one mutex and
// return. The Service holds at most one push per device: a Push replaces the
// queued one (the newer head wins) or, while the device's push is being
// sent, waits behind it; Cancel removes a queued push or a pending retry (a
// send in progress completes but is not retried). Config.Workers goroutines,
// started by New and owned by the Service, take pushes in FIFO order and
// send them. A push waiting for a retry holds no worker: a timer of
// Config.Clock puts it back in the queue, so one device's failures never
// delay another's push. OnInvalidToken is called on a worker goroutine.
// Close stops accepting, drops what is queued or waiting (core derives
// pushes again after a restart), waits for sends in flight (cancelling them
// when its context ends) and returns after every worker has returned; no
// goroutine of the Service outlives it.
package push
