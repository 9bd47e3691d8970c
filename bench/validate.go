package bench

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Guarantee names a delivery property the validator checks over the
// recorded histories, in the manner of etcd's robustness tests.
type Guarantee string

const (
	// Ordered: per sender→receiver pair, messages arrive in the order
	// their sends were issued (each pair's next send is issued only after
	// the previous one was acknowledged, so issue order is causal order);
	// where the target numbers a receiver's mailbox (Delivery.Seq, Tern),
	// the numbers go up by exactly one.
	Ordered Guarantee = "ordered"
	// Unique: no message reaches a receiver twice (by pair counter, by
	// Delivery.ID and by Delivery.Seq).
	Unique Guarantee = "unique"
	// Reliable: every acknowledged send reaches its receiver; nothing
	// arrives that was not sent to it; a receiver's Seq has no gaps.
	Reliable Guarantee = "reliable"
	// Resumable: a receiver that disconnects and connects again continues
	// exactly after what it had: nothing it got before is delivered again,
	// and (with Seq) its first message is the one after its last.
	Resumable Guarantee = "resumable"
)

// Guarantees lists every guarantee in report order.
var Guarantees = []Guarantee{Ordered, Unique, Reliable, Resumable}

// MaxViolations bounds the violations a Validation lists; Counts has them all.
const MaxViolations = 20

// Violation is one broken guarantee, for one receiver.
type Violation struct {
	Guarantee Guarantee `json:"guarantee"`
	Receiver  string    `json:"receiver"`
	Detail    string    `json:"detail"`
}

func (v Violation) String() string {
	return fmt.Sprintf("%s: receiver %s: %s", v.Guarantee, v.Receiver, v.Detail)
}

// Validation is the validator's verdict over one run.
type Validation struct {
	Checked   []Guarantee `json:"checked"`
	Receivers int         `json:"receivers"`
	// Sessions counts receiver connections (Connect calls).
	Sessions int `json:"sessions"`
	// Sent counts sends issued; Acked the ones the target acknowledged;
	// Unacked the ones that failed (they may or may not arrive).
	Sent    int `json:"sent"`
	Acked   int `json:"acked"`
	Unacked int `json:"unacked"`
	// Deliveries counts everything the receivers got (duplicates
	// included); Delivered the distinct acknowledged messages among them.
	Deliveries int `json:"deliveries"`
	Delivered  int `json:"delivered"`
	// SeqChecked says whether the target numbered deliveries (Delivery.Seq)
	// and the validator checked the numbers too.
	SeqChecked bool              `json:"seq_checked"`
	Counts     map[Guarantee]int `json:"counts,omitempty"`
	Violations []Violation       `json:"violations,omitempty"`
}

// OK reports whether no guarantee was broken.
func (v *Validation) OK() bool { return len(v.Counts) == 0 }

func (v *Validation) add(g Guarantee, receiver, format string, args ...any) {
	v.addN(1, g, receiver, format, args...)
}

// addN counts n violations described by one entry.
func (v *Validation) addN(n int, g Guarantee, receiver, format string, args ...any) {
	if v.Counts == nil {
		v.Counts = make(map[Guarantee]int)
	}
	v.Counts[g] += n
	if len(v.Violations) < MaxViolations {
		v.Violations = append(v.Violations, Violation{Guarantee: g, Receiver: receiver, Detail: fmt.Sprintf(format, args...)})
	}
}

// Summary is one line: "ok: ..." or the violation counts.
func (v *Validation) Summary() string {
	if v.OK() {
		seq := ""
		if v.SeqChecked {
			seq = ", seq contiguous"
		}
		return fmt.Sprintf("ok: ordered, unique, reliable, resumable%s — %d acknowledged sends, all %d delivered once to %d receivers over %d sessions (%d unacknowledged)",
			seq, v.Acked, v.Delivered, v.Receivers, v.Sessions, v.Unacked)
	}
	s := "FAILED:"
	for _, g := range Guarantees {
		if n := v.Counts[g]; n > 0 {
			s += fmt.Sprintf(" %s ×%d", g, n)
		}
	}
	return s + fmt.Sprintf(" — %d acknowledged, %d delivered, %d deliveries", v.Acked, v.Delivered, v.Deliveries)
}

// History records a run: every send a sender issued (and whether the target
// acknowledged it) and, per receiver, every delivery in the order the target
// made it, tagged with the receiver's session (one per Connect). Validate
// then checks the guarantees over it. A History is safe for concurrent use:
// each pair's sends must be issued one after the other (Issue, then Done,
// then the next Issue), and each session's deliveries come from one
// goroutine, as Target promises.
type History struct {
	run       uint64
	start     time.Time
	senders   []string
	receivers []string
	pairs     []pairLog // sender*len(receivers) + receiver
	recv      []receiverLog

	issued, acked, failed, delivered atomic.Int64
}

// sendRec is one issued send; times are nanoseconds since the history start.
type sendRec struct {
	start, done int64
	state       uint8
}

const (
	sendInFlight uint8 = iota
	sendAcked
	sendFailed
)

type pairLog struct {
	mu    sync.Mutex
	sends []sendRec // index n-1
}

type receiverLog struct {
	mu       sync.Mutex
	sessions int32
	events   []deliveryRec
}

// deliveryRec is one delivery; sender < 0 marks a body that is not a
// stamp of this run addressed to this receiver (bad says which).
type deliveryRec struct {
	session int32
	sender  int32
	n       uint64
	seq     uint64
	id      string
	at      int64 // ns since start
	sent    int64 // the stamp's time, ns since start
	bad     string
}

// NewHistory starts recording run (the id stamped in bodies) between the
// named senders and receivers; indices into these slices identify them in
// stamps.
func NewHistory(run uint64, senders, receivers []string) *History {
	return &History{
		run:       run,
		start:     time.Now(),
		senders:   senders,
		receivers: receivers,
		pairs:     make([]pairLog, len(senders)*len(receivers)),
		recv:      make([]receiverLog, len(receivers)),
	}
}

// Run is the run id stamped in bodies.
func (h *History) Run() uint64 { return h.run }

// Start is when recording began; every time in the history is relative to it.
func (h *History) Start() time.Time { return h.start }

func (h *History) since(t time.Time) int64 { return int64(t.Sub(h.start)) }

func (h *History) pair(s, r int) *pairLog { return &h.pairs[s*len(h.receivers)+r] }

// Issue records that sender s starts its next send to receiver r and
// returns that send's counter (1 for the pair's first).
func (h *History) Issue(s, r int) uint64 {
	p := h.pair(s, r)
	p.mu.Lock()
	p.sends = append(p.sends, sendRec{start: h.since(time.Now())})
	n := uint64(len(p.sends))
	p.mu.Unlock()
	h.issued.Add(1)
	return n
}

// Done records the outcome of send n from s to r: acknowledged when err is
// nil, failed (may or may not arrive) otherwise.
func (h *History) Done(s, r int, n uint64, err error) {
	p := h.pair(s, r)
	now := h.since(time.Now())
	p.mu.Lock()
	rec := &p.sends[n-1]
	rec.done = now
	if err == nil {
		rec.state = sendAcked
	} else {
		rec.state = sendFailed
	}
	p.mu.Unlock()
	if err == nil {
		h.acked.Add(1)
	} else {
		h.failed.Add(1)
	}
}

// Session starts a new session of receiver r (call it for every Connect)
// and returns the deliver func to hand to Target.Connect.
func (h *History) Session(r int) func(Delivery) {
	rl := &h.recv[r]
	rl.mu.Lock()
	rl.sessions++
	session := rl.sessions
	rl.mu.Unlock()
	return func(d Delivery) { h.record(r, session, d) }
}

func (h *History) record(r int, session int32, d Delivery) {
	at := d.At
	if at.IsZero() {
		at = time.Now()
	}
	e := deliveryRec{session: session, sender: -1, seq: d.Seq, id: d.ID, at: h.since(at)}
	st, err := DecodeBody(d.Body)
	switch {
	case err != nil:
		e.bad = fmt.Sprintf("a body that is not a benchmark message (%d bytes)", len(d.Body))
	case st.Run != h.run:
		e.bad = fmt.Sprintf("a message of another run (%x)", st.Run)
	case st.Receiver != r:
		e.bad = fmt.Sprintf("a message addressed to receiver #%d", st.Receiver)
	case st.Sender < 0 || st.Sender >= len(h.senders):
		e.bad = fmt.Sprintf("a message from unknown sender #%d", st.Sender)
	default:
		e.sender, e.n, e.sent = int32(st.Sender), st.N, h.since(st.At)
	}
	rl := &h.recv[r]
	rl.mu.Lock()
	rl.events = append(rl.events, e)
	rl.mu.Unlock()
	h.delivered.Add(1)
}

// Counts are the live counters, for progress lines and drains.
type Counts struct {
	Issued, Acked, Failed, Delivered int64
}

// Counts returns the live counters.
func (h *History) Counts() Counts {
	return Counts{h.issued.Load(), h.acked.Load(), h.failed.Load(), h.delivered.Load()}
}

// Missing counts the acknowledged sends not delivered yet.
func (h *History) Missing() int { return h.MissingRange(0, len(h.receivers)) }

// MissingRange is Missing for the receivers [lo, hi).
func (h *History) MissingRange(lo, hi int) int {
	missing := 0
	for r := lo; r < hi; r++ {
		got := h.deliveredSet(r)
		for s := range h.senders {
			p := h.pair(s, r)
			p.mu.Lock()
			for i, rec := range p.sends {
				if rec.state == sendAcked && !got[pairN{int32(s), uint64(i + 1)}] {
					missing++
				}
			}
			p.mu.Unlock()
		}
	}
	return missing
}

type pairN struct {
	sender int32
	n      uint64
}

func (h *History) deliveredSet(r int) map[pairN]bool {
	rl := &h.recv[r]
	rl.mu.Lock()
	defer rl.mu.Unlock()
	got := make(map[pairN]bool, len(rl.events))
	for _, e := range rl.events {
		if e.sender >= 0 {
			got[pairN{e.sender, e.n}] = true
		}
	}
	return got
}

// Validate checks every guarantee over the history recorded so far; call it
// once the run has stopped.
func (h *History) Validate() *Validation { return h.ValidateRange(0, len(h.receivers)) }

// ValidateRange is Validate for the receivers [lo, hi) only: the ones this
// process hosts when others host the rest.
func (h *History) ValidateRange(lo, hi int) *Validation {
	v := &Validation{Checked: Guarantees, Receivers: hi - lo}
	for r := lo; r < hi; r++ {
		for s := range h.senders {
			p := h.pair(s, r)
			p.mu.Lock()
			for _, rec := range p.sends {
				v.Sent++
				switch rec.state {
				case sendAcked:
					v.Acked++
				case sendFailed:
					v.Unacked++
				}
			}
			p.mu.Unlock()
		}
		h.validateReceiver(r, v)
	}
	return v
}

// Merge adds o's counts and violations to v (validations of receivers
// hosted by different processes).
func (v *Validation) Merge(o *Validation) {
	v.Receivers += o.Receivers
	v.Sessions += o.Sessions
	v.Sent += o.Sent
	v.Acked += o.Acked
	v.Unacked += o.Unacked
	v.Deliveries += o.Deliveries
	v.Delivered += o.Delivered
	v.SeqChecked = v.SeqChecked || o.SeqChecked
	for g, n := range o.Counts {
		if v.Counts == nil {
			v.Counts = make(map[Guarantee]int)
		}
		v.Counts[g] += n
	}
	for _, x := range o.Violations {
		if len(v.Violations) < MaxViolations {
			v.Violations = append(v.Violations, x)
		}
	}
}

func (h *History) validateReceiver(r int, v *Validation) {
	name := h.receivers[r]
	rl := &h.recv[r]
	rl.mu.Lock()
	events := slices.Clone(rl.events)
	v.Sessions += int(rl.sessions)
	rl.mu.Unlock()
	v.Deliveries += len(events)

	// Per sender: the session each counter was first delivered in (0: not
	// yet), and the highest counter delivered.
	issued := make([][]sendRec, len(h.senders))
	for s := range h.senders {
		p := h.pair(s, r)
		p.mu.Lock()
		issued[s] = slices.Clone(p.sends)
		p.mu.Unlock()
	}
	firstIn := make([][]int32, len(h.senders))
	maxN := make([]uint64, len(h.senders))
	ids := make(map[string]uint64)
	var lastSeq uint64
	haveSeq := false
	var prevSession int32
	for _, e := range events {
		newSession := e.session != prevSession && prevSession != 0
		prevSession = e.session

		// Seq: up by exactly one per delivery, across sessions.
		var seqG Guarantee
		var seqDetail string
		if e.seq != 0 {
			v.SeqChecked = true
			if haveSeq && e.seq != lastSeq+1 {
				switch {
				case newSession && e.seq <= lastSeq:
					seqG, seqDetail = Resumable, fmt.Sprintf("session %d started at seq %d, after seq %d was delivered: redelivered", e.session, e.seq, lastSeq)
				case newSession:
					seqG, seqDetail = Resumable, fmt.Sprintf("session %d started at seq %d, after seq %d: skipped %d..%d", e.session, e.seq, lastSeq, lastSeq+1, e.seq-1)
				case e.seq == lastSeq:
					seqG, seqDetail = Unique, fmt.Sprintf("seq %d delivered twice", e.seq)
				case e.seq < lastSeq:
					seqG, seqDetail = Ordered, fmt.Sprintf("seq %d delivered after seq %d", e.seq, lastSeq)
				default:
					seqG, seqDetail = Reliable, fmt.Sprintf("seq gap: %d after %d, %d..%d missing", e.seq, lastSeq, lastSeq+1, e.seq-1)
				}
			}
			if !haveSeq || e.seq > lastSeq {
				lastSeq = e.seq
			}
			haveSeq = true
		}
		if e.id != "" {
			if prev, dup := ids[e.id]; dup && seqG == "" {
				seqG, seqDetail = Unique, fmt.Sprintf("message id %s delivered twice (seq %d and %d)", e.id, prev, e.seq)
			}
			ids[e.id] = e.seq
		}

		// Pair counter.
		var g Guarantee
		var detail string
		switch {
		case e.sender < 0:
			g, detail = Reliable, "delivered "+e.bad
		case e.n == 0 || e.n > uint64(len(issued[e.sender])):
			g, detail = Reliable, fmt.Sprintf("delivered message %d from %s, which was never sent", e.n, h.senders[e.sender])
		default:
			s := e.sender
			if firstIn[s] == nil {
				firstIn[s] = make([]int32, len(issued[s]))
			}
			switch first := firstIn[s][e.n-1]; {
			case first != 0 && first != e.session:
				g, detail = Resumable, fmt.Sprintf("message %d from %s delivered in session %d and again in session %d", e.n, h.senders[s], first, e.session)
			case first != 0:
				g, detail = Unique, fmt.Sprintf("message %d from %s delivered twice", e.n, h.senders[s])
			default:
				firstIn[s][e.n-1] = e.session
				if issued[s][e.n-1].state == sendAcked {
					v.Delivered++
				}
				if e.n < maxN[s] {
					g, detail = Ordered, fmt.Sprintf("message %d from %s delivered after message %d", e.n, h.senders[s], maxN[s])
				}
				maxN[s] = max(maxN[s], e.n)
			}
		}
		// One violation per delivery: a broken resumption explains the
		// rest; otherwise the pair's view is the more precise.
		switch {
		case seqG == Resumable:
			v.add(seqG, name, "%s", seqDetail)
		case g != "":
			v.add(g, name, "%s", detail)
		case seqG != "":
			v.add(seqG, name, "%s", seqDetail)
		}
	}
	for s := range h.senders {
		var lost []uint64
		for i, rec := range issued[s] {
			if rec.state == sendAcked && (firstIn[s] == nil || firstIn[s][i] == 0) {
				lost = append(lost, uint64(i+1))
			}
		}
		if len(lost) > 0 {
			v.addN(len(lost), Reliable, name, "%d acknowledged message(s) from %s never delivered: %s", len(lost), h.senders[s], shortList(lost))
		}
	}
}

func shortList(ns []uint64) string {
	const show = 8
	s := ""
	for i, n := range ns {
		if i == show {
			return s + fmt.Sprintf(" … (+%d)", len(ns)-show)
		}
		if i > 0 {
			s += " "
		}
		s += fmt.Sprint(n)
	}
	return s
}
