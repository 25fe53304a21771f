package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// fanoutResult is what the fanout scenario measured.
type fanoutResult struct {
	Receivers       int            `json:"receivers"`
	ConnectFailures int            `json:"connect_failures"`
	Changes         int            `json:"changes"`
	Interval        time.Duration  `json:"interval_ns"`
	Latency         summary        `json:"latency"`
	LastDevice      summary        `json:"last_device_per_change"`
	Ack             summary        `json:"pusher_ack"`
	Expected        int            `json:"expected_deliveries"`
	Delivered       int            `json:"delivered"`
	Missed          int            `json:"missed"`
	Duplicates      int            `json:"duplicates"`
	DecodeErrors    int            `json:"decode_errors"`
	InlineDecode    bool           `json:"inline_decode"`
	Dropped         int            `json:"dropped"`
	DropReasons     map[string]int `json:"drop_reasons,omitempty"`
	PushRejected    int            `json:"push_rejected"`
	Seconds         float64        `json:"seconds"`
	CPU             cpuUse         `json:"cpu"`
}

// receiver is one live device's view of the fan-out: when each note
// arrived, as latency after it was sent (negative: not yet).
type receiver struct {
	mu   sync.Mutex
	lat  []time.Duration
	dups int
}

// runFanout connects many live devices to one area and has one more
// device push notes there one at a time; every receiver times each note
// from the moment its push was written to the moment its changes frame was
// read.
func runFanout(ctx context.Context, e *env) (*fanoutResult, error) {
	n := e.cfg.devices
	if n == 0 {
		n = 1000
	}
	k := e.cfg.changes
	res := &fanoutResult{Receivers: n, Changes: k, Interval: e.cfg.interval, DropReasons: map[string]int{}, InlineDecode: e.cfg.inlineDecode}
	user, area := "fan-"+e.run, "Fanout-"+e.run
	if err := e.admin.addUser(ctx, user, area); err != nil {
		return nil, err
	}
	devs, err := e.admin.enrollMany(ctx, n+1, func(int) string { return user })
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}

	// The pusher creates the case first, so receivers get it in their
	// backlog and only the notes travel live.
	pusher, err := connect(ctx, e.syncURL, devs[n], e.codecs.get(n), false)
	if err != nil {
		return nil, fmt.Errorf("pusher: %w", err)
	}
	defer pusher.close()
	acks := make(chan *syncproto.Ack, 1)
	pusher.start(func(m syncproto.Message, _ time.Time) {
		if a, ok := m.(*syncproto.Ack); ok {
			acks <- a
		}
	})
	caseID := "fc" + e.run
	if err := pushWait(pusher, acks, &syncproto.Push{Changes: []syncproto.Change{newCase(1, pusher.clock.Now(), caseID, area, user)}}); err != nil {
		return nil, fmt.Errorf("create case: %w", err)
	}

	base := time.Now()
	sentAt := make([]atomic.Int64, k) // since base
	prefix := "fn" + e.run + "-"
	recv := make([]*receiver, n)
	var delivered atomic.Int64
	onChanges := func(i int) handler {
		r := &receiver{lat: make([]time.Duration, k)}
		for j := range r.lat {
			r.lat[j] = -1
		}
		recv[i] = r
		return func(m syncproto.Message, at time.Time) {
			ch, ok := m.(*syncproto.Changes)
			if !ok {
				return
			}
			now := at.Sub(base)
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, rec := range ch.Records {
				idx, ok := strings.CutPrefix(rec.ID, prefix)
				if !ok {
					continue
				}
				j, err := strconv.Atoi(idx)
				if err != nil || j < 0 || j >= k {
					continue
				}
				if r.lat[j] >= 0 {
					r.dups++
					continue
				}
				r.lat[j] = now - time.Duration(sentAt[j].Load())
				delivered.Add(1)
			}
		}
	}
	// Receivers only read and timestamp; two workers decode (decodePool).
	var pool *decodePool
	if !e.cfg.inlineDecode {
		pool = newDecodePool(2)
		defer pool.close() // after closeAll: the readers have stopped
	}
	conns, hs, failures, firstErr := connectMany(ctx, e, devs[:n], true, pool, onChanges)
	defer closeAll(conns)
	res.ConnectFailures = failures
	e.log.Info("fanout: connected", "receivers", n-failures, "failures", failures, "first_failure", firstErr, "seconds", hs.elapsed.Seconds())
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	live := n - failures
	time.Sleep(2 * time.Second)

	cpu := startCPU(e.pid)
	t0 := time.Now()
	rnd := rand.New(rand.NewPCG(uint64(t0.UnixNano()), 1))
	var ack latencies
	tick := time.NewTicker(e.cfg.interval)
	defer tick.Stop()
	for j := range k {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		note := newNote(uint64(j+2), pusher.clock.Now(), fmt.Sprintf("%s%d", prefix, j), caseID, user, noteText(rnd, e.cfg.noteBytes))
		s := time.Now()
		sentAt[j].Store(int64(s.Sub(base)))
		if err := pushWait(pusher, acks, &syncproto.Push{Changes: []syncproto.Change{note}}); err != nil {
			var rej *rejectedError
			if !errors.As(err, &rej) {
				return nil, fmt.Errorf("push note %d: %w", j, err)
			}
			res.PushRejected++
		}
		ack.add(time.Since(s))
	}
	res.Ack = ack.summary()
	// Wait for the stragglers, bounded.
	want := int64(live * (k - res.PushRejected))
	for end := time.Now().Add(15 * time.Second); delivered.Load() < want && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	res.Seconds = time.Since(t0).Seconds()
	res.CPU = cpu.stop()

	var all, last latencies
	lastPer := make([]time.Duration, k)
	res.Expected = live * (k - res.PushRejected)
	for i, c := range conns {
		if c == nil {
			continue
		}
		if c.dropped() {
			res.Dropped++
			res.DropReasons[c.dropReason()]++
		}
		r := recv[i]
		r.mu.Lock()
		for j, d := range r.lat {
			if d >= 0 {
				all.add(d)
				res.Delivered++
				lastPer[j] = max(lastPer[j], d)
			}
		}
		res.Duplicates += r.dups
		r.mu.Unlock()
	}
	for _, d := range lastPer {
		if d > 0 {
			last.add(d)
		}
	}
	res.Missed = max(0, res.Expected-res.Delivered)
	if pool != nil {
		res.DecodeErrors = int(pool.errs.Load())
	}
	res.Latency, res.LastDevice = all.summary(), last.summary()
	e.log.Info("fanout: done", "latency", res.Latency.String(), "missed", res.Missed, "dropped", res.Dropped)
	return res, nil
}

// rejectedError is a push the server answered with rejections.
type rejectedError struct{ rejected []syncproto.Error }

func (e *rejectedError) Error() string {
	codes := make([]string, 0, len(e.rejected))
	for _, r := range e.rejected {
		codes = append(codes, string(r.Code)+"/"+r.Reason)
	}
	slices.Sort(codes)
	return "rejected: " + strings.Join(slices.Compact(codes), ", ")
}

// pushWait sends one push and waits for its ack.
func pushWait(c *conn, acks <-chan *syncproto.Ack, p *syncproto.Push) error {
	if err := c.send(p); err != nil {
		return err
	}
	select {
	case a := <-acks:
		if len(a.Rejected) > 0 {
			return &rejectedError{a.Rejected}
		}
		return nil
	case <-c.done:
		return fmt.Errorf("session ended: %s", c.dropReason())
	case <-time.After(30 * time.Second):
		return errors.New("no ack within 30 s")
	}
}
