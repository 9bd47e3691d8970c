package bench

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// Result is what one run of a scenario measured.
type Result struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	// Config is the scenario's configuration, defaults filled in.
	Config  any       `json:"config"`
	Env     *Env      `json:"env,omitempty"`
	Started time.Time `json:"started"`
	// Elapsed is the wall time of the whole run, setup included.
	Elapsed Duration `json:"elapsed"`
	Figures []Figure `json:"figures"`
	// Series are figures over time (throughput per interval...).
	Series []Series `json:"series,omitempty"`
	// Latency is the distribution behind the latency figures, as a CDF.
	Latency *CDF `json:"latency,omitempty"`
	// Validation is the delivery validator's verdict.
	Validation *Validation `json:"validation"`
	// Counters sums the client-side counters of the conns (StatsReporter).
	Counters map[string]uint64 `json:"client_counters,omitempty"`
	// Notes say how to read the figures (what shares the process...).
	Notes []string `json:"notes,omitempty"`
}

// Failed reports whether the validator found a broken guarantee.
func (r *Result) Failed() bool { return r.Validation != nil && !r.Validation.OK() }

// Figure returns the named figure.
func (r *Result) Figure(name string) (Figure, bool) {
	for _, f := range r.Figures {
		if f.Name == name {
			return f, true
		}
	}
	return Figure{}, false
}

func (r *Result) add(name, label string, v float64, unit string) {
	r.Figures = append(r.Figures, Figure{Name: name, Label: label, Value: v, Unit: unit})
}

func (r *Result) note(s string) { r.Notes = append(r.Notes, s) }

// Figure is one named measurement.
type Figure struct {
	Name  string  `json:"name"`
	Label string  `json:"label"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// MarshalJSON writes NaN and infinities (figures that could not be
// measured) as null.
func (f Figure) MarshalJSON() ([]byte, error) {
	type plain Figure
	var v *float64
	if !math.IsNaN(f.Value) && !math.IsInf(f.Value, 0) {
		v = &f.Value
	}
	return json.Marshal(struct {
		plain
		Value *float64 `json:"value"`
	}{plain(f), v})
}

// Series is a figure sampled at a fixed step from the start of the
// measured phase.
type Series struct {
	Name string `json:"name"`
	Unit string `json:"unit"`
	// Step is the interval between points, in seconds.
	Step   float64   `json:"step_s"`
	Points []float64 `json:"points"`
}

// CDF is a latency distribution: Points are (latency, fraction of samples
// at or below it), enough to draw it.
type CDF struct {
	Name   string       `json:"name"`
	Count  int          `json:"count"`
	Points [][2]float64 `json:"points"` // milliseconds, fraction
}

// Duration is a time.Duration that marshals as a string ("1.5s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

func (d Duration) String() string { return time.Duration(d).String() }

// Env describes where a run happened.
type Env struct {
	GoVersion  string `json:"go_version"`
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	NumCPU     int    `json:"num_cpu"`
	CPU        string `json:"cpu,omitempty"`
	Commit     string `json:"commit,omitempty"`
	// Server says where the server ran ("in-process", "child process",
	// an address).
	Server string `json:"server,omitempty"`
}

// CurrentEnv describes this process; Commit comes from the build
// information when the binary was built from a VCS checkout.
func CurrentEnv() *Env {
	e := &Env{
		GoVersion:  runtime.Version(),
		GOOS:       runtime.GOOS,
		GOARCH:     runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU:     runtime.NumCPU(),
		CPU:        cpuModel(),
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" && modified == "true" {
			rev += "+dirty"
		}
		e.Commit = rev
	}
	return e
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Median returns, for every figure of the first result, the median over the
// results that have it (the mean of the middle two for an even count).
func Median(results []*Result) []Figure {
	if len(results) == 0 {
		return nil
	}
	var out []Figure
	for _, f := range results[0].Figures {
		var vs []float64
		for _, r := range results {
			if g, ok := r.Figure(f.Name); ok && !math.IsNaN(g.Value) {
				vs = append(vs, g.Value)
			}
		}
		m := f
		m.Value = median(vs)
		out = append(out, m)
	}
	return out
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	vs = slices.Clone(vs)
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// latencies is a set of samples in nanoseconds.
type latencies []int64

func (l latencies) sorted() latencies {
	l = slices.Clone(l)
	slices.Sort(l)
	return l
}

// quantile of sorted samples (nearest rank), in milliseconds; NaN when empty.
func (l latencies) quantile(q float64) float64 {
	if len(l) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(l)))) - 1
	i = min(max(i, 0), len(l)-1)
	return float64(l[i]) / 1e6
}

// cdf of sorted samples, about 400 points spread evenly on a log scale of
// the tail (more points near p99.9 than near the median).
func (l latencies) cdf(name string) *CDF {
	c := &CDF{Name: name, Count: len(l)}
	if len(l) == 0 {
		return c
	}
	n := len(l)
	last := -1
	const points = 400
	maxNines := math.Log10(float64(n))
	for i := 0; i <= points; i++ {
		// fraction = 1 - 10^(-nines), nines from 0 to log10(n).
		frac := 1 - math.Pow(10, -maxNines*float64(i)/points)
		idx := min(int(frac*float64(n)), n-1)
		if idx == last {
			continue
		}
		last = idx
		c.Points = append(c.Points, [2]float64{float64(l[idx]) / 1e6, float64(idx+1) / float64(n)})
	}
	if last != n-1 {
		c.Points = append(c.Points, [2]float64{float64(l[n-1]) / 1e6, 1})
	}
	return c
}

// addLatency adds the percentile figures of sorted samples under prefix.
func (r *Result) addLatency(prefix, label string, l latencies) {
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", .5}, {"p90", .9}, {"p99", .99}, {"p99.9", .999}} {
		r.add(prefix+"_"+q.name+"_ms", label+" "+q.name, l.quantile(q.q), "ms")
	}
	r.add(prefix+"_max_ms", label+" max", l.quantile(1), "ms")
}

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	u, s := rusage()
	return u + s
}

// nanValue marks a figure that could not be measured.
var nanValue = math.NaN()
