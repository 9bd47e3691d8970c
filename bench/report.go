package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// WriteText writes the runs of one scenario as a table: one column per
// run and, for several runs, their median.
func WriteText(w io.Writer, runs []*Result) error {
	if len(runs) == 0 {
		return nil
	}
	r0 := runs[0]
	fmt.Fprintf(w, "tern bench %s — target %s", r0.Scenario, r0.Target)
	if e := r0.Env; e != nil {
		fmt.Fprintf(w, " (server %s; %s, GOMAXPROCS %d, %s)", orDash(e.Server), e.GoVersion, e.GOMAXPROCS, orDash(e.CPU))
	}
	fmt.Fprintln(w)
	// Labels left-aligned (padded here), numbers right-aligned.
	width := len("figure")
	for _, f := range r0.Figures {
		width = max(width, utf8.RuneCountInString(f.Label))
	}
	pad := func(s string) string { return s + strings.Repeat(" ", width-utf8.RuneCountInString(s)) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := pad("figure") + "\t"
	if len(runs) == 1 {
		head += "value\t"
	} else {
		for i := range runs {
			head += fmt.Sprintf("run %d\t", i+1)
		}
		head += "median\t"
	}
	fmt.Fprintln(tw, head+"unit\t")
	med := Median(runs)
	for i, f := range r0.Figures {
		line := pad(f.Label) + "\t"
		for _, r := range runs {
			g, _ := r.Figure(f.Name)
			line += formatValue(g.Value) + "\t"
		}
		if len(runs) > 1 {
			line += formatValue(med[i].Value) + "\t"
		}
		fmt.Fprintln(tw, line+f.Unit+"\t")
	}
	tw.Flush()
	for i, r := range runs {
		prefix := "validation"
		if len(runs) > 1 {
			prefix = fmt.Sprintf("run %d validation", i+1)
		}
		if r.Validation != nil {
			fmt.Fprintf(w, "%s: %s\n", prefix, r.Validation.Summary())
			for _, v := range r.Validation.Violations {
				fmt.Fprintf(w, "  %s\n", v)
			}
		}
	}
	for _, n := range r0.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for i, r := range runs[1:] {
		for _, n := range r.Notes {
			if !containsString(r0.Notes, n) {
				fmt.Fprintf(w, "note (run %d): %s\n", i+2, n)
			}
		}
	}
	return nil
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// formatValue prints a figure with a precision fitting its size.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case a == 0:
		return "0"
	case a >= 10000:
		return thousands(int64(math.Round(v)))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// Summary is the JSON object written after several runs of a scenario.
type Summary struct {
	Scenario string   `json:"scenario"`
	Target   string   `json:"target"`
	Runs     int      `json:"runs"`
	Failed   int      `json:"failed_runs"`
	Median   []Figure `json:"median"`
	Env      *Env     `json:"env,omitempty"`
}

// WriteJSON writes one JSON object a line per run and, for several runs, a
// Summary with the medians.
func WriteJSON(w io.Writer, runs []*Result) error {
	enc := json.NewEncoder(w)
	for _, r := range runs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	if len(runs) > 1 {
		s := Summary{Scenario: runs[0].Scenario, Target: runs[0].Target, Runs: len(runs), Median: Median(runs), Env: runs[0].Env}
		for _, r := range runs {
			if r.Failed() {
				s.Failed++
			}
		}
		return enc.Encode(s)
	}
	return nil
}

// palette colours runs and series.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"}

// WriteHTML writes one self-contained page (inline CSS and SVG, no scripts,
// nothing fetched) with, per scenario, the figures table, the latency CDF,
// the latency tail and throughput over time.
func WriteHTML(w io.Writer, title string, scenarios [][]*Result) error {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>` + html.EscapeString(title) + `</title><style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}.ok{color:#080}.bad{color:#b00;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:1em}svg{background:#fcfcfc;border:1px solid #ddd}
.note{color:#555;font-size:.9em}code{background:#f3f3f3;padding:0 3px}
</style></head><body>`)
	b.WriteString("<h1>" + html.EscapeString(title) + "</h1>")
	for _, runs := range scenarios {
		if len(runs) == 0 {
			continue
		}
		writeScenarioHTML(&b, runs)
	}
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeScenarioHTML(b *strings.Builder, runs []*Result) {
	r0 := runs[0]
	esc := html.EscapeString
	fmt.Fprintf(b, "<h2>%s — %s</h2>", esc(r0.Scenario), esc(r0.Target))
	if e := r0.Env; e != nil {
		fmt.Fprintf(b, `<p class="note">server %s · %s %s/%s · GOMAXPROCS %d · %s · commit %s · started %s</p>`,
			esc(orDash(e.Server)), esc(e.GoVersion), esc(e.GOOS), esc(e.GOARCH), e.GOMAXPROCS, esc(orDash(e.CPU)), esc(orDash(e.Commit)),
			esc(r0.Started.UTC().Format("2006-01-02 15:04:05 MST")))
	}
	b.WriteString("<table><tr><th>figure</th>")
	for i := range runs {
		if len(runs) > 1 {
			fmt.Fprintf(b, `<th style="color:%s">run %d</th>`, palette[i%len(palette)], i+1)
		} else {
			b.WriteString("<th>value</th>")
		}
	}
	if len(runs) > 1 {
		b.WriteString("<th>median</th>")
	}
	b.WriteString("<th>unit</th></tr>")
	med := Median(runs)
	for i, f := range r0.Figures {
		fmt.Fprintf(b, "<tr><td>%s</td>", esc(f.Label))
		for _, r := range runs {
			g, _ := r.Figure(f.Name)
			fmt.Fprintf(b, "<td>%s</td>", formatValue(g.Value))
		}
		if len(runs) > 1 {
			fmt.Fprintf(b, "<td><b>%s</b></td>", formatValue(med[i].Value))
		}
		fmt.Fprintf(b, "<td>%s</td></tr>", esc(f.Unit))
	}
	b.WriteString("</table>")
	for i, r := range runs {
		if r.Validation == nil {
			continue
		}
		class := "ok"
		if !r.Validation.OK() {
			class = "bad"
		}
		label := "validation"
		if len(runs) > 1 {
			label = fmt.Sprintf("run %d validation", i+1)
		}
		fmt.Fprintf(b, `<p class="%s">%s: %s</p>`, class, label, esc(r.Validation.Summary()))
		if len(r.Validation.Violations) > 0 {
			b.WriteString("<ul>")
			for _, v := range r.Validation.Violations {
				fmt.Fprintf(b, "<li>%s</li>", esc(v.String()))
			}
			b.WriteString("</ul>")
		}
	}
	b.WriteString(`<div class="charts">`)
	var cdf, tail, tput []line
	for i, r := range runs {
		col := palette[i%len(palette)]
		name := r0.Scenario
		if len(runs) > 1 {
			name = fmt.Sprintf("run %d", i+1)
		}
		if r.Latency != nil && len(r.Latency.Points) > 0 {
			var c, t line
			c.name, c.color, t.name, t.color = name, col, name, col
			for _, p := range r.Latency.Points {
				c.pts = append(c.pts, [2]float64{math.Max(p[0], 1e-3), p[1]})
				if p[1] < 1 {
					t.pts = append(t.pts, [2]float64{-math.Log10(1 - p[1]), p[0]})
				}
			}
			cdf, tail = append(cdf, c), append(tail, t)
		}
		for j, s := range r.Series {
			l := line{name: name + " " + s.Name, color: col, dashed: j > 0}
			for k, v := range s.Points {
				l.pts = append(l.pts, [2]float64{float64(k) * s.Step, v})
			}
			tput = append(tput, l)
		}
	}
	if len(cdf) > 0 {
		title := "Latency CDF"
		if r0.Latency != nil {
			title += ": " + r0.Latency.Name
		}
		b.WriteString(svgChart(chart{title: title, xlabel: "latency (ms, log scale)", ylabel: "fraction of messages", xlog: true, ymin0: true, ymax: 1, lines: cdf}))
		b.WriteString(svgChart(chart{title: "Latency tail", xlabel: "percentile", ylabel: "latency (ms)", nines: true, ymin0: true, lines: tail}))
	}
	if len(tput) > 0 {
		b.WriteString(svgChart(chart{title: "Throughput over time (solid: acked, dashed: delivered)", xlabel: "time (s)", ylabel: "messages/s", ymin0: true, lines: tput}))
	}
	b.WriteString("</div>")
	for _, n := range r0.Notes {
		fmt.Fprintf(b, `<p class="note">%s</p>`, esc(n))
	}
	cfg, _ := json.MarshalIndent(r0.Config, "", "  ")
	fmt.Fprintf(b, `<details><summary>configuration</summary><pre>%s</pre></details>`, esc(string(cfg)))
}

type line struct {
	name, color string
	dashed      bool
	pts         [][2]float64
}

type chart struct {
	title, xlabel, ylabel string
	xlog                  bool // x on a log10 scale
	nines                 bool // x is -log10(1-p): label as percentiles
	ymin0                 bool
	ymax                  float64 // 0: from the data
	lines                 []line
}

// svgChart draws lines on axes with ticks, as inline SVG.
func svgChart(c chart) string {
	const W, H, left, right, top, bottom = 480.0, 300.0, 60.0, 15.0, 30.0, 45.0
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	tx := func(x float64) float64 {
		if c.xlog {
			return math.Log10(x)
		}
		return x
	}
	for _, l := range c.lines {
		for _, p := range l.pts {
			if math.IsNaN(p[0]) || math.IsNaN(p[1]) || math.IsInf(tx(p[0]), 0) {
				continue
			}
			xmin, xmax = math.Min(xmin, tx(p[0])), math.Max(xmax, tx(p[0]))
			ymin, ymax = math.Min(ymin, p[1]), math.Max(ymax, p[1])
		}
	}
	if math.IsInf(xmin, 0) {
		return ""
	}
	if c.ymin0 {
		ymin = math.Min(ymin, 0)
	}
	if c.ymax > 0 {
		ymax = c.ymax
	}
	if c.nines {
		xmin, xmax = 0, math.Max(math.Ceil(xmax), 1)
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	if ymax == ymin {
		ymax = ymin + 1
	}
	ymax += (ymax - ymin) * 0.05
	px := func(x float64) float64 { return left + (x-xmin)/(xmax-xmin)*(W-left-right) }
	py := func(y float64) float64 { return H - bottom - (y-ymin)/(ymax-ymin)*(H-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-size="11">`, W, H, W, H)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="13" font-weight="bold">%s</text>`, left, html.EscapeString(c.title))
	// Axes and ticks.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, left, H-bottom, W-right, H-bottom)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, left, top, left, H-bottom)
	for _, t := range xTicks(c, xmin, xmax) {
		x := px(t.v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, x, top, x, H-bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, H-bottom+14, t.label)
	}
	for _, t := range niceTicks(ymin, ymax, 6) {
		y := py(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, left, y, W-right, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, left-4, y+4, formatValue(t))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, (left+W-right)/2, H-8, html.EscapeString(c.xlabel))
	fmt.Fprintf(&b, `<text transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">%s</text>`, (top+H-bottom)/2, html.EscapeString(c.ylabel))
	// Lines.
	for _, l := range c.lines {
		var d strings.Builder
		for _, p := range l.pts {
			if math.IsNaN(p[0]) || math.IsNaN(p[1]) || math.IsInf(tx(p[0]), 0) {
				continue
			}
			cmd := "L"
			if d.Len() == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, px(tx(p[0])), py(p[1]))
		}
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="5 3"`
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5"%s><title>%s</title></path>`, d.String(), l.color, dash, html.EscapeString(l.name))
	}
	b.WriteString("</svg>")
	return b.String()
}

type tick struct {
	v     float64
	label string
}

func xTicks(c chart, xmin, xmax float64) []tick {
	var ts []tick
	switch {
	case c.nines:
		for n := 0.0; n <= xmax; n++ {
			p := 100 * (1 - math.Pow(10, -n))
			ts = append(ts, tick{n, strconv.FormatFloat(p, 'f', -1, 64) + "%"})
		}
	case c.xlog:
		for e := math.Floor(xmin); e <= math.Ceil(xmax); e++ {
			if e >= xmin-1e-9 && e <= xmax+1e-9 {
				ts = append(ts, tick{e, formatValue(math.Pow(10, e))})
			}
		}
		if len(ts) < 2 {
			for _, t := range niceTicks(math.Pow(10, xmin), math.Pow(10, xmax), 4) {
				if t > 0 {
					ts = append(ts, tick{math.Log10(t), formatValue(t)})
				}
			}
		}
	default:
		for _, t := range niceTicks(xmin, xmax, 8) {
			ts = append(ts, tick{t, formatValue(t)})
		}
	}
	return ts
}

// niceTicks returns about n round values between lo and hi.
func niceTicks(lo, hi float64, n int) []float64 {
	span := hi - lo
	if span <= 0 || math.IsNaN(span) || math.IsInf(span, 0) {
		return nil
	}
	step := math.Pow(10, math.Floor(math.Log10(span/float64(n))))
	for _, m := range []float64{1, 2, 5, 10} {
		if span/(step*m) <= float64(n) {
			step *= m
			break
		}
	}
	var out []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		out = append(out, math.Round(v/step)*step)
	}
	return out
}
