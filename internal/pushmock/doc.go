// Package pushmock provides protocol-level mocks of Apple Push
// Notification service and Firebase Cloud Messaging, for tests that run the
// real SDK clients (apns2, firebase) against 127.0.0.1, and a manual clock
// for push.Config.Clock.
//
// APNs (NewAPNs) is an HTTP/2 TLS server implementing POST
// /3/device/{token}: it verifies the provider JWT against a key made by
// NewAPNsKey (ES256 signature, kid, iss, iat age) or a client certificate
// made by NewAPNsCert, apns-topic against APNsOptions.Topics, apns-push-type
// (background or alert) and its priority (background requires 5),
// apns-collapse-id (≤ 64 bytes), apns-expiration and the payload size, and
// answers as Apple does: 200 with apns-id, or a status with
// {"reason": ...}. FCM (NewFCM) is an HTTP server implementing POST
// /v1/projects/{project}/messages:send with FCM v1's error format, plus an
// OAuth token endpoint for the service-account files it writes
// (WriteServiceAccount).
//
// Both record every request (Requests, WaitRequests, Count) and answer
// 200 unless told otherwise: Script queues answers for one token (e.g.
// APNsUnregistered, an APNsResponse with RetryAfter "30", a Hold channel
// that keeps a request in flight), SetErrorRate fails a fraction of all
// requests. Mocks close with the test that created them.
//
// Wiring a push.Service to both (an end-to-end test passes the Service to
// core as its Pusher and asserts on the mocks' Requests):
//
//	key, _ := pushmock.NewAPNsKey(t.TempDir())
//	apns := pushmock.NewAPNs(t, pushmock.APNsOptions{Key: key, Topics: []string{"com.example.app"}})
//	fcm := pushmock.NewFCM(t, pushmock.FCMOptions{})
//	svc, err := push.New(push.Config{APNs: apns.PushConfig(), FCM: fcm.PushConfig()})
//	...
//	t.Cleanup(func() { svc.Close(context.Background()) }) // registered after the mocks: runs first
//	reqs, err := apns.WaitRequests(1) // reqs[0].Token, .JSON["tern"], .CollapseID ...
//
// For retry tests give the Service a pushmock.Clock (Config.Clock) and step
// it with Advance after WaitPending reports the retry timer.
//
// APNs device tokens must be hex (the Service refuses others as malformed);
// FCM tokens are any non-empty string.
package pushmock
