package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// netConn keeps worker.open's dialer type short.
type netConn = net.Conn

// fanout: Devices[0] writes, Devices[1:] receive; all are caseworkers of
// one area. Every replica first pulls its scope, then all stay connected
// (client.Run) and the receivers Subscribe. Each round the writer changes
// one case; a receiver's latency runs from the writer's SetCase call (a
// caseworker saving) to the Subscribe event that brings the change into
// its replica, which is when a colleague's screen can show it. WireMS is
// the same up to the change's first bytes on the receiver's socket, which
// splits server fan-out from client apply.
//
// All receivers share this process and the server's two cores, so their
// client-side work (decode, decrypt, join, fsync) queues behind each
// other's as it never would on 50 laptops: the figure is an upper bound.
func (w *worker) fanout(ctx context.Context) error {
	n := len(w.spec.Devices)
	if n < 2 || w.spec.CaseID == "" {
		return fmt.Errorf("fanout needs a writer, receivers and a case")
	}
	conns := make([]atomic.Pointer[countConn], n)
	cs, err := w.open(ctx, w.spec.Devices, func(i int) func(context.Context, string, string) (netConn, error) {
		return w.wire.dialWatched(&conns[i])
	})
	if err != nil {
		return err
	}
	for _, c := range cs {
		if _, err := c.Sync(ctx, nil); err != nil {
			return fmt.Errorf("initial pull: %w", err)
		}
	}
	key := syncproto.Key{Collection: syncproto.Cases, ID: w.spec.CaseID}
	type hit struct {
		dev   int
		round int64
		at    time.Time
	}
	hits := make(chan hit, 4*n)
	var round atomic.Int64
	rctx, cancel := context.WithCancel(ctx)
	var runs, subs sync.WaitGroup
	var unsubs []func()
	for i, c := range cs {
		runs.Go(func() {
			if err := c.Run(rctx); err != nil {
				w.log.Error("run", "device", i, "err", err)
			}
		})
		if i == 0 {
			continue
		}
		events, unsub := c.Subscribe()
		unsubs = append(unsubs, unsub)
		subs.Go(func() {
			last := int64(0)
			for ev := range events {
				if r := round.Load(); r > last && hasKey(ev, key) {
					last = r
					select {
					case hits <- hit{dev: i, round: r, at: time.Now()}:
					case <-rctx.Done():
					}
				}
			}
		})
	}
	defer func() {
		cancel()
		runs.Wait()
		for _, u := range unsubs {
			u()
		}
		subs.Wait()
	}()

	var stop func()
	rounds := max(1, w.spec.Rounds)
	for r := int64(1); r <= int64(rounds)+1; r++ {
		warmup := r == 1 // every receiver connected and caught up: a barrier
		if !warmup && stop == nil {
			stop = w.measure()
		}
		round.Store(r)
		for i := 1; i < n; i++ {
			if c := conns[i].Load(); c != nil {
				c.arm()
			}
		}
		t0 := time.Now()
		day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(r))
		if err := cs[0].SetCase(ctx, w.spec.CaseID, map[string]any{syncproto.FieldNextAction: day.Format(time.DateOnly)}); err != nil {
			return fmt.Errorf("writer: %w", err)
		}
		timeout := 5 * time.Second
		if warmup {
			timeout = 60 * time.Second
		}
		deadline := time.After(timeout)
		for got := 0; got < n-1; {
			select {
			case h := <-hits:
				if h.round != r {
					continue
				}
				got++
				if warmup {
					continue
				}
				w.res.WallMS = append(w.res.WallMS, ms(h.at.Sub(t0)))
				if c := conns[h.dev].Load(); c != nil && c.firstRead() > 0 {
					w.res.WireMS = append(w.res.WireMS, ms(time.Duration(c.firstRead()-t0.UnixNano())))
				}
			case <-deadline:
				if warmup {
					return fmt.Errorf("warm-up: only %d of %d receivers got the change", got, n-1)
				}
				w.res.Missed += n - 1 - got
				got = n - 1
			}
		}
		time.Sleep(20 * time.Millisecond) // let the writer's ack and echo settle
	}
	stop()
	return nil
}
