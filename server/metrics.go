package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus metrics, in a registry of its own so
// that several servers can run in one process (tests do).
type metrics struct {
	reg       *prometheus.Registry
	connected prometheus.Gauge
	changes   *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	commit    prometheus.Histogram
	dropped   *prometheus.CounterVec
	frames    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "casesync_connected_devices", Help: "Devices with an open sync session.",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casesync_changes_total", Help: "Pushed changes by result: accepted (new), duplicate (a resend of an accepted change), or the rejection code.",
		}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casesync_bytes_total", Help: "WebSocket payload bytes by direction (in, out).",
		}, []string{"direction"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "casesync_batch_commit_seconds", Help: "Time to apply and durably commit one push.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casesync_sessions_closed_total", Help: "Sessions ended by the server, by reason.",
		}, []string{"reason"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casesync_shared_frames_total", Help: "Changes messages encoded once for every session with the same scope and position: built (by the first session) or shared (sent as built by another).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.connected, m.changes, m.bytes, m.commit, m.dropped, m.frames,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
