package server_test

// Micro-benchmarks of the server's three hot paths over real loopback
// sockets (BENCHMARKS.md, load): concurrent pushes of notes, a cold pull,
// and the fan-out of one note to many live sessions. The clients run in
// the same process, so ns/op includes their encoding and decoding.
//
//	go test -run '^$' -bench . -benchmem ./server

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// benchText is a note of about 600 bytes, like the load generator's.
var benchText = strings.Repeat("Visited; mould behind the wardrobe, tenant asks for a call back. ", 9)

// benchNotes returns n new notes of d about caseID, written by author.
func benchNotes(d *device, caseID, author string, n int) []syncproto.Change {
	out := make([]syncproto.Change, n)
	for i := range out {
		d.seq++
		out[i] = syncproto.Edit(nil, syncproto.Entries, fmt.Sprintf("n-%s-%d", d.id, d.seq), d.seq, d.clock.Now(), map[string]json.RawMessage{
			"case_id": raw(`"` + caseID + `"`), "kind": raw(`"visit"`), "author": raw(`"` + author + `"`),
			"occurred_at": raw(`"2026-11-28"`), "text": raw(`"` + benchText + `"`),
		})
	}
	return out
}

// cpuTime returns the CPU time the process has used, user and system:
// with other work on the machine, CPU per op is steadier than wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// roundTrip sends a push and reads until its ack, without testing.TB (it
// runs on goroutines of its own).
func roundTrip(c *servertest.Conn, p *syncproto.Push) (*syncproto.Ack, error) {
	f, err := c.Codec.Encode(p, c.Compress)
	if err != nil {
		return nil, err
	}
	if err := c.WS.WriteMessage(websocket.BinaryMessage, f); err != nil {
		return nil, err
	}
	for {
		m, err := c.Next(30 * time.Second)
		if err != nil {
			return nil, err
		}
		if a, ok := m.(*syncproto.Ack); ok {
			return a, nil
		}
	}
}

// BenchmarkPush: 16 devices, one area each, push batches of 50 notes at
// once; one op is one accepted change.
func BenchmarkPush(b *testing.B) {
	const devices, batch = 16, 50
	s := servertest.NewServer(b, nil)
	conns := make([]*servertest.Conn, devices)
	devs := make([]*device, devices)
	for i := range devices {
		user, area := fmt.Sprintf("w%d", i), fmt.Sprintf("A%d", i)
		s.AddUser(user, "caseworker", area)
		id, tok := s.Enroll(user)
		devs[i] = &device{id: id, token: tok, clock: syncproto.NewClock(nil, 0)}
		conns[i], _ = servertest.Handshake(b, s.WS, id, tok, &syncproto.Hello{})
		servertest.Until[*syncproto.CaughtUp](conns[i])
		ack := push(b, conns[i], devs[i].newCase("c"+area, area))
		if len(ack.Accepted) != 1 {
			b.Fatalf("case not accepted: %+v", ack)
		}
	}
	pushes := make([][]*syncproto.Push, devices)
	rounds := (b.N + devices*batch - 1) / (devices * batch)
	for i := range devices {
		for range rounds {
			pushes[i] = append(pushes[i], &syncproto.Push{Changes: benchNotes(devs[i], "cA"+fmt.Sprint(i), fmt.Sprintf("w%d", i), batch)})
		}
	}
	b.ResetTimer()
	cpu0 := cpuTime(b)
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for i := range devices {
		wg.Go(func() {
			for _, p := range pushes[i] {
				ack, err := roundTrip(conns[i], p)
				if err == nil && len(ack.Accepted) != len(p.Changes) {
					err = fmt.Errorf("accepted %d of %d: %+v", len(ack.Accepted), len(p.Changes), ack.Rejected)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	n := float64(rounds * devices * batch)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/change")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/change")
}

// BenchmarkColdPull: one device pulls 2,000 notes of its area from the
// beginning; one op is one pull.
func BenchmarkColdPull(b *testing.B) {
	s := servertest.NewServer(b, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	d := newDevice(b, s, "anouk")
	c, _ := d.connect(b, s, nil)
	servertest.Until[*syncproto.CaughtUp](c)
	push(b, c, d.newCase("c1", "Zuilen"))
	for range 4 {
		if ack := push(b, c, benchNotes(d, "c1", "anouk", 500)...); len(ack.Accepted) != 500 {
			b.Fatalf("accepted %d of 500", len(ack.Accepted))
		}
	}
	c.Close()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	defer func() { b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op") }()
	for range b.N {
		c, _ := d.connect(b, s, nil)
		n := 0
		_, before := servertest.Until[*syncproto.CaughtUp](c)
		for _, m := range before {
			if ch, ok := m.(*syncproto.Changes); ok {
				n += len(ch.Records)
			}
		}
		if n != 2001 {
			b.Fatalf("pulled %d records, want 2001", n)
		}
		c.Close()
	}
}

// BenchmarkFanout: one note reaches 200 live sessions of its area; one op
// is one note delivered to all of them.
func BenchmarkFanout(b *testing.B) {
	const receivers = 200
	s := servertest.NewServer(b, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	w := newDevice(b, s, "anouk")
	wc, _ := w.connect(b, s, nil)
	servertest.Until[*syncproto.CaughtUp](wc)
	push(b, wc, w.newCase("c1", "Zuilen"))
	rcs := make([]*servertest.Conn, receivers)
	for i := range rcs {
		d := newDevice(b, s, "bram")
		rcs[i], _ = d.connect(b, s, &syncproto.Hello{Live: true})
		servertest.Until[*syncproto.CaughtUp](rcs[i])
	}
	b.ResetTimer()
	cpu0 := cpuTime(b)
	defer func() { b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op") }()
	for range b.N {
		notes := benchNotes(w, "c1", "anouk", 1)
		var wg sync.WaitGroup
		errs := make(chan error, receivers)
		for _, c := range rcs {
			wg.Go(func() {
				for {
					m, err := c.Next(30 * time.Second)
					if err != nil {
						errs <- err
						return
					}
					if ch, ok := m.(*syncproto.Changes); ok && len(ch.Records) > 0 && ch.Records[0].ID == notes[0].ID {
						return
					}
				}
			})
		}
		push(b, wc, notes...)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
}
