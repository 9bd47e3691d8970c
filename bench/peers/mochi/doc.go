// Package mochi runs the durable-inbox workload on mochi-mqtt
// (github.com/mochi-mqtt/server/v2), an MQTT v5 broker, with its Badger
// storage hook, over TCP or over QUIC (package quicconn), as a bench.Target.
//
// # The workload in MQTT terms
//
// Every user is one MQTT v5 client (client id "inbox-<user>") with a
// persistent session: Clean Start 0 and a session expiry of a day, subscribed
// at QoS 1 to inbox/<user>. Send publishes at QoS 1 to inbox/<to> and returns
// on the PUBACK. Received messages are handed to deliver and acknowledged
// (PUBACK) after deliver returns; a message that arrives while the Conn is
// closing is neither delivered nor acknowledged, so the broker keeps it in
// the session and sends it again on the next connection. A user's inbox
// exists from its first Connect (MQTT has no inbox without a session).
//
// The client is github.com/eclipse/paho.golang (MQTT v5: Clean Start and
// session expiry are how v5 keeps a session; it runs over any net.Conn, so
// the same client code serves TCP and the QUIC stream).
//
// # Durability
//
// The Badger hook opens Badger with the options it is given; this package
// gives it badger.DefaultOptions with SyncWrites, so every hook write (one
// Badger transaction per write) is fsync'd before the write returns.
//
// Stock mochi v2.7.9 acknowledges a QoS 1 PUBLISH before it stores it:
// Server.processPublish writes the PUBACK and only then calls
// publishToSubscribers, which stores the message in each subscriber's
// session (the hook's OnQosPublish). A crash in between loses an
// acknowledged message. With Config.StoreBeforeAck (the default), a small
// hook (storeBeforeAck) hands the message to the subscribers from OnPublish,
// which mochi calls before it writes the PUBACK, and tells mochi to skip its
// own hand-over: the same writes, in an order where the PUBACK follows the
// fsync. TestStoreBeforeAck shows both orders.
//
// Other limits of the broker that a durable inbox meets, configured here as
// far as mochi allows: a session holds at most MaximumInflight (65535)
// unacknowledged messages, and mochi drops messages for a client whose
// pending-write queue (MaximumClientWritesPending, 65536 here) is full;
// Target.Dropped reports both counters. On reconnection mochi resends a
// session's stored messages sorted by their creation time in whole seconds,
// so messages queued within the same second come back in no set order
// (the contract test logs how many). mochi also keeps the packet ids of a
// client's messages in both directions in one table: a SUBSCRIBE whose id
// matches one of the broker's messages in flight to that client is refused,
// so a reconnecting Conn does not subscribe again when its session is
// present (the subscription is part of the session); and a PUBLISH from a
// client with such an id makes mochi forget that message for a later resend.
// The bench's senders and receivers are distinct users, so it does not meet
// the latter.
//
// # Concurrency
//
// A Target is safe for concurrent use. Each Conn runs paho's goroutines
// (reader, handler, pinger); deliver is called from the handler goroutine.
// Close stops them. The mochi server's goroutines stop in Target.Close,
// except the Badger hook's garbage-collection ticker loop, which mochi never
// stops (it leaks one idle goroutine per Target).
package mochi
