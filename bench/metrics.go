package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ServerMetrics reads a server's process figures; the connections scenario
// samples it before and after its ramp. Keys are Prometheus metric names
// (process_resident_memory_bytes, go_memstats_heap_inuse_bytes,
// process_cpu_seconds_total, go_goroutines...).
type ServerMetrics func(ctx context.Context) (map[string]float64, error)

// Scrape returns a ServerMetrics that fetches url (a Prometheus text
// exposition, e.g. tern serve's /metrics) and keeps the unlabelled samples.
func Scrape(url string) ServerMetrics {
	hc := &http.Client{Timeout: 10 * time.Second}
	return func(ctx context.Context) (map[string]float64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("scrape %s: %w", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
		}
		return ParseMetrics(resp.Body)
	}
}

// PprofGC returns a ConnectionsConfig.GC for a server that serves Go's
// profiler at base (tern serve --pprof: "http://HOST:PORT"): fetching a heap
// profile with gc=1 runs a garbage collection first.
func PprofGC(base string) func(ctx context.Context) error {
	hc := &http.Client{Timeout: 60 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/heap?gc=1", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s (is the profiler on?)", req.URL, resp.Status)
		}
		return nil
	}
}

// ParseMetrics reads the unlabelled samples of a Prometheus text exposition.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || strings.ContainsRune(fields[0], '{') {
			continue
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		out[fields[0]] = v
	}
	return out, sc.Err()
}
