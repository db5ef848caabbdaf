package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hindsight-cdp/hindsight/cdp/retention"
	"github.com/hindsight-cdp/hindsight/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the service's Prometheus registry: counters are read from
// the devices at scrape time (one source of truth with `protections`),
// flush latencies are observed as they happen.
type metrics struct {
	s       *Service
	reg     *prometheus.Registry
	flushes *prometheus.HistogramVec

	// Retention, counted as prunes and collections happen (asked or
	// scheduled; dry runs change nothing and count nothing).
	pointsRemoved *prometheus.CounterVec
	pruneFreed    *prometheus.CounterVec
	gcReclaimed   prometheus.Counter
	gcFreed       prometheus.Counter
	lastRun       prometheus.Gauge
	lastRunOK     prometheus.Gauge
	lastRunSecs   prometheus.Gauge
}

var (
	descWrites   = prometheus.NewDesc("hindsight_disk_writes_total", "Writes journaled through the disk's front end since the service started.", []string{"disk", "protection", "front_end"}, nil)
	descBytes    = prometheus.NewDesc("hindsight_disk_written_bytes_total", "Bytes written through the disk's front end since the service started.", []string{"disk", "protection", "front_end"}, nil)
	descBlocks   = prometheus.NewDesc("hindsight_disk_journaled_blocks_total", "Block versions journaled for the disk since the service started.", []string{"disk", "protection", "front_end"}, nil)
	descFlushes  = prometheus.NewDesc("hindsight_disk_flushes_total", "Flushes (fsync, NBD FLUSH/FUA) of the disk since the service started.", []string{"disk", "protection", "front_end"}, nil)
	descLag      = prometheus.NewDesc("hindsight_disk_lag_seconds", "How far the disk's newest write is ahead of its newest durable write.", []string{"disk", "protection", "front_end"}, nil)
	descDurable  = prometheus.NewDesc("hindsight_disk_last_durable_write_timestamp_seconds", "Time of the disk's newest durable write.", []string{"disk", "protection", "front_end"}, nil)
	descLogical  = prometheus.NewDesc("hindsight_disk_logical_bytes", "Bytes of every non-zero block version ever journaled for the disk, before dedupe and compression.", []string{"disk"}, nil)
	descContent  = prometheus.NewDesc("hindsight_content_stored_bytes", "Bytes of block content stored in the repository's segments.", nil, nil)
	descProts    = prometheus.NewDesc("hindsight_service_protections", "Protections by state.", []string{"state"}, nil)
	descStart    = prometheus.NewDesc("hindsight_service_start_time_seconds", "When the service started.", nil, nil)
	descHead     = prometheus.NewDesc("hindsight_journal_head", "The journal's newest position.", nil, nil)
	descScrapeOK = prometheus.NewDesc("hindsight_service_up", "1 when the service could read its repository's figures at this scrape.", nil, nil)
	descFree     = prometheus.NewDesc("hindsight_repository_free_bytes", "Bytes available on the repository's filesystem (as df shows).", nil, nil)
	descSize     = prometheus.NewDesc("hindsight_repository_filesystem_bytes", "Size of the repository's filesystem.", nil, nil)
	descMinFree  = prometheus.NewDesc("hindsight_repository_min_free_bytes", "Free space kept in reserve: below it new writes are refused with ENOSPC (serve --min-free).", nil, nil)
	descRepAcked = prometheus.NewDesc("hindsight_replication_acknowledged_timestamp_seconds", "Time of the newest point the replication's target has durable.", []string{"name", "target"}, nil)
	descRepLag   = prometheus.NewDesc("hindsight_replication_lag_seconds", "How far the replication's acknowledged position is behind what is durable here (the RPO now).", []string{"name", "target"}, nil)
	descRepLagB  = prometheus.NewDesc("hindsight_replication_lag_bytes", "Logical bytes of the steps sent and not yet acknowledged.", []string{"name", "target"}, nil)
	descRepWire  = prometheus.NewDesc("hindsight_replication_wire_bytes_total", "Bytes sent and received on the replication's connections.", []string{"name", "target"}, nil)
	descRepSent  = prometheus.NewDesc("hindsight_replication_content_bytes_total", "Block content bytes sent (compressed) because the target lacked them.", []string{"name", "target"}, nil)
	descRepUp    = prometheus.NewDesc("hindsight_replication_connected", "1 while the replication streams or is caught up, 0 while it connects or retries.", []string{"name", "target"}, nil)
	descRepRecv  = prometheus.NewDesc("hindsight_replica_position_timestamp_seconds", "Time of the newest point a replica here received.", []string{"name", "source"}, nil)
	descRefused  = prometheus.NewDesc("hindsight_repository_refused_writes_total", "Writes refused with ENOSPC because the repository's filesystem was down to its reserve.", nil, nil)
)

func newMetrics(s *Service) *metrics {
	m := &metrics{s: s, reg: prometheus.NewRegistry(),
		flushes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hindsight_disk_flush_duration_seconds",
			Help:    "Time to make a disk's writes durable on fsync or NBD FLUSH.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100 µs to 3.3 s
		}, []string{"disk"}),
	}
	m.pointsRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hindsight_retention_points_removed_total", Help: "Points removed by retention since the service started, by disk or group.",
	}, []string{"target"})
	m.pruneFreed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hindsight_retention_pruned_bytes_total", Help: "Stored content that pruning left unreferenced (for gc to free) since the service started, by disk or group.",
	}, []string{"target"})
	m.gcReclaimed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hindsight_gc_reclaimed_bytes_total", Help: "Bytes garbage collection gave back to the filesystem since the service started.",
	})
	m.gcFreed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hindsight_gc_freed_bytes_total", Help: "Stored content garbage collection freed since the service started.",
	})
	m.lastRun = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hindsight_retention_last_run_timestamp_seconds", Help: "When the last scheduled retention run (prune every policy, then gc) started.",
	})
	m.lastRunOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hindsight_retention_last_run_success", Help: "1 when the last scheduled retention run succeeded, 0 when any part of it failed (see the log).",
	})
	m.lastRunSecs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hindsight_retention_last_run_duration_seconds", Help: "How long the last scheduled retention run took.",
	})
	m.reg.MustRegister(m, m.flushes, m.pointsRemoved, m.pruneFreed, m.gcReclaimed, m.gcFreed, m.lastRun, m.lastRunOK, m.lastRunSecs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// pruned counts what prunes removed (dry runs removed nothing).
func (m *metrics) pruned(reps []retention.Report) {
	for _, rep := range reps {
		if rep.DryRun || rep.Error != "" {
			continue
		}
		m.pointsRemoved.WithLabelValues(rep.Name).Add(float64(len(rep.Removed)))
		m.pruneFreed.WithLabelValues(rep.Name).Add(float64(rep.FreedBytes))
	}
}

// collected counts what a collection freed.
func (m *metrics) collected(res store.GCResult) {
	m.gcFreed.Add(float64(res.FreedBytes))
	m.gcReclaimed.Add(float64(res.Reclaimed))
}

// retentionDone records a scheduled run's time and outcome.
func (m *metrics) retentionDone(start time.Time, took time.Duration, ok bool) {
	m.lastRun.Set(float64(start.UnixNano()) / 1e9)
	m.lastRunSecs.Set(took.Seconds())
	if ok {
		m.lastRunOK.Set(1)
	} else {
		m.lastRunOK.Set(0)
	}
}

// flushObserver records disk's flush latencies.
func (m *metrics) flushObserver(disk string) func(time.Duration) {
	o := m.flushes.WithLabelValues(disk)
	return func(d time.Duration) { o.Observe(d.Seconds()) }
}

// Describe sends the fixed descriptions.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWrites, descBytes, descBlocks, descFlushes, descLag, descDurable, descLogical, descContent, descProts, descStart, descHead, descScrapeOK, descFree, descSize, descMinFree, descRefused, descRepAcked, descRepLag, descRepLagB, descRepWire, descRepSent, descRepUp, descRepRecv} {
		ch <- d
	}
}

// Collect reads the figures now.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	up := 1.0
	states := map[string]float64{StateRunning: 0, StateFailed: 0}
	for _, p := range m.s.Protections() {
		states[p.State]++
		for _, d := range p.Disks {
			l := []string{d.Disk, p.Name, p.FrontEnd}
			ch <- prometheus.MustNewConstMetric(descWrites, prometheus.CounterValue, float64(d.Writes), l...)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(d.BytesWritten), l...)
			ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.CounterValue, float64(d.BlocksJournal), l...)
			ch <- prometheus.MustNewConstMetric(descFlushes, prometheus.CounterValue, float64(d.Flushes), l...)
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, d.Lag.Seconds(), l...)
			if !d.LastDurable.IsZero() {
				ch <- prometheus.MustNewConstMetric(descDurable, prometheus.GaugeValue, float64(d.LastDurable.UnixNano())/1e9, l...)
			}
			if disk, err := m.s.r.Disk(d.Disk); err == nil {
				if n, err := m.s.r.LogicalBytes(disk); err == nil {
					ch <- prometheus.MustNewConstMetric(descLogical, prometheus.GaugeValue, float64(n), d.Disk)
				} else {
					up = 0
				}
			}
		}
	}
	for st, n := range states {
		ch <- prometheus.MustNewConstMetric(descProts, prometheus.GaugeValue, n, st)
	}
	if n, err := m.s.r.ContentBytes(); err == nil {
		ch <- prometheus.MustNewConstMetric(descContent, prometheus.GaugeValue, float64(n))
	} else {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descStart, prometheus.GaugeValue, float64(m.s.started.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(descHead, prometheus.GaugeValue, float64(m.s.r.Head()))
	if free, total, _ := m.s.r.Space(); total > 0 {
		ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(free))
		ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(total))
	} else {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descMinFree, prometheus.GaugeValue, float64(m.s.r.MinFree()))
	refused, _ := m.s.r.Refused()
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(refused))
	m.collectReplication(ch)
	ch <- prometheus.MustNewConstMetric(descScrapeOK, prometheus.GaugeValue, up)
}

// collectReplication reads the streams to and from other sites.
func (m *metrics) collectReplication(ch chan<- prometheus.Metric) {
	for _, st := range m.s.Replications() {
		l := []string{st.Spec.Name, st.Spec.To}
		if !st.AckedTime.IsZero() {
			ch <- prometheus.MustNewConstMetric(descRepAcked, prometheus.GaugeValue, float64(st.AckedTime.UnixNano())/1e9, l...)
		}
		ch <- prometheus.MustNewConstMetric(descRepLag, prometheus.GaugeValue, st.LagSeconds, l...)
		ch <- prometheus.MustNewConstMetric(descRepLagB, prometheus.GaugeValue, float64(st.LagBytes), l...)
		ch <- prometheus.MustNewConstMetric(descRepWire, prometheus.CounterValue, float64(st.WireBytes), l...)
		ch <- prometheus.MustNewConstMetric(descRepSent, prometheus.CounterValue, float64(st.ContentBytes), l...)
		conn := 0.0
		if st.State == "streaming" || st.State == "caught-up" {
			conn = 1
		}
		ch <- prometheus.MustNewConstMetric(descRepUp, prometheus.GaugeValue, conn, l...)
	}
	for _, rs := range m.s.Replicas() {
		if !rs.Position.IsZero() {
			ch <- prometheus.MustNewConstMetric(descRepRecv, prometheus.GaugeValue, float64(rs.Position.UnixNano())/1e9, rs.Name, rs.Source)
		}
	}
}

// ServeMetrics serves /metrics in Prometheus text format on addr until ctx
// ends. The figures name disks, not their content; keep addr on loopback
// or behind a firewall all the same.
func (s *Service) ServeMetrics(ctx context.Context, addr string) (net.Addr, func() error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	go func() { <-ctx.Done(); srv.Close() }()
	wait := func() error {
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return l.Addr(), wait, nil
}
