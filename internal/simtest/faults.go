package simtest

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing/synctest"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server"
)

// The faults: syncs cut at a chosen point, partitions, crashes of the
// server and of clients, and faults of live sessions.

// actSync runs one sync round of a device, with a fault four times in ten.
func (s *Sim) actSync(r *rand.Rand) {
	d := pick(r, s.devs)
	if d.run != nil {
		s.logf("%s: no sync: it is live", d.name)
		return // Run holds the session; a Sync would wait for it
	}
	var g *gate
	if r.IntN(10) < 4 {
		g = s.randomGate(r, d)
	}
	s.sync(d, g, nil)
}

// randomGate picks where a connection stops: somewhere in the first
// 64 KiB the device reads (the upgrade, the welcome, a pull, an ack), right
// after one of the device's writes (its hello or a push: the server
// commits and acks, the ack never arrives), at one of its pushes (dropped
// before the server reads it), or somewhere in what the server reads.
func (s *Sim) randomGate(r *rand.Rand, d *device) *gate {
	logUniform := func(maxExp int) int64 { return 1 + r.Int64N(int64(1)<<(1+r.IntN(maxExp))) }
	// Device writes: 1 the upgrade, 2 the hello, 3… the pushes.
	pushes := min(d.pushBatches(), 4)
	switch r.IntN(4) {
	case 0:
		return &gate{Side: deviceSide, AfterBytes: logUniform(16)}
	case 1:
		return &gate{Side: deviceSide, AfterWrites: 2 + r.IntN(1+pushes)}
	case 2:
		return &gate{Side: serverSide, AfterWrites: 3 + r.IntN(max(1, pushes))}
	default:
		return &gate{Side: serverSide, AfterBytes: logUniform(14)}
	}
}

// sync runs d.Sync with gate g armed (nil: no fault). Once the system is
// idle with the link held, onHeld injects the fault (nil: cut the link)
// and says what it did. sync reports whether the round succeeded.
func (s *Sim) sync(d *device, g *gate, onHeld func() string) bool {
	what := "sync"
	if g != nil {
		s.net.Arm(d.name, *g)
		s.stats.Gated++
		what = "sync, " + g.String()
	}
	if s.net.Offline(d.name) {
		what += " (offline)"
	}
	type result struct {
		res client.SyncResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := d.c.Sync(context.Background(), nil)
		done <- result{res, err}
	}()
	synctest.Wait()
	var out result
	select {
	case out = <-done:
	default:
		if s.net.Held(d.name) {
			if onHeld == nil {
				onHeld = func() string {
					n := s.net.CutHeld()
					s.stats.HeldCuts += n
					s.stats.Cuts += n
					return "cut when held"
				}
			}
			what += ", " + onHeld()
			synctest.Wait()
		}
		select {
		case out = <-done:
		default:
			// Nothing is held and nothing runs: without a fault no sync
			// may wait for a timeout. Cut it so that the run can go on.
			s.violate("%s: %s is stuck with every goroutine idle", d.name, what)
			s.net.Cut(d.name)
			out = <-done
		}
	}
	s.net.Disarm(d.name)
	s.stats.Syncs++
	if out.err != nil {
		s.stats.SyncsFailed++
		s.logf("%s: %s: failed: %v", d.name, what, out.err)
		if !errors.Is(out.err, client.ErrUnreachable) {
			s.violate("%s: %s failed with %v; a network fault must surface as ErrUnreachable", d.name, what, out.err)
		}
		s.countLostAcks(d)
		return false
	}
	res := out.res
	s.logf("%s: %s: pushed %d rejected %d pulled %d evicted %d conflicts %d seq %d", d.name, what, res.Pushed, res.Rejected, res.Pulled, res.Evicted, res.Conflicts, res.Seq)
	s.checkHeld(d)
	return true
}

// countLostAcks counts, after a failed sync, the changes the server has
// committed while the device still has them pending: their ack was lost,
// and the device will resend them. It shows that the faults reach the
// window between commit and ack.
func (s *Sim) countLostAcks(d *device) {
	if lost := s.lostAcks(d); lost > 0 {
		s.stats.LostAcks += lost
		s.logf("%s: %d change(s) committed on the server, ack lost", d.name, lost)
	}
}

// lostAcks returns how many of d's pending changes the server has
// committed (0 while the server is down).
func (s *Sim) lostAcks(d *device) int {
	if s.store == nil {
		return 0
	}
	st, err := d.c.Status(context.Background())
	if err != nil {
		s.violate("%s: status: %v", d.name, err)
		return 0
	}
	accepted := 0
	err = s.store.View(context.Background(), func(tx server.Tx) error {
		for seq := uint64(1); seq <= d.seq; seq++ {
			_, ok, err := tx.Accepted(d.id, seq)
			if err != nil {
				return err
			}
			if ok {
				accepted++
			}
		}
		return nil
	})
	if err != nil {
		s.violate("read the server's store: %v", err)
		return 0
	}
	return accepted + st.Rejected - (int(d.seq) - st.Pending)
}

// actPartition takes a device off the network or brings it back.
func (s *Sim) actPartition(r *rand.Rand) {
	d := pick(r, s.devs)
	off := !s.net.Offline(d.name)
	s.net.SetOffline(d.name, off)
	if off {
		s.stats.Partitions++
		s.logf("%s: offline", d.name)
	} else {
		s.logf("%s: online", d.name)
	}
}

// actServerCrash kills the server, which restarts at once or a few steps
// later. Half the time it dies while a device's sync is held, often right
// after committing a push whose ack is then lost.
func (s *Sim) actServerCrash(r *rand.Rand) {
	if s.srv == nil {
		return
	}
	if d := pick(r, s.devs); r.IntN(2) == 0 && d.run == nil && !s.net.Offline(d.name) {
		s.logf("server crashes during a sync of %s", d.name)
		s.sync(d, &gate{Side: deviceSide, AfterWrites: 3 + r.IntN(max(1, min(d.pushBatches(), 3)))}, func() string {
			s.crashServer()
			return "server crashed"
		})
	}
	s.crashServer() // if the sync finished before its gate: crash now
	s.stats.ServerCrashes++
	if r.IntN(2) == 0 {
		s.startServer()
		s.logf("server crashes and restarts from its store")
		return
	}
	s.downFor = 1 + r.IntN(3)
	s.logf("server crashes; down for %d steps", s.downFor)
}

// actClientRestart closes a device's replica and opens it again, now and
// then with its clock set differently, and in a third of the cases in the
// middle of a sync that is held at a random point: the crash then lands
// between two of the client's own transactions.
func (s *Sim) actClientRestart(r *rand.Rand) {
	d := pick(r, s.devs)
	if r.IntN(3) == 0 && d.run == nil {
		s.stats.MidSyncCrashes++
		s.logf("%s: crashes during a sync", d.name)
		s.sync(d, s.randomGate(r, d), nil)
	}
	s.closeDevice(d)
	if r.IntN(2) == 0 {
		d.skew = randomSkew(r)
	}
	s.openDevice(d)
	s.stats.ClientRestarts++
	s.logf("%s: restarted, clock skew %v", d.name, d.skew)
}

// actLive starts or stops a device's live session (client.Run).
func (s *Sim) actLive(r *rand.Rand) {
	d := pick(r, s.devs)
	if d.run != nil {
		s.stopRun(d)
		s.logf("%s: live session stopped", d.name)
		return
	}
	s.startRun(d)
	s.stats.LiveWindows++
	s.logf("%s: live session started", d.name)
}

// actLiveFault cuts a live device's connection, or silences it (a black
// hole) and lets keepalive deadlines notice.
func (s *Sim) actLiveFault(r *rand.Rand) {
	var live []*device
	for _, d := range s.devs {
		if d.run != nil {
			live = append(live, d)
		}
	}
	if len(live) == 0 {
		return
	}
	d := pick(r, live)
	if r.IntN(2) == 0 {
		n := s.net.Cut(d.name)
		s.stats.LiveCuts++
		s.logf("%s: live connection cut (%d links)", d.name, n)
		return
	}
	n := s.net.Blackhole(d.name)
	s.stats.Blackholes++
	s.logf("%s: live connection silenced (%d links); 2m pass", d.name, n)
	time.Sleep(2 * time.Minute)
}
