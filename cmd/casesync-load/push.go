package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// pushResult is what the push scenario measured.
type pushResult struct {
	Devices                  int                `json:"devices"`
	ConnectFailures          int                `json:"connect_failures"`
	Batch                    int                `json:"batch"`
	Live                     bool               `json:"live"`
	Duration                 time.Duration      `json:"duration_ns"`
	Seconds                  float64            `json:"seconds"`
	Pushes                   int64              `json:"pushes"`
	Accepted                 int64              `json:"accepted"`
	AcceptedPerSec           float64            `json:"accepted_per_sec"`
	Ack                      summary            `json:"ack_latency"`
	Rejected                 map[string]int     `json:"rejected_by_code,omitempty"`
	Dropped                  int                `json:"dropped"`
	DropReasons              map[string]int     `json:"drop_reasons,omitempty"`
	ServerRate               int                `json:"server_rate_per_device"`
	ServerMaxBatch           int                `json:"server_max_batch"`
	ServerCounters           map[string]float64 `json:"server_changes_total_delta"`
	CPU                      cpuUse             `json:"cpu"`
	ServerCPUPerChangeMicros float64            `json:"server_cpu_per_change_us"`
	ServerRSSAfter           int64              `json:"server_rss_after_bytes"`
}

// runPush has many devices push batches of new notes, each sending its
// next push as soon as the previous one is acknowledged, and measures the
// accepted changes per second and the acknowledgement latency. Each device
// belongs to its own caseworker with her own area, as in the field: no
// device receives another's changes.
func runPush(ctx context.Context, e *env) (*pushResult, error) {
	n := e.cfg.devices
	if n == 0 {
		n = 200
	}
	res := &pushResult{Devices: n, Batch: e.cfg.batch, Live: e.cfg.pushLive, Duration: e.cfg.duration,
		Rejected: map[string]int{}, DropReasons: map[string]int{}}
	userOf := func(i int) string { return fmt.Sprintf("push-%s-%d", e.run, i) }
	areaOf := func(i int) string { return fmt.Sprintf("Push-%s-%d", e.run, i) }
	for i := range n {
		if err := e.admin.addUser(ctx, userOf(i), areaOf(i)); err != nil {
			return nil, err
		}
	}
	devs, err := e.admin.enrollMany(ctx, n, userOf)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	acks := make([]chan *syncproto.Ack, n)
	for i := range acks {
		acks[i] = make(chan *syncproto.Ack, 4)
	}
	conns, _, failures, firstErr := connectMany(ctx, e, devs, e.cfg.pushLive, nil, func(i int) handler {
		return func(m syncproto.Message, _ time.Time) {
			if a, ok := m.(*syncproto.Ack); ok {
				acks[i] <- a
			}
		}
	})
	defer closeAll(conns)
	res.ConnectFailures = failures
	if failures > 0 {
		e.log.Warn("push: some devices did not connect", "failures", failures, "first", firstErr)
	}
	for _, c := range conns {
		if c != nil {
			res.ServerRate, res.ServerMaxBatch = c.welcome.Limits.Rate, c.welcome.Limits.MaxBatch
			break
		}
	}
	if res.ServerMaxBatch > 0 && e.cfg.batch > res.ServerMaxBatch {
		return nil, fmt.Errorf("--batch %d exceeds the server's max_batch %d", e.cfg.batch, res.ServerMaxBatch)
	}
	// Each device's case, before the clock starts.
	for i, c := range conns {
		if c == nil {
			continue
		}
		if err := pushWait(c, acks[i], &syncproto.Push{Changes: []syncproto.Change{newCase(1, c.clock.Now(), caseOf(e, i), areaOf(i), userOf(i))}}); err != nil {
			return nil, fmt.Errorf("device %d: create case: %w", i, err)
		}
	}
	e.log.Info("push: devices ready", "devices", n-failures, "batch", e.cfg.batch, "duration", e.cfg.duration)

	counters0, _ := scrapeCounters(ctx, e.cfg.server, "casesync_changes_total", "result")
	cpu := startCPU(e.pid)
	var (
		wg       sync.WaitGroup
		lat      latencies
		accepted atomic.Int64
		pushes   atomic.Int64
		lastAck  atomic.Int64 // since start
		rejMu    sync.Mutex
	)
	start := time.Now()
	deadline := start.Add(e.cfg.duration)
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &pusher{c: c, acks: acks[i], user: userOf(i), caseID: caseOf(e, i), seq: 2,
				noteBytes: e.cfg.noteBytes, rnd: rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))}
			var local []time.Duration
			rej := map[string]int{}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				s := time.Now()
				a, err := p.push(e.cfg.batch)
				if err != nil {
					if !errors.Is(err, errEnded) {
						e.log.Warn("push failed", "device", c.dev.ID, "err", err)
					}
					break
				}
				local = append(local, time.Since(s))
				pushes.Add(1)
				accepted.Add(int64(len(a.Accepted)))
				lastAck.Store(int64(time.Since(start)))
				for _, r := range a.Rejected {
					rej[string(r.Code)+"/"+r.Reason]++
				}
				if wait := p.requeue(a); wait > 0 {
					time.Sleep(min(wait, time.Until(deadline)))
				}
			}
			lat.add(local...)
			rejMu.Lock()
			for k, v := range rej {
				res.Rejected[k] += v
			}
			rejMu.Unlock()
		}()
	}
	wg.Wait()
	res.CPU = cpu.stop()
	res.Seconds = time.Duration(lastAck.Load()).Seconds()
	res.Pushes, res.Accepted = pushes.Load(), accepted.Load()
	if res.Seconds > 0 {
		res.AcceptedPerSec = float64(res.Accepted) / res.Seconds
	}
	if res.Accepted > 0 {
		res.ServerCPUPerChangeMicros = res.CPU.ServerSecs * 1e6 / float64(res.Accepted)
	}
	res.Ack = lat.summary()
	counters1, _ := scrapeCounters(ctx, e.cfg.server, "casesync_changes_total", "result")
	res.ServerCounters = map[string]float64{}
	for k, v := range counters1 {
		if d := v - counters0[k]; d != 0 {
			res.ServerCounters[k] = d
		}
	}
	for _, c := range conns {
		if c != nil && c.dropped() {
			res.Dropped++
			res.DropReasons[c.dropReason()]++
		}
	}
	res.ServerRSSAfter, _ = rssBytes(e.pid)
	e.log.Info("push: done", "accepted_per_sec", res.AcceptedPerSec, "ack", res.Ack.String(), "rejected", res.Rejected, "dropped", res.Dropped)
	return res, nil
}

func caseOf(e *env, i int) string { return fmt.Sprintf("pc%s-%d", e.run, i) }

// errEnded is returned when the session ended under a pusher.
var errEnded = errors.New("session ended")

// pusher is one device's push loop state. Changes the server refused with
// rate are kept and sent again first, as a real client's outbox would.
type pusher struct {
	c         *conn
	acks      <-chan *syncproto.Ack
	user      string
	caseID    string
	seq       uint64
	noteBytes int
	rnd       *rand.Rand
	retry     []syncproto.Change
	sent      []syncproto.Change
}

// push sends one batch (the rate-refused changes first, then new notes)
// and waits for its ack.
func (p *pusher) push(batch int) (*syncproto.Ack, error) {
	changes := p.retry
	p.retry = nil
	for len(changes) < batch {
		id := fmt.Sprintf("%s-%s-%d", p.caseID, p.c.dev.ID, p.seq)
		changes = append(changes, newNote(p.seq, p.c.clock.Now(), id, p.caseID, p.user, noteText(p.rnd, p.noteBytes)))
		p.seq++
	}
	p.sent = changes
	if err := p.c.send(&syncproto.Push{Changes: changes}); err != nil {
		return nil, fmt.Errorf("%w: %v", errEnded, err)
	}
	select {
	case a := <-p.acks:
		return a, nil
	case <-p.c.done:
		return nil, fmt.Errorf("%w: %s", errEnded, p.c.dropReason())
	case <-time.After(60 * time.Second):
		return nil, errors.New("no ack within 60 s")
	}
}

// requeue keeps the changes of the last push that were refused with rate
// for the next push, and returns how long the server asked to wait.
func (p *pusher) requeue(a *syncproto.Ack) time.Duration {
	var wait time.Duration
	byseq := map[uint64]bool{}
	for _, r := range a.Rejected {
		if r.Code == syncproto.CodeRate {
			byseq[r.Change] = true
			wait = max(wait, time.Duration(r.RetryAfterMS)*time.Millisecond)
		}
	}
	for _, ch := range p.sent {
		if byseq[ch.Seq] {
			p.retry = append(p.retry, ch)
		}
	}
	return wait
}
