package main

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternhq/tern/core"
)

// promMetrics implements core.Metrics over a Prometheus registry. Every
// metric is declared up front from the packages' MetricDesc lists, so that
// scrapes show them at zero and names are checked once.
type promMetrics struct {
	log        *slog.Logger
	counters   map[string]prometheus.Counter
	vecs       map[string]*prometheus.CounterVec
	histograms map[string]prometheus.Histogram
	gauges     map[string]prometheus.Gauge
	unknown    sync.Map // names reported but not declared, logged once
}

var _ core.Metrics = (*promMetrics)(nil)

func newPromMetrics(reg prometheus.Registerer, log *slog.Logger, descs ...[]core.MetricDesc) (*promMetrics, error) {
	m := &promMetrics{
		log:        log,
		counters:   make(map[string]prometheus.Counter),
		vecs:       make(map[string]*prometheus.CounterVec),
		histograms: make(map[string]prometheus.Histogram),
		gauges:     make(map[string]prometheus.Gauge),
	}
	for _, list := range descs {
		for _, d := range list {
			name := "tern_" + d.Name
			var c prometheus.Collector
			switch d.Kind {
			case core.Counter:
				if d.Label != "" {
					v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: d.Help}, []string{d.Label})
					m.vecs[d.Name], c = v, v
				} else {
					v := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: d.Help})
					m.counters[d.Name], c = v, v
				}
			case core.Histogram:
				b := d.Buckets
				if b == nil {
					b = prometheus.ExponentialBuckets(0.0001, 2, 18) // 100µs .. 13s
				}
				v := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: d.Help, Buckets: b})
				m.histograms[d.Name], c = v, v
			case core.Gauge:
				v := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: d.Help})
				m.gauges[d.Name], c = v, v
			}
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *promMetrics) Add(name, label string, delta float64) {
	if v, ok := m.vecs[name]; ok {
		v.WithLabelValues(label).Add(delta)
		return
	}
	if c, ok := m.counters[name]; ok {
		c.Add(delta)
		return
	}
	m.undeclared(name)
}

func (m *promMetrics) Observe(name string, v float64) {
	if h, ok := m.histograms[name]; ok {
		h.Observe(v)
		return
	}
	m.undeclared(name)
}

func (m *promMetrics) Set(name string, v float64) {
	if g, ok := m.gauges[name]; ok {
		g.Set(v)
		return
	}
	m.undeclared(name)
}

func (m *promMetrics) undeclared(name string) {
	if _, seen := m.unknown.LoadOrStore(name, true); !seen {
		m.log.Warn("metric reported but not declared", "metric", name)
	}
}
