//go:build unix

package main_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// writer is a device that pushes small batches of new records and keeps
// what a client's outbox would: every change it made, which were
// acknowledged, and which are still to be (re)sent.
type writer struct {
	user, id, token string
	clock           *syncproto.Clock
	seq             uint64
	caseID          string
	made            []syncproto.Change // made[i].Seq == i+1
	acked           map[uint64]bool
	pending         []syncproto.Change // unacknowledged, in seq order
	problems        []string           // found by the pushing goroutine
}

// next makes a new change: now and then a new case, else a note on the
// latest case. Every change creates a record of its own.
func (w *writer) next() syncproto.Change {
	w.seq++
	var ch syncproto.Change
	if w.caseID == "" || w.seq%25 == 0 {
		w.caseID = fmt.Sprintf("c-%s-%d", w.user, w.seq)
		ch = newCase(w.seq, w.clock, w.caseID, "Zuilen", "tenant of "+w.caseID)
	} else {
		ch = newEntry(w.seq, w.clock, fmt.Sprintf("e-%s-%d", w.user, w.seq), w.caseID, w.user, fmt.Sprintf("visit note %d of %s", w.seq, w.user))
	}
	w.made = append(w.made, ch)
	w.pending = append(w.pending, ch)
	return ch
}

// checked returns the field whose value identifies a change's record.
func checked(ch syncproto.Change) string {
	if ch.Collection == syncproto.Cases {
		return "title"
	}
	return "text"
}

// record applies an ack of batch.
func (w *writer) record(ack *syncproto.Ack, batch []syncproto.Change) {
	want := make([]uint64, len(batch))
	for i, ch := range batch {
		want[i] = ch.Seq
	}
	if !slices.Equal(ack.Accepted, want) || len(ack.Rejected) > 0 {
		w.problems = append(w.problems, fmt.Sprintf("push %v: accepted %v, rejected %+v", want, ack.Accepted, ack.Rejected))
	}
	for _, s := range ack.Accepted {
		w.acked[s] = true
	}
	w.pending = slices.DeleteFunc(w.pending, func(ch syncproto.Change) bool { return w.acked[ch.Seq] })
}

// pushLoop pushes up to max batches of 1 to 3 new changes, each after the
// previous one's ack, until the connection fails. It runs on its own
// goroutine, so it reports errors by return, never through t.
func (w *writer) pushLoop(c *servertest.Conn, max int, acks *atomic.Int64, progress chan<- struct{}) {
	for i := range max {
		batch := make([]syncproto.Change, 0, 3)
		for range 1 + i%3 {
			batch = append(batch, w.next())
		}
		f, err := c.Codec.Encode(&syncproto.Push{Changes: batch}, c.Compress)
		if err != nil {
			w.problems = append(w.problems, "encode: "+err.Error())
			return
		}
		_ = c.WS.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if c.WS.WriteMessage(websocket.BinaryMessage, f) != nil {
			return // the server is gone; the batch stays pending
		}
		ack, err := awaitAck(c)
		if err != nil {
			return
		}
		w.record(ack, batch)
		acks.Add(1)
		select {
		case progress <- struct{}{}:
		default:
		}
	}
}

// awaitAck reads until an ack, skipping the backlog.
func awaitAck(c *servertest.Conn) (*syncproto.Ack, error) {
	for {
		m, err := c.Next(10 * time.Second)
		if err != nil {
			return nil, err
		}
		switch m := m.(type) {
		case *syncproto.Ack:
			return m, nil
		case *syncproto.Error:
			return nil, m
		}
	}
}

// resend pushes the writer's unacknowledged changes again, twice: both
// times every one is accepted, and the second time the log does not grow.
func (w *writer) resend(t *testing.T, c *servertest.Conn) int {
	t.Helper()
	if len(w.pending) == 0 {
		return 0
	}
	batch := slices.Clone(w.pending)
	want := make([]uint64, len(batch))
	for i, ch := range batch {
		want[i] = ch.Seq
	}
	first := push(t, c, batch...)
	if !slices.Equal(first.Accepted, want) || len(first.Rejected) > 0 {
		t.Errorf("%s: resend of %v after restart: accepted %v, rejected %+v", w.user, want, first.Accepted, first.Rejected)
	}
	again := push(t, c, batch...)
	if !slices.Equal(again.Accepted, want) || len(again.Rejected) > 0 {
		t.Errorf("%s: second resend of %v: accepted %v, rejected %+v", w.user, want, again.Accepted, again.Rejected)
	}
	if again.Seq != first.Seq {
		t.Errorf("%s: resending %v again moved the log head from %d to %d: applied twice", w.user, want, first.Seq, again.Seq)
	}
	w.record(first, batch)
	return len(batch)
}

// verify pulls everything with the lead device and checks every
// acknowledged change (every change made, if all) against it: its record
// exists once, with the acknowledged value written by that change alone.
// It returns how many unacknowledged changes were stored all the same.
func verify(t *testing.T, d *daemon, writers []*writer, leadID, leadToken string, all bool) (unackedStored int) {
	t.Helper()
	recs, seen, head := pullAll(t, d.WS, leadID, leadToken)
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s sent %d times in one pull", k, n)
		}
	}
	// Every committed change made one new record and one log entry.
	if uint64(len(recs)) != head {
		t.Errorf("pull holds %d records, log head is %d: a change was applied twice or lost", len(recs), head)
	}
	made, lost, wrong := 0, 0, 0
	for _, w := range writers {
		for _, ch := range w.made {
			made++
			if !all && !w.acked[ch.Seq] {
				if _, ok := recs[ch.Key()]; ok {
					unackedStored++
				}
				continue
			}
			r, ok := recs[ch.Key()]
			if !ok {
				if lost++; lost <= 5 {
					t.Errorf("%s's acknowledged change %d (%s) is lost", w.user, ch.Seq, ch.Key())
				}
				continue
			}
			name := checked(ch)
			vs := r.Fields[name].Values
			if len(vs) != 1 || vs[0].Device != w.id || vs[0].Seq != ch.Seq || string(vs[0].Data) != string(ch.Fields[name].Data) || r.Area != "Zuilen" {
				if wrong++; wrong <= 5 {
					t.Errorf("%s: %s.%s = %+v in area %q, want %s from change %d of %s", ch.Key(), ch.Key(), name, vs, r.Area, ch.Fields[name].Data, ch.Seq, w.id)
				}
			}
		}
	}
	if lost+wrong > 0 {
		t.Errorf("%d acknowledged changes lost, %d wrong", lost, wrong)
	}
	if head > uint64(made) {
		t.Errorf("log head %d exceeds the %d changes ever made", head, made)
	}
	if all && (head != uint64(made) || len(recs) != made) {
		t.Errorf("after resending everything: log head %d, %d records, want %d each", head, len(recs), made)
	}
	return unackedStored
}

// TestKill9Durability pushes from three devices at once, SIGKILLs the
// server at a random point, restarts it and checks that every acknowledged
// change survived exactly once; three times, the devices resending what
// was not acknowledged after each restart.
func TestKill9Durability(t *testing.T) {
	data := t.TempDir()
	d := start(t, data)
	for _, u := range []string{"w0", "w1", "w2"} {
		d.mustAdmin(t, "user", "add", u, "--role", "caseworker", "--areas", "Zuilen")
	}
	d.mustAdmin(t, "user", "add", "lead", "--role", "lead")
	var writers []*writer
	for _, u := range []string{"w0", "w1", "w2"} {
		id, tok := d.enroll(t, u, u+" laptop")
		writers = append(writers, &writer{user: u, id: id, token: tok, clock: syncproto.NewClock(nil, 0), acked: map[uint64]bool{}})
	}
	leadID, leadToken := d.enroll(t, "lead", "lead laptop")

	const kills = 3
	for round := 0; ; round++ {
		if round > 0 {
			d = startAt(t, d.Addr, data)
			n := verify(t, d, writers, leadID, leadToken, false)
			t.Logf("restart %d: %d unacknowledged changes had been stored before the kill", round, n)
		}
		conns := make([]*servertest.Conn, len(writers))
		resent := 0
		for i, w := range writers {
			c, _ := servertest.Handshake(t, d.WS, w.id, w.token, nil)
			servertest.Until[*syncproto.CaughtUp](c)
			conns[i] = c
			resent += w.resend(t, c)
		}
		if round == kills {
			t.Logf("after the last restart: resent %d unacknowledged changes", resent)
			break
		}

		// Kill at a random point of the first few hundred milliseconds of
		// pushing, after a random number of acks rather than a sleep.
		target := 10 + rand.IntN(120)
		var acks atomic.Int64
		progress := make(chan struct{}, 1)
		var wg sync.WaitGroup
		for i, w := range writers {
			wg.Go(func() { w.pushLoop(conns[i], 400, &acks, progress) })
		}
		began := time.Now()
		allDone := make(chan struct{})
		go func() { wg.Wait(); close(allDone) }()
		deadline := time.After(60 * time.Second)
	wait:
		for acks.Load() < int64(target) {
			select {
			case <-progress:
			case <-allDone:
				break wait
			case <-deadline:
				d.kill9(t)
				<-allDone
				t.Fatalf("round %d: only %d of %d acks in 60 s", round, acks.Load(), target)
			}
		}
		d.kill9(t)
		pushed := time.Since(began)
		<-allDone
		for _, c := range conns {
			c.Close()
		}
		pending := 0
		for _, w := range writers {
			for _, p := range w.problems {
				t.Errorf("round %d, %s: %s", round, w.user, p)
			}
			w.problems = nil
			pending += len(w.pending)
		}
		if acks.Load() < int64(target) {
			t.Fatalf("round %d: pushing stopped after %d acks, before the %d wanted", round, acks.Load(), target)
		}
		t.Logf("round %d: resent %d, SIGKILL after %d acks (target %d) in %s, %d changes unacknowledged", round, resent, acks.Load(), target, pushed.Round(time.Millisecond), pending)
	}
	verify(t, d, writers, leadID, leadToken, true)
	d.stop(t)
}
