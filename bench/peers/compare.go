package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/ternhq/tern/bench"
)

// throughputGoal is the target: Tern's throughput at least this
// many times each durable peer's, in the same run.
const throughputGoal = 10

// comparison holds every run of every system.
type comparison struct {
	opts    options
	systems []system
	// headline are the figures compared, the first one the main one.
	headline []string
	results  map[string][]*bench.Result // by system, completed runs in order
	errs     map[string][]error         // by system, runs that did not complete
}

func newComparison(o options, syss []system) *comparison {
	c := &comparison{opts: o, systems: syss, results: make(map[string][]*bench.Result), errs: make(map[string][]error)}
	switch o.scenario {
	case "throughput":
		c.headline = []string{"delivered_per_s", "sent_per_s", "e2e_p50_ms", "e2e_p99_ms", "total_cpu_per_msg_us"}
	case "latency":
		c.headline = []string{"latency_p50_ms", "latency_p99_ms", "latency_p99.9_ms", "ack_p50_ms", "delivered_per_s"}
	}
	return c
}

func (c *comparison) add(name string, res *bench.Result, err error) {
	if err != nil {
		c.errs[name] = append(c.errs[name], err)
		return
	}
	c.results[name] = append(c.results[name], res)
}

// higherIsBetter tells how to orient a ratio: rates are better high,
// latencies and CPU low.
func higherIsBetter(unit string) bool { return strings.HasSuffix(unit, "/s") }

// median returns the median of the named figure over name's runs.
func (c *comparison) median(name, figure string) (bench.Figure, bool) {
	runs := c.results[name]
	if len(runs) == 0 {
		return bench.Figure{}, false
	}
	for _, f := range bench.Median(runs) {
		if f.Name == figure {
			return f, true
		}
	}
	return bench.Figure{}, false
}

// ratio is how many times better Tern's median is than the peer's: Tern ÷
// peer for rates, peer ÷ Tern for latencies and CPU. NaN when either is
// missing.
func (c *comparison) ratio(peer, figure string) float64 {
	t, ok1 := c.median("tern", figure)
	p, ok2 := c.median(peer, figure)
	if !ok1 || !ok2 || t.Value <= 0 || p.Value <= 0 {
		return math.NaN()
	}
	if higherIsBetter(t.Unit) {
		return t.Value / p.Value
	}
	return p.Value / t.Value
}

// label and unit of a figure, from the first run that has it.
func (c *comparison) figureInfo(figure string) (label, unit string, ok bool) {
	for _, s := range c.systems {
		for _, r := range c.results[s.name] {
			if f, found := r.Figure(figure); found {
				return f.Label, f.Unit, true
			}
		}
	}
	return "", "", false
}

func (c *comparison) hasTern() bool {
	for _, s := range c.systems {
		if s.name == "tern" {
			return true
		}
	}
	return false
}

// failures lists the runs that broke a guarantee or did not complete.
func (c *comparison) failures() []string {
	var out []string
	for _, s := range c.systems {
		for i, r := range c.results[s.name] {
			if r.Failed() {
				out = append(out, fmt.Sprintf("%s (run %d of the completed ones): %s", s.name, i+1, r.Validation.Summary()))
			}
		}
		for _, err := range c.errs[s.name] {
			out = append(out, err.Error())
		}
	}
	return out
}

func (c *comparison) title() string {
	o := c.opts
	s := fmt.Sprintf("Durable inbox, %s scenario — %d run(s) per target; %d senders × %d receivers, %d-byte bodies, ",
		o.scenario, o.runs, o.senders, o.receivers, o.size)
	switch o.scenario {
	case "throughput":
		s += fmt.Sprintf("window %d, ", o.window)
		if o.messages > 0 {
			s += fmt.Sprintf("%d messages per run", o.messages)
		} else {
			s += fmt.Sprintf("%v per run", o.duration)
		}
	case "latency":
		s += fmt.Sprintf("%.0f msg/s offered for %v per run", o.rate, o.duration)
	}
	return s
}

// asymmetry says where each server ran.
func (c *comparison) asymmetry() string {
	var in, out []string
	for _, s := range c.systems {
		if s.inProcess {
			in = append(in, s.name)
		} else {
			out = append(out, s.name)
		}
	}
	var parts []string
	if len(out) > 0 {
		parts = append(parts, strings.Join(out, ", ")+" runs as a child process (its clients in this process)")
	}
	if len(in) > 0 {
		parts = append(parts, strings.Join(in, ", ")+" run inside this process, server and clients sharing its CPUs")
	}
	return "Servers: " + strings.Join(parts, "; ") + ". All on loopback, each run with a fresh server and data directory."
}

func fmtValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.1f×", v)
}

func (c *comparison) writeText(w io.Writer, verbose bool) error {
	fmt.Fprintln(w, c.title())
	fmt.Fprintln(w, c.asymmetry())
	for _, fig := range c.headline {
		label, unit, ok := c.figureInfo(fig)
		if !ok {
			continue
		}
		better := "lower is better"
		if higherIsBetter(unit) {
			better = "higher is better"
		}
		fmt.Fprintf(w, "\n%s (%s; %s)\n", label, unit, better)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		head := "target\t"
		for r := range c.opts.runs {
			head += fmt.Sprintf("run %d\t", r+1)
		}
		head += "median\t"
		if c.hasTern() {
			head += "Tern's advantage\t"
		}
		fmt.Fprintln(tw, head)
		for _, s := range c.systems {
			line := s.name + "\t"
			runs := c.results[s.name]
			for r := range c.opts.runs {
				v := math.NaN()
				if r < len(runs) {
					if f, ok := runs[r].Figure(fig); ok {
						v = f.Value
					}
				}
				line += fmtValue(v) + "\t"
			}
			m, _ := c.median(s.name, fig)
			if len(runs) == 0 {
				m.Value = math.NaN()
			}
			line += fmtValue(m.Value) + "\t"
			if c.hasTern() {
				if s.name == "tern" {
					line += "\t"
				} else {
					line += fmtRatio(c.ratio(s.name, fig)) + "\t"
				}
			}
			fmt.Fprintln(tw, line)
		}
		tw.Flush()
	}

	if c.hasTern() && c.opts.scenario == "throughput" {
		fmt.Fprintf(w, "\nGoal: Tern's throughput ≥ %d× each durable peer's in the same run (medians):\n", throughputGoal)
		for _, s := range c.systems {
			if s.name == "tern" {
				continue
			}
			for _, fig := range []string{"delivered_per_s", "sent_per_s"} {
				r := c.ratio(s.name, fig)
				verdict := "met"
				if math.IsNaN(r) {
					verdict = "not measured"
				} else if r < throughputGoal {
					verdict = "NOT met"
				}
				label, _, _ := c.figureInfo(fig)
				fmt.Fprintf(w, "  vs %-16s %-28s %7s  %s\n", s.name, label+":", fmtRatio(r), verdict)
			}
		}
	}

	fmt.Fprintln(w, "\nDelivery validation (ordered, unique, reliable, resumable):")
	for _, s := range c.systems {
		var parts []string
		for i, r := range c.results[s.name] {
			if r.Validation == nil {
				continue
			}
			if r.Failed() {
				parts = append(parts, fmt.Sprintf("run %d FAILED: %s", i+1, r.Validation.Summary()))
				for _, v := range r.Validation.Violations {
					parts = append(parts, "    "+v.String())
				}
			}
		}
		for _, err := range c.errs[s.name] {
			parts = append(parts, "ERROR: "+err.Error())
		}
		if len(parts) == 0 {
			fmt.Fprintf(w, "  %-16s ok (%d runs)\n", s.name, len(c.results[s.name]))
			continue
		}
		fmt.Fprintf(w, "  %s:\n", s.name)
		for _, p := range parts {
			fmt.Fprintf(w, "    %s\n", p)
		}
	}

	fmt.Fprintln(w, "\nDurability:")
	for _, s := range c.systems {
		fmt.Fprintf(w, "  %-16s %s\n", s.name, s.durability)
	}
	notes := c.notes()
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	if verbose {
		for _, s := range c.systems {
			if runs := c.results[s.name]; len(runs) > 0 {
				fmt.Fprintln(w)
				if err := bench.WriteText(w, runs); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// notes gathers the runs' notes, each once: those of every target first,
// then each target's own, prefixed with its name.
func (c *comparison) notes() []string {
	var order []string
	by := make(map[string]map[string]bool) // note -> targets
	ran := 0
	for _, s := range c.systems {
		if len(c.results[s.name]) > 0 {
			ran++
		}
		for _, r := range c.results[s.name] {
			for _, n := range r.Notes {
				if by[n] == nil {
					by[n] = make(map[string]bool)
					order = append(order, n)
				}
				by[n][s.name] = true
			}
		}
	}
	var all, own []string
	for _, n := range order {
		if ran > 1 && len(by[n]) == ran {
			all = append(all, "all: "+n)
			continue
		}
		for _, s := range c.systems {
			if by[n][s.name] {
				own = append(own, s.name+": "+n)
			}
		}
	}
	return append(all, own...)
}

type jsonTarget struct {
	Name       string          `json:"name"`
	Server     string          `json:"server"`
	Durability string          `json:"durability"`
	Runs       []*bench.Result `json:"runs"`
	Errors     []string        `json:"errors,omitempty"`
	Median     []bench.Figure  `json:"median,omitempty"`
}

type jsonRatio struct {
	Figure string `json:"figure"`
	Peer   string `json:"peer"`
	// Advantage is how many times better Tern's median is: Tern ÷ peer for
	// rates, peer ÷ Tern for latencies and CPU; null when not measured.
	Advantage *float64 `json:"tern_advantage"`
}

type jsonComparison struct {
	Title     string       `json:"title"`
	Scenario  string       `json:"scenario"`
	Servers   string       `json:"servers"`
	Env       *bench.Env   `json:"env"`
	Targets   []jsonTarget `json:"targets"`
	Ratios    []jsonRatio  `json:"ratios,omitempty"`
	Failures  []string     `json:"failures,omitempty"`
	Succeeded bool         `json:"succeeded"`
}

func (c *comparison) writeJSON(w io.Writer) error {
	out := jsonComparison{Title: c.title(), Scenario: c.opts.scenario, Servers: c.asymmetry(), Env: bench.CurrentEnv(), Failures: c.failures()}
	out.Succeeded = len(out.Failures) == 0
	for _, s := range c.systems {
		jt := jsonTarget{Name: s.name, Server: "child process", Durability: s.durability, Runs: c.results[s.name]}
		if s.inProcess {
			jt.Server = "in-process"
		}
		if len(jt.Runs) > 0 {
			jt.Median = bench.Median(jt.Runs)
		}
		for _, err := range c.errs[s.name] {
			jt.Errors = append(jt.Errors, err.Error())
		}
		out.Targets = append(out.Targets, jt)
		if s.name == "tern" || !c.hasTern() {
			continue
		}
		for _, fig := range c.headline {
			jr := jsonRatio{Figure: fig, Peer: s.name}
			if r := c.ratio(s.name, fig); !math.IsNaN(r) {
				jr.Advantage = &r
			}
			out.Ratios = append(out.Ratios, jr)
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// writeHTML writes bench's report of every target's runs, with the
// comparison table first.
func (c *comparison) writeHTML(path string) error {
	var groups [][]*bench.Result
	for _, s := range c.systems {
		if runs := c.results[s.name]; len(runs) > 0 {
			groups = append(groups, runs)
		}
	}
	var page bytes.Buffer
	if err := bench.WriteHTML(&page, "Tern and its peers: "+c.opts.scenario, groups); err != nil {
		return err
	}
	var text bytes.Buffer
	if err := c.writeText(&text, false); err != nil {
		return err
	}
	summary := "<pre>" + html.EscapeString(text.String()) + "</pre>"
	b := page.Bytes()
	if i := bytes.Index(b, []byte("</h1>")); i >= 0 {
		i += len("</h1>")
		b = append(b[:i:i], append([]byte(summary), b[i:]...)...)
	}
	return os.WriteFile(path, b, 0o644)
}
