package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// idleResult is what the idle scenario measured.
type idleResult struct {
	Devices          int            `json:"devices"`
	ConnectFailures  int            `json:"connect_failures"`
	FirstFailure     string         `json:"first_failure,omitempty"`
	ConnectSeconds   float64        `json:"connect_seconds"`
	Handshake        summary        `json:"handshake"`
	Hold             time.Duration  `json:"hold_ns"`
	RSSBefore        int64          `json:"rss_before_bytes"`
	RSSConnected     int64          `json:"rss_connected_bytes"`
	RSSAfter         int64          `json:"rss_after_hold_bytes"`
	RSSPerDeviceKiB  float64        `json:"rss_per_device_kib"`
	HeapBefore       float64        `json:"heap_inuse_before_bytes"`
	HeapAfter        float64        `json:"heap_inuse_after_bytes"`
	StackAfter       float64        `json:"stack_inuse_after_bytes"`
	GoroutinesBefore float64        `json:"goroutines_before"`
	GoroutinesAfter  float64        `json:"goroutines_after"`
	ServerConnected  float64        `json:"server_connected_devices"`
	Pings            int64          `json:"pings_answered"`
	Dropped          int            `json:"dropped"`
	DropReasons      map[string]int `json:"drop_reasons,omitempty"`
	LoadRSS          int64          `json:"load_generator_rss_bytes"`
	HoldCPU          cpuUse         `json:"hold_cpu"`
}

// usersPer is how many devices share a user (and so an area) in the idle
// scenario: a few hundred caseworkers' teams, not one giant area.
const usersPer = 100

// runIdle opens many live sessions that do nothing but answer pings, holds
// them past the server's read timeout, and measures the server's memory.
func runIdle(ctx context.Context, e *env) (*idleResult, error) {
	n := e.cfg.devices
	if n == 0 {
		n = 10000
	}
	res := &idleResult{Devices: n, Hold: e.cfg.hold, DropReasons: map[string]int{}}
	users := (n + usersPer - 1) / usersPer
	for u := range users {
		if err := e.admin.addUser(ctx, fmt.Sprintf("idle-%s-%d", e.run, u), fmt.Sprintf("Idle-%s-%d", e.run, u)); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	devs, err := e.admin.enrollMany(ctx, n, func(i int) string { return fmt.Sprintf("idle-%s-%d", e.run, i/usersPer) })
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	e.log.Info("idle: enrolled", "devices", n, "seconds", time.Since(t0).Seconds())

	time.Sleep(2 * time.Second) // let the enrollment's garbage settle
	before, err := sampleServer(ctx, e.pid, e.cfg.server)
	if err != nil {
		return nil, err
	}
	res.RSSBefore, res.HeapBefore, res.GoroutinesBefore = before.RSS, before.HeapInuse, before.Goroutines

	conns, hs, failures, firstErr := connectMany(ctx, e, devs, true, nil, nil)
	res.ConnectSeconds = hs.elapsed.Seconds()
	res.Handshake = hs.lat.summary()
	res.ConnectFailures, res.FirstFailure = failures, firstErr
	defer closeAll(conns)
	e.log.Info("idle: connected", "devices", n-failures, "failures", failures, "seconds", res.ConnectSeconds, "handshake", res.Handshake.String())
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	time.Sleep(5 * time.Second)
	mid, err := sampleServer(ctx, e.pid, e.cfg.server)
	if err != nil {
		return nil, err
	}
	res.RSSConnected = mid.RSS
	e.log.Info("idle: holding", "hold", e.cfg.hold, "server_rss_mib", mib(mid.RSS), "server_goroutines", mid.Goroutines)

	cpu := startCPU(e.pid)
	end := time.Now().Add(e.cfg.hold)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(15*time.Second, time.Until(end))):
		}
		s, _ := sampleServer(ctx, e.pid, e.cfg.server)
		dropped := 0
		for _, c := range conns {
			if c != nil && c.dropped() {
				dropped++
			}
		}
		e.log.Info("idle: progress", "left", time.Until(end).Round(time.Second), "server_rss_mib", mib(s.RSS), "server_connected", s.Connected, "dropped", dropped)
	}
	res.HoldCPU = cpu.stop()
	after, err := sampleServer(ctx, e.pid, e.cfg.server)
	if err != nil {
		return nil, err
	}
	res.RSSAfter, res.HeapAfter, res.StackAfter, res.GoroutinesAfter, res.ServerConnected = after.RSS, after.HeapInuse, after.StackInuse, after.Goroutines, after.Connected
	connected := 0
	for _, c := range conns {
		if c == nil {
			continue
		}
		connected++
		res.Pings += c.pings.Load()
		if c.dropped() {
			res.Dropped++
			res.DropReasons[c.dropReason()]++
		}
	}
	if connected > 0 {
		res.RSSPerDeviceKiB = float64(res.RSSAfter-res.RSSBefore) / 1024 / float64(connected)
	}
	res.LoadRSS, _ = rssBytes(selfPID)
	e.log.Info("idle: done", "rss_per_device_kib", res.RSSPerDeviceKiB, "dropped", res.Dropped, "pings", res.Pings)
	return res, nil
}

// connectStats times a connection ramp.
type connectStats struct {
	elapsed time.Duration
	lat     latencies
}

// connectMany connects devices with --connect-parallel in flight, starting
// each one's reader with the handler h(i) returns (nil: no handler). A
// device that fails to connect leaves a nil entry.
func connectMany(ctx context.Context, e *env, devs []device, live bool, pool *decodePool, h func(i int) handler) ([]*conn, *connectStats, int, string) {
	conns := make([]*conn, len(devs))
	st := &connectStats{}
	var (
		wg       sync.WaitGroup
		failures atomic.Int64
		firstMu  sync.Mutex
		first    string
		done     atomic.Int64
	)
	sem := make(chan struct{}, max(1, e.cfg.parallel))
	start := time.Now()
	for i, d := range devs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			t := time.Now()
			c, err := connect(ctx, e.syncURL, d, e.codecs.get(i), live)
			if err != nil {
				failures.Add(1)
				firstMu.Lock()
				if first == "" {
					first = err.Error()
				}
				firstMu.Unlock()
				return
			}
			st.lat.add(time.Since(t))
			var hf handler
			if h != nil {
				hf = h(i)
			}
			c.pool = pool
			c.start(hf)
			conns[i] = c
			if k := done.Add(1); k%2000 == 0 {
				e.log.Info("connecting", "connected", k, "of", len(devs))
			}
		}()
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	return conns, st, int(failures.Load()), first
}
