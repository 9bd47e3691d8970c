package push

import (
	"container/list"
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ternhq/tern/core"
)

// Service sends pushes through APNs and FCM. It implements core.Pusher:
// Push and Cancel never block, at most one push per device is queued, and
// workers send, classify the provider's answer and retry on the Service's
// Clock. Create it with New and stop it with Close.
type Service struct {
	cfg   Config
	log   *slog.Logger
	m     core.Metrics
	clock Clock
	apns  *provider // nil when APNs is not configured
	fcm   *provider // nil when FCM is not configured
	// ctx is the parent of every send; cancelled when Close stops waiting.
	ctx    context.Context
	cancel context.CancelFunc
	limit  logLimiter

	mu sync.Mutex // guards the fields below
	// cond is signalled when ready grows or the Service closes.
	cond    *sync.Cond
	entries map[deviceKey]*entry
	ready   list.List // of *entry in stateQueued, oldest first
	waiting int       // entries in stateWaiting
	sending int       // entries in stateSending
	closed  bool
	running int           // worker goroutines
	stopped chan struct{} // closed when the last worker returns
	// dropLogged remembers the platforms whose first drop was logged.
	dropLogged map[core.Platform]bool
}

var _ core.Pusher = (*Service)(nil)

// sender is one provider's client.
type sender interface {
	// send makes one attempt and classifies the answer. It must return
	// when ctx ends.
	send(ctx context.Context, req *core.PushRequest) outcome
	// close closes the sender's connections; called once no send is in
	// progress.
	close()
}

// provider is a sender with the names of its metrics.
type provider struct {
	name                      string // "apns" or "fcm"
	snd                       sender
	results, retries, sendSec string
}

type deviceKey struct {
	user   core.UserID
	device core.DeviceID
}

type entryState int

const (
	stateQueued  entryState = iota // in ready, waiting for a worker
	stateWaiting                   // waiting for its retry timer
	stateSending                   // a worker is sending req
)

// entry is the one push of a device that the Service holds.
type entry struct {
	key   deviceKey
	req   core.PushRequest
	state entryState
	// next is a Push that arrived while req was being sent; it is queued
	// (or retried in req's place) once the send ends.
	next *core.PushRequest
	// cancelled: Cancel or Close came while req was being sent, so req is
	// not retried.
	cancelled bool
	elem      *list.Element // in ready, when stateQueued
	timer     Timer         // when stateWaiting
	timerSeq  uint64        // identifies the current timer
	attempts  int           // failed attempts since the device's last success
	queuedAt  time.Time
	tried     bool
}

// New validates cfg, builds the provider clients (reading key and
// credential files; it does not connect) and starts cfg.Workers workers.
func New(cfg Config) (*Service, error) {
	cfg, err := populateConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg:        cfg,
		log:        cfg.Logger,
		m:          cfg.Metrics,
		clock:      cfg.Clock,
		limit:      logLimiter{clock: cfg.Clock, last: map[string]time.Time{}},
		entries:    map[deviceKey]*entry{},
		stopped:    make(chan struct{}),
		dropLogged: map[core.Platform]bool{},
	}
	s.cond = sync.NewCond(&s.mu)
	if cfg.APNs != nil {
		snd, err := newAPNsSender(*cfg.APNs, cfg.Workers, cfg.Clock)
		if err != nil {
			return nil, err
		}
		s.apns = &provider{name: "apns", snd: snd, results: MetricAPNsResults, retries: MetricAPNsRetries, sendSec: MetricAPNsSendSeconds}
	} else {
		s.log.Info("push: APNs is not configured; pushes to iOS devices will be dropped")
	}
	if cfg.FCM != nil {
		snd, err := newFCMSender(*cfg.FCM, cfg.Workers, cfg.Clock)
		if err != nil {
			return nil, err
		}
		s.fcm = &provider{name: "fcm", snd: snd, results: MetricFCMResults, retries: MetricFCMRetries, sendSec: MetricFCMSendSeconds}
	} else {
		s.log.Info("push: FCM is not configured; pushes to Android devices will be dropped")
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.running = cfg.Workers
	for range cfg.Workers {
		go s.work()
	}
	return s, nil
}

func (s *Service) providerFor(p core.Platform) *provider {
	switch p {
	case core.PlatformIOS:
		return s.apns
	case core.PlatformAndroid:
		return s.fcm
	}
	return nil
}

// Push queues req, replacing the push still queued or waiting for a retry
// for the same device (the newer head wins). When the device's push is
// being sent, req follows it.
func (s *Service) Push(req core.PushRequest) {
	plat := req.Reg.Platform
	s.m.Add(MetricRequests, plat.String(), 1)
	if s.providerFor(plat) == nil {
		s.dropUnsendable(plat)
		return
	}
	k := deviceKey{req.User, req.Device}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.m.Add(MetricDropped, dropClosed, 1)
		return
	}
	if e := s.entries[k]; e != nil {
		if e.state == stateSending {
			if e.next != nil {
				s.m.Add(MetricCoalesced, "", 1)
			}
			e.next = &req
		} else {
			e.req = req
			s.m.Add(MetricCoalesced, "", 1)
		}
		return
	}
	if len(s.entries) >= s.cfg.MaxQueued {
		s.m.Add(MetricDropped, dropQueueFull, 1)
		if s.limit.allow("queue_full") {
			s.log.Warn("push: queue full; dropping pushes", "max_queued", s.cfg.MaxQueued)
		}
		return
	}
	e := &entry{key: k, req: req, queuedAt: s.clock.Now()}
	s.entries[k] = e
	s.enqueue(e)
	s.gauges()
}

func (s *Service) dropUnsendable(p core.Platform) {
	reason := dropUnsupported
	if p == core.PlatformIOS || p == core.PlatformAndroid {
		reason = dropDisabled
	}
	s.m.Add(MetricDropped, reason, 1)
	s.mu.Lock()
	first := !s.dropLogged[p]
	s.dropLogged[p] = true
	s.mu.Unlock()
	if first {
		if reason == dropDisabled {
			s.log.Warn("push: dropping a push: its provider is not configured", "platform", p.String())
		} else {
			s.log.Warn("push: dropping a push: no push service for this platform", "platform", p.String())
		}
	}
}

// Cancel drops the device's queued push or pending retry. A send already
// in progress completes but is not retried.
func (s *Service) Cancel(u core.UserID, d core.DeviceID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[deviceKey{u, d}]
	if e == nil {
		return
	}
	switch e.state {
	case stateQueued:
		s.ready.Remove(e.elem)
		delete(s.entries, e.key)
	case stateWaiting:
		e.timer.Stop()
		s.waiting--
		delete(s.entries, e.key)
	case stateSending:
		e.cancelled = true
		e.next = nil
	}
	s.m.Add(MetricCancelled, "", 1)
	s.gauges()
}

// Close stops accepting pushes, drops what is queued or waiting for a
// retry (core derives pushes again after a restart), and waits for the
// sends in flight to finish. When ctx ends first, it cancels them, waits
// for the workers to return and reports ctx's error. Every goroutine of the
// Service has returned when Close returns. Close may be called more than
// once.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		dropped := 0
		for k, e := range s.entries {
			switch e.state {
			case stateQueued:
				dropped++
				delete(s.entries, k)
			case stateWaiting:
				e.timer.Stop()
				dropped++
				delete(s.entries, k)
			case stateSending:
				if e.next != nil {
					dropped++
				}
				e.next = nil
				e.cancelled = true
			}
		}
		s.ready.Init()
		s.waiting = 0
		if dropped > 0 {
			s.m.Add(MetricDropped, dropClosed, float64(dropped))
		}
		s.gauges()
		s.cond.Broadcast()
	}
	s.mu.Unlock()
	var err error
	select {
	case <-s.stopped:
	case <-ctx.Done():
		err = ctx.Err()
		s.cancel()
		<-s.stopped
	}
	s.cancel()
	for _, p := range []*provider{s.apns, s.fcm} {
		if p != nil {
			p.snd.close()
		}
	}
	return err
}

// work is a worker goroutine, owned by the Service; it returns when the
// Service closes.
func (s *Service) work() {
	defer s.workerDone()
	for {
		e, req, ok := s.take()
		if !ok {
			return
		}
		p := s.providerFor(req.Reg.Platform)
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.SendTimeout)
		start := time.Now()
		out := p.snd.send(ctx, &req)
		cancel()
		s.m.Observe(p.sendSec, time.Since(start).Seconds())
		if out.class != classOK && s.ctx.Err() != nil {
			out = outcome{class: classAborted, reason: "aborted", err: s.ctx.Err()}
		}
		// Log and report first: whoever sees the count or the retry sees
		// the log line and the OnInvalidToken call too.
		s.report(p, &req, out)
		s.m.Add(p.results, out.reason, 1)
		s.finish(p, e, &req, out)
	}
}

func (s *Service) workerDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	if s.running == 0 {
		close(s.stopped)
	}
}

// take waits for a queued push and marks it being sent.
func (s *Service) take() (*entry, core.PushRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.ready.Len() == 0 && !s.closed {
		s.cond.Wait()
	}
	if s.closed {
		return nil, core.PushRequest{}, false
	}
	e := s.ready.Remove(s.ready.Front()).(*entry)
	e.elem = nil
	e.state = stateSending
	s.sending++
	if !e.tried {
		e.tried = true
		s.m.Observe(MetricQueueWaitSeconds, s.clock.Now().Sub(e.queuedAt).Seconds())
	}
	s.gauges()
	return e, e.req, true
}

// finish decides what follows an attempt: nothing, the next push, or a
// retry.
func (s *Service) finish(p *provider, e *entry, sent *core.PushRequest, out outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.gauges()
	s.sending--
	next := e.next
	e.next = nil
	if out.class == classInvalidToken && next != nil && next.Reg.Token == sent.Reg.Token {
		s.m.Add(MetricDropped, dropInvalidToken, 1)
		next = nil
	}
	if out.class == classRejected {
		s.m.Add(MetricDropped, dropRejected, 1)
	}
	retry := (out.class == classRetry || out.class == classAuth) && !e.cancelled
	switch {
	case s.closed:
		delete(s.entries, e.key)
	case retry:
		e.attempts++
		if next != nil {
			e.req = *next
		}
		if e.attempts >= s.cfg.MaxAttempts {
			delete(s.entries, e.key)
			s.m.Add(MetricDropped, dropGaveUp, 1)
			if s.limit.allow("gave_up/" + p.name + "/" + out.reason) {
				s.log.Warn("push: giving up on a push", "provider", p.name, "reason", out.reason,
					"attempts", e.attempts, "err", out.err)
			}
			return
		}
		delay := s.retryDelay(e.attempts, out)
		s.m.Add(p.retries, out.reason, 1)
		e.state = stateWaiting
		s.waiting++
		e.timerSeq++
		seq := e.timerSeq
		e.timer = s.clock.AfterFunc(delay, func() { s.retryDue(e, seq) })
	case next != nil:
		e.req = *next
		e.cancelled = false
		if out.class == classOK {
			e.attempts = 0
		}
		s.enqueue(e)
	default:
		delete(s.entries, e.key)
	}
}

// retryDue requeues e when its retry timer fires.
func (s *Service) retryDue(e *entry, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.entries[e.key] != e || e.state != stateWaiting || e.timerSeq != seq {
		return
	}
	e.timer = nil
	s.waiting--
	s.enqueue(e)
	s.gauges()
}

// enqueue appends e to ready and wakes a worker. s.mu must be held.
func (s *Service) enqueue(e *entry) {
	e.state = stateQueued
	e.elem = s.ready.PushBack(e)
	s.cond.Signal()
}

// gauges publishes the queue gauges. s.mu must be held.
func (s *Service) gauges() {
	s.m.Set(MetricQueued, float64(s.ready.Len()))
	s.m.Set(MetricRetryWaiting, float64(s.waiting))
	s.m.Set(MetricInFlight, float64(s.sending))
}

// retryDelay is the wait before retry number attempts: exponential from
// RetryMin (RetryMax for misconfigurations), jittered to [d/2, d], and
// never shorter than the provider's Retry-After.
func (s *Service) retryDelay(attempts int, out outcome) time.Duration {
	d := s.cfg.RetryMax
	if out.class != classAuth && attempts-1 < 32 {
		d = min(s.cfg.RetryMin<<(attempts-1), s.cfg.RetryMax)
		if d <= 0 { // overflow
			d = s.cfg.RetryMax
		}
	}
	d = d/2 + rand.N(d/2+1)
	return max(d, out.retryAfter)
}

// report logs an attempt's outcome and reports dead tokens. It runs on the
// worker, outside s.mu.
func (s *Service) report(p *provider, req *core.PushRequest, out outcome) {
	switch out.class {
	case classInvalidToken:
		s.m.Add(MetricInvalidTokens, p.name, 1)
		s.log.Info("push: provider reports a dead token", "provider", p.name, "reason", out.reason,
			"user", req.User, "device", req.Device)
		if s.cfg.OnInvalidToken != nil {
			s.cfg.OnInvalidToken(s.ctx, req.User, req.Device, req.Reg.Token, out.reason)
		}
	case classRetry:
		if s.limit.allow("retry/" + p.name + "/" + out.reason) {
			s.log.Warn("push: send failed; retrying", "provider", p.name, "reason", out.reason, "err", out.err)
		}
	case classAuth:
		if s.limit.allow("auth/" + p.name + "/" + out.reason) {
			s.log.Error("push: provider refuses our credentials or configuration; retrying slowly",
				"provider", p.name, "reason", out.reason, "retry_in", s.cfg.RetryMax, "err", out.err)
		}
	case classRejected:
		if s.limit.allow("rejected/" + p.name + "/" + out.reason) {
			s.log.Warn("push: provider rejected a push; dropped", "provider", p.name, "reason", out.reason, "err", out.err)
		}
	}
}

// logLimiter lets one log line per key through per minute.
type logLimiter struct {
	clock Clock
	mu    sync.Mutex
	last  map[string]time.Time
}

const logEvery = time.Minute

func (l *logLimiter) allow(key string) bool {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < logEvery {
		return false
	}
	l.last[key] = now
	return true
}
