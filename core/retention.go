package core

import (
	"context"
	"time"
)

// trimBatch is the most entries one TrimCmd removes, to keep transactions small.
const trimBatch = 1000

// retentionLoop trims entries older than RetainAge, every RetentionInterval.
func (c *Core) retentionLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-c.stop:
				case <-ctx.Done():
				}
				cancel()
			}()
			c.TrimOld(ctx)
			cancel()
		case <-c.stop:
			return
		}
	}
}

// TrimOld trims, in every mailbox, the entries older than RetainAge and
// returns the number of mailboxes trimmed. The retention loop calls it;
// tests and operators may call it directly.
func (c *Core) TrimOld(ctx context.Context) int {
	if c.cfg.RetainAge <= 0 {
		return 0
	}
	cutoff := c.now().Add(-c.cfg.RetainAge)
	trimmed := 0
	for shard := range c.store.Shards() {
		type mailbox struct {
			user  UserID
			floor Seq
		}
		var boxes []mailbox
		err := c.store.Mailboxes(ctx, shard, func(u UserID, h Head) bool {
			if h.Head >= h.EffectiveFloor() {
				boxes = append(boxes, mailbox{u, h.EffectiveFloor()})
			}
			return ctx.Err() == nil
		})
		if err != nil {
			c.log.Warn("retention: scanning mailboxes", "shard", shard, "err", err)
		}
		for _, b := range boxes {
			es, err := c.store.Entries(ctx, b.user, b.floor-1, 1, 0)
			if err != nil || len(es) == 0 || !es[0].SentAt.Before(cutoff) {
				continue
			}
			// Each TrimCmd removes at most trimBatch entries; repeat until one
			// removes fewer.
			for floor := b.floor; ctx.Err() == nil; {
				r, err := c.store.Apply(ctx, &TrimCmd{User: b.user, Before: cutoff, Max: trimBatch})
				if err != nil {
					c.log.Warn("retention: trim", "shard", shard, "err", err)
					break
				}
				c.m.Add(MetricTrimmed, "", 1)
				if r.Seq < floor+trimBatch {
					break
				}
				floor = r.Seq
			}
			trimmed++
		}
	}
	return trimmed
}
