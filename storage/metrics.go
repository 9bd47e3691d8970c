package storage

import "github.com/ternhq/tern/core"

// The store's metrics, reported through Options.Metrics.
const (
	MetricBatchCommands = "storage_batch_commands"   // histogram: commands per committed transaction
	MetricCommitSeconds = "storage_commit_seconds"   // histogram: time from commit to durable, for one transaction
	MetricCommands      = "storage_commands_total"   // counter, label result: ok or error
	MetricOverloaded    = "storage_overloaded_total" // counter: commands refused because a shard's queue was full
	MetricSyncSeconds   = "storage_sync_seconds"     // histogram: time of one group sync (Badger only)
	MetricSyncCommits   = "storage_sync_commits"     // histogram: transactions made durable by one sync (Badger only)
)

// MetricDescs lists the store's metrics.
var MetricDescs = []core.MetricDesc{
	{Name: MetricBatchCommands, Help: "Commands applied per committed transaction.", Kind: core.Histogram,
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}},
	{Name: MetricCommitSeconds, Help: "Time from committing one transaction to its being durable, fsync included.", Kind: core.Histogram},
	{Name: MetricCommands, Help: "Commands applied, by result (ok, error).", Kind: core.Counter, Label: "result"},
	{Name: MetricOverloaded, Help: "Commands refused because their shard's queue was full.", Kind: core.Counter},
	{Name: MetricSyncSeconds, Help: "Time of one group sync of the database's logs (fsync).", Kind: core.Histogram},
	{Name: MetricSyncCommits, Help: "Transactions made durable by one group sync.", Kind: core.Histogram,
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}},
}
