package netsim

import (
	"fmt"
	"time"
)

// Link impairs one direction of the proxy. The zero Link is a perfect
// link: no delay, no loss, unlimited bandwidth.
//
// Impairments apply in this order to each packet arriving at the proxy:
// blackhole, loss (independent or bursty), the bandwidth FIFO (tail drop when
// full), then delay, jitter and reordering; duplication adds a second copy
// released with the original.
type Link struct {
	// Delay is the one-way base delay.
	Delay time.Duration
	// Jitter: each packet gets Delay + uniform[-Jitter, +Jitter], never below 0.
	// Packets may overtake each other: that is reordering by jitter.
	Jitter time.Duration
	// Loss is the independent drop probability in [0, 1] (in the good state
	// when bursty loss is on).
	Loss float64

	// Bursty loss (Gilbert–Elliott), on when BurstStart > 0. For each packet
	// the state first moves (good→bad with probability BurstStart, bad→good
	// with probability BurstEnd), then the packet is lost with Loss in the
	// good state or BurstLoss in the bad state. Mean burst length in packets
	// is 1/BurstEnd. All three are probabilities in [0, 1].
	BurstStart, BurstEnd, BurstLoss float64

	// Reorder is the probability that a packet is held back an extra
	// ReorderDelay, so that packets sent after it overtake it.
	Reorder float64
	// ReorderDelay defaults to 2×Delay, or 10 ms when Delay is 0.
	ReorderDelay time.Duration

	// Duplicate is the probability that a packet is delivered twice.
	Duplicate float64

	// Bandwidth caps the link in payload bytes per second; 0 means unlimited.
	// Packets are serialised at this rate through a FIFO ahead of the delay.
	Bandwidth int64
	// QueueBytes limits the bytes waiting in the bandwidth FIFO; a packet
	// that would take the backlog beyond it is dropped (tail drop). Default
	// 64 KiB. Unused without Bandwidth.
	QueueBytes int
}

// DefaultQueueBytes is the bandwidth FIFO limit when Link.QueueBytes is 0.
const DefaultQueueBytes = 64 << 10

func (l Link) validate() error {
	probs := []struct {
		name string
		v    float64
	}{
		{"Loss", l.Loss}, {"BurstStart", l.BurstStart}, {"BurstEnd", l.BurstEnd},
		{"BurstLoss", l.BurstLoss}, {"Reorder", l.Reorder}, {"Duplicate", l.Duplicate},
	}
	for _, p := range probs {
		if !(p.v >= 0 && p.v <= 1) { // also refuses NaN
			return fmt.Errorf("%s = %v: want a probability in [0, 1]", p.name, p.v)
		}
	}
	switch {
	case l.Delay < 0:
		return fmt.Errorf("Delay = %v: want >= 0", l.Delay)
	case l.Jitter < 0:
		return fmt.Errorf("Jitter = %v: want >= 0", l.Jitter)
	case l.ReorderDelay < 0:
		return fmt.Errorf("ReorderDelay = %v: want >= 0", l.ReorderDelay)
	case l.Bandwidth < 0:
		return fmt.Errorf("Bandwidth = %d: want >= 0", l.Bandwidth)
	case l.QueueBytes < 0:
		return fmt.Errorf("QueueBytes = %d: want >= 0", l.QueueBytes)
	}
	return nil
}

// populate returns l with its documented defaults filled in.
func (l Link) populate() Link {
	if l.ReorderDelay == 0 {
		l.ReorderDelay = 2 * l.Delay
		if l.Delay == 0 {
			l.ReorderDelay = 10 * time.Millisecond
		}
	}
	if l.QueueBytes == 0 {
		l.QueueBytes = DefaultQueueBytes
	}
	return l
}
