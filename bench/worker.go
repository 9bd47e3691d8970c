package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"
)

// The worker protocol: a worker process holds a share of the connections
// scenario's clients. The parent writes one JSON object a line on the
// worker's stdin, the worker answers the same way on its stdout:
//
//	→ {"op":"connect", run, prefix, senders, total, from, to, rate, concurrency}
//	← {"connected":k} about once a second, then {"done":true,"connected":k,"failed":f,"errors":[...]}
//	→ {"op":"probe","acked":[r...],"timeout":"60s"}   (after the parent sent them one message each)
//	← {"validation":{...}}
//	→ {"op":"close"} or end of input: the worker disconnects and exits.
type workerMsg struct {
	Op          string   `json:"op,omitempty"`
	Run         uint64   `json:"run,omitempty"`
	Prefix      string   `json:"prefix,omitempty"`
	Senders     int      `json:"senders,omitempty"`
	Total       int      `json:"total,omitempty"`
	From        int      `json:"from,omitempty"`
	To          int      `json:"to,omitempty"`
	Rate        float64  `json:"rate,omitempty"`
	Concurrency int      `json:"concurrency,omitempty"`
	Acked       []int    `json:"acked,omitempty"`
	Timeout     Duration `json:"timeout,omitempty"`

	Connected  int         `json:"connected,omitempty"`
	Failed     int         `json:"failed,omitempty"`
	Done       bool        `json:"done,omitempty"`
	Errors     []string    `json:"errors,omitempty"`
	Validation *Validation `json:"validation,omitempty"`
	Err        string      `json:"err,omitempty"`
}

// Worker is a worker process seen from its parent.
type Worker struct {
	wait      func() error // waits for the worker to exit
	kill      func()
	in        io.WriteCloser
	enc       *json.Encoder
	out       *json.Decoder
	connected atomic.Int64
	closeOnce sync.Once
	closeErr  error
}

// StartWorker starts argv (a command that runs ServeWorker against the same
// server, e.g. `tern bench worker --addr ...`); its stderr goes to stderr.
func StartWorker(ctx context.Context, argv []string, stderr io.Writer) (*Worker, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start worker: %w", err)
	}
	return newWorker(in, out, cmd.Wait, func() { cmd.Process.Kill() }), nil
}

func newWorker(in io.WriteCloser, out io.Reader, wait func() error, kill func()) *Worker {
	return &Worker{wait: wait, kill: kill, in: in, enc: json.NewEncoder(in), out: json.NewDecoder(bufio.NewReader(out))}
}

func (w *Worker) read() (workerMsg, error) {
	var m workerMsg
	if err := w.out.Decode(&m); err != nil {
		return m, fmt.Errorf("bench: worker: %w", err)
	}
	if m.Err != "" {
		return m, fmt.Errorf("bench: worker: %s", m.Err)
	}
	return m, nil
}

// connect asks the worker to connect its share and waits until it has.
func (w *Worker) connect(m workerMsg) (failed int, errs []error) {
	if err := w.enc.Encode(m); err != nil {
		return m.To - m.From, []error{err}
	}
	for {
		r, err := w.read()
		if err != nil {
			return m.To - m.From - int(w.connected.Load()), []error{err}
		}
		w.connected.Store(int64(r.Connected))
		if r.Done {
			for _, e := range r.Errors {
				errs = append(errs, errors.New(e))
			}
			return r.Failed, errs
		}
	}
}

// probe tells the worker which of its receivers were sent a message and
// returns its validation.
func (w *Worker) probe(acked []int, timeout Duration) (*Validation, error) {
	if err := w.enc.Encode(workerMsg{Op: "probe", Acked: acked, Timeout: timeout}); err != nil {
		return nil, err
	}
	r, err := w.read()
	if err != nil {
		return nil, err
	}
	if r.Validation == nil {
		return nil, errors.New("bench: worker answered without a validation")
	}
	return r.Validation, nil
}

// Close tells the worker to disconnect and waits for it to exit (killing
// it after 30s).
func (w *Worker) Close() error {
	w.closeOnce.Do(func() {
		w.enc.Encode(workerMsg{Op: "close"})
		w.in.Close()
		done := make(chan error, 1)
		go func() { done <- w.wait() }()
		select {
		case w.closeErr = <-done:
		case <-time.After(30 * time.Second):
			w.kill()
			w.closeErr = <-done
		}
	})
	return w.closeErr
}

// ServeWorker is the worker side of the protocol: it reads the parent's
// requests from in and answers on out until "close" or end of input.
func ServeWorker(ctx context.Context, t Target, in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	var outMu sync.Mutex
	send := func(m workerMsg) error {
		outMu.Lock()
		defer outMu.Unlock()
		return enc.Encode(m)
	}
	var h *History
	var conns []Conn
	var lo, hi int
	defer func() { closeAll(conns) }()
	for {
		var m workerMsg
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("bench worker: %w", err)
		}
		switch m.Op {
		case "connect":
			if h != nil {
				return send(workerMsg{Err: "connect twice"})
			}
			lo, hi = m.From, m.To
			h = NewHistory(m.Run, userNames(m.Prefix, "s", m.Senders), userNames(m.Prefix, "r", m.Total))
			names := userNames(m.Prefix, "r", m.Total)[lo:hi]
			var connected atomic.Int64
			stop := make(chan struct{})
			var ticks sync.WaitGroup
			ticks.Go(func() {
				t := time.NewTicker(time.Second)
				defer t.Stop()
				for {
					select {
					case <-stop:
						return
					case <-t.C:
						send(workerMsg{Connected: int(connected.Load())})
					}
				}
			})
			var failed int
			var errs []error
			conns, failed, errs = connectAll(ctx, t, names, func(i int) func(Delivery) { return h.Session(lo + i) }, m.Rate, m.Concurrency, &connected)
			close(stop)
			ticks.Wait()
			r := workerMsg{Done: true, Connected: int(connected.Load()), Failed: failed}
			for _, e := range errs {
				r.Errors = append(r.Errors, e.Error())
			}
			if err := send(r); err != nil {
				return err
			}
		case "probe":
			if h == nil {
				return send(workerMsg{Err: "probe before connect"})
			}
			for _, r := range m.Acked {
				if r >= lo && r < hi {
					n := h.Issue(0, r)
					h.Done(0, r, n, nil)
				}
			}
			drain(ctx, h, lo, hi, time.Duration(m.Timeout))
			if err := send(workerMsg{Validation: h.ValidateRange(lo, hi)}); err != nil {
				return err
			}
		case "close":
			return nil
		default:
			return send(workerMsg{Err: fmt.Sprintf("unknown op %q", m.Op)})
		}
	}
}
