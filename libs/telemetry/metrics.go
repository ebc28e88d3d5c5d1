package telemetry

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one service's Prometheus registry with the metrics every service has.
type Metrics struct {
	Registry *prometheus.Registry
	// Requests counts handled requests by method and outcome.
	Requests *prometheus.CounterVec
	// RequestDuration observes request handling time by method.
	RequestDuration *prometheus.HistogramVec
	// QueueDepth is the seed's message_queue_depth: records or items waiting in a
	// queue, by queue name and priority.
	QueueDepth *prometheus.GaugeVec
}

// NewMetrics returns a registry for service with Go runtime and process metrics,
// request metrics, and the seed's message_queue_depth.
func NewMetrics(service string) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	constLabels := prometheus.Labels{"service": service}
	m := &Metrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedsync_requests_total", Help: "Requests handled, by method and outcome (ok or an error code).",
			ConstLabels: constLabels,
		}, []string{"method", "outcome"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fedsync_request_duration_seconds", Help: "Time to handle a request, by method.",
			ConstLabels: constLabels, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "message_queue_depth", Help: "Messages waiting in a queue (seed 5.1).",
			ConstLabels: constLabels,
		}, []string{"queue_name", "priority"}),
	}
	reg.MustRegister(m.Requests, m.RequestDuration, m.QueueDepth)
	return m
}

// NewSyncLatency registers the seed's sync_latency histogram: milliseconds from a
// delta's admission to the moment a service handled its effect.
func (m *Metrics) NewSyncLatency() *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sync_latency", Help: "Milliseconds from admission of a delta to its effect (seed 5.1).",
		Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000},
	}, []string{"source_system", "target_system", "data_type"})
	m.Registry.MustRegister(h)
	return h
}

// NewActiveConnections registers the seed's active_connections gauge.
func (m *Metrics) NewActiveConnections() *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "active_connections", Help: "Open client connections (seed 5.1).",
	}, []string{"regional_hub", "connection_type"})
	m.Registry.MustRegister(g)
	return g
}

// Observe records one handled request.
func (m *Metrics) Observe(method string, begin time.Time, outcome string) {
	m.Requests.WithLabelValues(method, outcome).Inc()
	m.RequestDuration.WithLabelValues(method).Observe(time.Since(begin).Seconds())
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
