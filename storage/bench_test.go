package storage

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ternhq/tern/core"
)

// BenchmarkDurableAppend compares, at 64 and 512 concurrent appenders,
// each appending to its own mailbox, every append answered once fsync'd:
//
//   - batching: Store.Apply with core.SendCmd (entry, head, dedup record,
//     applied index), the shard's writer packing queued commands into one
//     transaction, the syncer fsyncing the commits applied meanwhile;
//   - baseline: raw Badger, one db.Update per append (read head, write
//     entry and head), SyncWrites on.
//
// ns/op is wall time per append over all appenders (1/throughput); the
// appends/s metric says the same the other way up; appends/txn and
// appends/sync are the appends per transaction and per fsync. Run with e.g.
//
//	go test ./storage -run '^$' -bench DurableAppend -benchtime 3s
func BenchmarkDurableAppend(b *testing.B) {
	for _, appenders := range []int{64, 512} {
		b.Run(fmt.Sprintf("batching/appenders=%d", appenders), func(b *testing.B) {
			benchBatching(b, appenders, DefaultShards)
		})
		b.Run(fmt.Sprintf("baseline/appenders=%d", appenders), func(b *testing.B) {
			benchBaseline(b, appenders)
		})
	}
}

// BenchmarkDurableAppendShards measures the batching writer with 1, 2 and 4
// shards, for the choice of DefaultShards.
func BenchmarkDurableAppendShards(b *testing.B) {
	for _, appenders := range []int{64, 512} {
		for _, shards := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("shards=%d/appenders=%d", shards, appenders), func(b *testing.B) {
				benchBatching(b, appenders, shards)
			})
		}
	}
}

var benchBody = bytes.Repeat([]byte{'m'}, 100)

// commitCounter counts committed transactions and syncs.
type commitCounter struct {
	core.NopMetrics
	commits, syncs atomic.Int64
}

func (c *commitCounter) Observe(name string, _ float64) {
	switch name {
	case MetricBatchCommands:
		c.commits.Add(1)
	case MetricSyncSeconds:
		c.syncs.Add(1)
	}
}

func benchBatching(b *testing.B, appenders, shards int) {
	m := &commitCounter{}
	s, err := OpenBadger(b.TempDir(), Options{Shards: shards, Metrics: m})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	m.commits.Store(0)
	m.syncs.Store(0)
	runAppenders(b, appenders, func(w, i int) error {
		now := time.UnixMilli(time.Now().UnixMilli())
		_, err := s.Apply(ctx, &core.SendCmd{
			Sender: core.UserID("user-" + strconv.Itoa(w)), Device: "phone",
			ClientMsgID: core.ClientMsgID(strconv.Itoa(i)), ID: core.NewMessageID(now), Now: now,
			Body: benchBody, DedupWindow: 24 * time.Hour,
		})
		return err
	})
	if n := m.commits.Load(); n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "appends/txn")
	}
	if n := m.syncs.Load(); n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "appends/sync")
	}
}

func benchBaseline(b *testing.B, appenders int) {
	opts := badger.DefaultOptions(b.TempDir()).WithSyncWrites(true).WithDetectConflicts(false).WithLogger(nil)
	db, err := badger.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	runAppenders(b, appenders, func(w, i int) error {
		u := core.UserID("user-" + strconv.Itoa(w))
		return db.Update(func(txn *badger.Txn) error {
			kv := badgerTxn{txn}
			h, err := readHead(kv, 0, u)
			if err != nil {
				return err
			}
			h.Head++
			now := time.UnixMilli(time.Now().UnixMilli())
			e := core.Entry{Seq: h.Head, ID: core.NewMessageID(now), From: u, FromDevice: "phone", Body: benchBody, SentAt: now}
			if err := kv.set(entryKey(0, u, h.Head), encodeEntry(&e), 0); err != nil {
				return err
			}
			return kv.set(headKey(0, u), encodeHead(h), 0)
		})
	})
}

// runAppenders runs b.N appends spread over appenders goroutines (append
// takes the goroutine's number and a unique append number) and reports the
// rate.
func runAppenders(b *testing.B, appenders int, append func(w, i int) error) {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		failed  error
	)
	b.ResetTimer()
	start := time.Now()
	for w := range appenders {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				if err := append(w, i); err != nil {
					errOnce.Do(func() { failed = err })
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
}
